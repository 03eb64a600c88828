"""What makes a plan valid for a model: a layer's granularity fits it, channel plans cover whole channel
groups, a criterion gets the data it needs. Plain functions; the session calls them on every edit."""
from __future__ import annotations

from typing import Callable

from ..errors import PlanError
from ..model.groups import ChannelGroup
from ..model.layers import LayerInfo
from .granularity import Channel
from .plan import LayerPlan, Plan


def check_criterion_data(lp: LayerPlan, dataset) -> None:
    if lp.criterion.needs_gradients and not dataset.has_labels:
        raise PlanError(f"The {lp.criterion} criterion needs gradients, which need a dataset with labels.",
                        f"{dataset.spec} has no labels; use l1, l2, wanda or random.")


def check_layer_plan(name: str, lp: LayerPlan, layer: LayerInfo, group: ChannelGroup | Callable[[], ChannelGroup],
                     dataset) -> LayerPlan:
    """One layer's plan, validated: values, the granularity fits the layer, the criterion has its data.
    ``group``: the layer's ChannelGroup, or a function giving it (asked only for channel plans)."""
    lp = lp.validated(name)
    lp.granularity.check(layer)
    if isinstance(lp.granularity, Channel) and callable(group):
        group = group()
    if isinstance(lp.granularity, Channel) and group.blocked:
        raise PlanError(f"'channel' granularity does not fit layer {name}: {group.blocked}.",
                        "Its output channels must all stay; use element, n:m, vector or kernel for it.")
    check_criterion_data(lp, dataset)
    if lp.criterion == "sparsegpt":
        from .sparsegpt import check_granularity
        check_granularity(lp.granularity, name)
    if lp.is_manual:
        lp = manual_checked(name, lp, layer)
    return lp


def manual_checked(name: str, lp: LayerPlan, layer: LayerInfo) -> LayerPlan:
    """A manual plan whose units exist in the layer, with its sparsity the chosen share of the units."""
    from .manual import unit_count, unit_ids

    if lp.granularity.name == "channel" and layer.is_output:
        raise PlanError(f"Layer {name} is the network's output layer, whose outputs (classes) must all stay.")
    unit_ids(layer, lp.granularity, lp.units)
    n = unit_count(layer, lp.granularity)
    return LayerPlan(len(lp.units) / n if n else 0.0, lp.granularity, lp.criterion, lp.units)


def refuse_if_none_fit(names: list[str], skipped: dict[str, str], proto: LayerPlan) -> None:
    """A many-layer edit that fits no layer at all is an error, not a plan that silently prunes nothing."""
    if names and len(skipped) == len(names):
        raise PlanError(f"No layer can be pruned with '{proto.granularity}' granularity: "
                        + next(iter(skipped.values())), "Choose another granularity.")


def linked_plan(plan: Plan, linked_layers: Callable[[str], tuple[str, ...]]) -> Plan:
    """Channel plans cover whole channel groups: a linked layer without the same channel plan gets it
    (the group's most pruned member wins), so masks, counts and compaction agree."""
    out = dict(plan.layers)
    for n, lp in plan.layers.items():
        if lp.granularity != "channel" or lp.is_dense:
            continue
        if lp.is_manual:
            continue   # the session gives every member of the group its own rows (PlanEditor.set_manual)
        for m in linked_layers(n):
            cur = out.get(m)
            if cur is None or cur.granularity != "channel" or cur.sparsity < lp.sparsity:
                out[m] = lp
    return plan.replaced(out) if out != plan.layers else plan
