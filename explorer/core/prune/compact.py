"""Physical removal of pruned channels (a smaller dense network), with Torch-Pruning.

For every channel group that the plan prunes with ``channel`` granularity,
the pruned channel indices are handed to Torch-Pruning's dependency graph,
which removes the filters, their BatchNorm entries and biases, and the
matching input channels of every consumer -- residual and depthwise
couplings included. Because masking already zeroed the whole group, the
compacted model computes the same outputs as the masked one.

Groups whose channels cannot be removed exactly (``ChannelGroup.no_compact``: a LayerNorm over them,
attention heads) stay in the compacted model as zeroed channels, and :func:`compaction_plan` says why;
grouped convolutions lose the same number of channels in every group (``LayerMask.removable_rows``).
"""
from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ExplorerError
from ..jobs import CancelToken, Progress, ProgressFn
from ..model.layers import load_state
from ..model.tp_pruners import UnbalancedGroups, build_dependency_graph
from .granularity import Channel

if TYPE_CHECKING:
    from .state_view import StateView


def channel_removals(source: StateView, plan) -> dict[str, list[int]]:
    """{group root layer: own indices of output channels to remove} for the plan's channel-pruned groups
    (``source``: a session or a flow's snapshot: its ``groups`` and ``layer_mask``)."""
    return compaction_plan(source, plan)[0]


def compaction_plan(source: StateView, plan) -> tuple[dict[str, list[int]], dict[str, str]]:
    """(removals as :func:`channel_removals`, {layer: why its pruned channels stay in the compact model, zeroed})."""
    groups = source.groups
    if has_structure(plan) and not groups.traced:
        raise ExplorerError("Compaction needs the model's channel dependency graph, which is not available here "
                            f"({groups.note}).", "The masked model is still valid; export the pruned checkpoint.")
    out: dict[str, list[int]] = {}
    kept: dict[str, str] = {}
    seen = set()
    for name, lp in plan.active().items():
        if not isinstance(lp.granularity, Channel):
            continue
        view = source.layer_mask(name, lp)
        key = view.group.members if view.group is not None else (name,)
        if key in seen:
            continue
        seen.add(key)
        if view.group is not None and view.group.no_compact and view.pruned_rows(lp.sparsity):
            kept[key[0]] = view.group.no_compact
            continue
        pruned = view.removable_rows(lp.sparsity, member=key[0])
        if pruned:
            out[key[0]] = pruned
    return out, kept


def has_structure(plan) -> bool:
    return any(lp.granularity.structured for lp in plan.active().values())


def compact_model(module: nn.Module, state: dict[str, torch.Tensor], removals: dict[str, list[int]],
                  example: torch.Tensor, progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None) -> nn.Module:
    """A copy of ``module`` with ``state`` loaded and the listed output channels physically removed."""
    if isinstance(module, torch.jit.ScriptModule):
        raise ExplorerError("Compaction needs a regular PyTorch module; TorchScript models cannot be restructured.",
                            "Open the model as a state_dict with --arch to compact it.")
    m = copy.deepcopy(module)
    load_state(m, state)
    m.eval()
    if not removals:
        return m
    try:
        dg = build_dependency_graph(m, example[:1])
    except Exception as e:
        raise ExplorerError(f"Could not trace the model to remove channels ({type(e).__name__}: {e}).") from None
    mods = dict(m.named_modules())
    for i, (root, idxs) in enumerate(removals.items()):
        if cancel is not None:
            cancel.check()
        if progress:
            progress(Progress(i / len(removals), f"removing {len(idxs)} channel(s) of {root}"))
        mod = mods[root]
        pruner = dg.get_pruner_of_module(mod)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            group = dg.get_pruning_group(mod, pruner.prune_out_channels, idxs=sorted(idxs))
            if not dg.check_pruning_group(group):
                raise ExplorerError(f"Removing those channels of {root} would leave a layer with none; "
                                    "lower its sparsity below 100%.")
            try:
                group.prune()
            except UnbalancedGroups as e:
                raise ExplorerError(f"The channels of {root} cannot be removed: {e} (grouped convolution).",
                                    "Prune these layers with the channel ranking of this app, which balances "
                                    "the groups.") from None
            except Exception as e:
                raise ExplorerError(f"Torch-Pruning could not remove the channels of {root} "
                                    f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}).",
                                    "The masked model is still valid; export it without --compact.") from None
    if progress:
        progress(Progress(1.0, "compacted"))
    return m.eval()


