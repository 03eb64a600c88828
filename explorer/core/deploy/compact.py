"""Physical removal of pruned channels (a smaller dense network), with Torch-Pruning.

For every channel group that the plan prunes with ``channel`` granularity,
the pruned channel indices are handed to Torch-Pruning's dependency graph,
which removes the filters, their BatchNorm entries and biases, and the
matching input channels of every consumer -- residual and depthwise
couplings included. Because masking already zeroed the whole group, the
compacted model computes the same outputs as the masked one.
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..errors import ExplorerError
from ..jobs import CancelToken, Progress, ProgressFn
from ..prune.granularity import Channel
from ..prune.groups import build_dependency_graph


def channel_removals(session, plan) -> dict[str, list[int]]:
    """{group root layer: own indices of output channels to remove} for the plan's channel-pruned groups."""
    groups = session.require().groups
    if has_structure(plan) and not groups.traced:
        raise ExplorerError("Compaction needs the model's channel dependency graph, which is not available here "
                            f"({groups.note}).", "The masked model is still valid; export the pruned checkpoint.")
    out: dict[str, list[int]] = {}
    seen = set()
    for name, lp in plan.active().items():
        if not isinstance(lp.granularity, Channel):
            continue
        view = session.layer_mask(name, lp)
        key = view.group.members if view.group is not None else (name,)
        if key in seen:
            continue
        seen.add(key)
        pruned = view.pruned_rows(lp.sparsity, member=key[0])
        if pruned:
            out[key[0]] = pruned
    return out


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
    m.load_state_dict(state)
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
            group.prune()
    if progress:
        progress(Progress(1.0, "compacted"))
    return m.eval()


def max_output_difference(a: nn.Module, b: nn.Module, example: torch.Tensor) -> float:
    with torch.inference_mode():
        oa, ob = a.eval()(example), b.eval()(example)
    return float((oa - ob).abs().max())