def compact_checked(module: nn.Module, state: dict[str, torch.Tensor], removals: dict[str, list[int]],
                    example: torch.Tensor, progress: ProgressFn | None = None,
                    cancel: CancelToken | None = None) -> tuple[nn.Module, dict[str, str]]:
    """:func:`compact_model`, checked: the compacted model must compute the masked model's outputs (relative
    error at most ``COMPACT_RTOL``). When it does not, each group is tried alone, and the groups whose removal
    changes the outputs (Torch-Pruning does not follow their coupling, e.g. through a channel shuffle) stay in
    the model, zeroed. Returns (compacted model, {group root: why it was kept})."""
    masked = copy.deepcopy(module)
    load_state(masked, state)
    masked.eval()
    if not removals:
        return compact_model(module, state, removals, example, progress, cancel), {}
    try:
        m = compact_model(module, state, removals, example, progress, cancel)
        if _difference(masked, m, example)[0] <= COMPACT_RTOL:
            return m, {}
    except ExplorerError:
        pass
    kept: dict[str, str] = {}
    for root, idxs in removals.items():
        if cancel is not None:
            cancel.check()
        try:
            one = compact_model(module, state, {root: idxs}, example)
        except ExplorerError as e:
            kept[root] = e.message
            continue
        rel, failure = _difference(masked, one, example)
        if failure:
            kept[root] = (f"the model no longer runs without them ({failure}): its layers need this width (e.g. "
                          "attention heads of a fixed size)")
        elif rel > COMPACT_RTOL:
            kept[root] = (f"removing them changes the outputs (relative error {rel:.1e}): Torch-Pruning does not "
                          "follow how these channels are coupled (a channel shuffle or a reshape)")
    rest = {k: v for k, v in removals.items() if k not in kept}
    m = compact_model(module, state, rest, example, progress, cancel)
    rel, failure = _difference(masked, m, example)
    if failure or rel > COMPACT_RTOL:
        raise ExplorerError(f"The compacted model's outputs differ from the masked model's (relative error "
                            f"{rel:.2g}), so it is not used.", "The masked model is still valid; export it "
                            "without --compact.")
    return m, kept


def _difference(masked: nn.Module, compacted: nn.Module, example: torch.Tensor) -> tuple[float, str | None]:
    """(relative output difference, None) -- or (inf, why) when the compacted model fails to run."""
    try:
        return relative_difference(masked, compacted, example), None
    except Exception as e:     # e.g. a reshape to a fixed head size: the width cannot change there
        return float("inf"), f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def _logits(out) -> torch.Tensor:
    if hasattr(out, "logits"):
        return out.logits
    return out[0] if isinstance(out, (tuple, list)) else out


def max_output_difference(a: nn.Module, b: nn.Module, example: torch.Tensor) -> float:
    with torch.inference_mode():
        oa, ob = _logits(a.eval()(example)), _logits(b.eval()(example))
    return float((oa - ob).abs().max())


COMPACT_RTOL = 1e-4   # a compacted model computes what the masked one does, up to float rounding


def relative_difference(a: nn.Module, b: nn.Module, example: torch.Tensor) -> float:
    """max |a(x) - b(x)| / max |a(x)|: how far a compacted model's outputs are from the masked model's."""
    with torch.inference_mode():
        oa, ob = _logits(a.eval()(example)), _logits(b.eval()(example))
    return float((oa - ob).abs().max() / oa.abs().max().clamp_min(1e-12))
