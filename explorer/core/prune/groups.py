"""Channel dependency groups, from Torch-Pruning's dependency graph.

Removing output channel c of a conv also removes entry c of the BatchNorm
after it, input channel c of every consumer, and -- through residual
additions or depthwise convs -- channel c of other layers. Those other
prunable layers form one *channel group*: they share one channel choice.
Nothing here is written per architecture; the coupling comes from tracing.
"""
from __future__ import annotations

import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..model.layers import ModelProfile

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)


@dataclass(frozen=True)
class ChannelGroup:
    """Prunable layers whose output channels go together, and what else goes with them."""

    id: int
    members: tuple[str, ...]                           # prunable layers (execution order)
    channels: int
    member_index: dict[str, tuple[int, ...]]           # shared channel c -> that member's output row
    aux: tuple[tuple[str, tuple[int, ...]], ...] = ()  # parameters zeroed along dim 0 with the channels
    consumers: tuple[str, ...] = ()                    # layers that lose input channels on compaction
    blocked: str | None = None                         # why channel pruning is refused for this group

    @property
    def linked(self) -> bool:
        return len(self.members) > 1


@dataclass
class ChannelGroups:
    by_layer: dict[str, ChannelGroup]
    traced: bool                       # False: no dependency graph (e.g. TorchScript); single-layer groups
    note: str = ""
    groups: list[ChannelGroup] = field(default_factory=list)

    def of(self, layer: str) -> ChannelGroup:
        return self.by_layer[layer]


def _single_groups(module: nn.Module, profile: ModelProfile, note: str) -> ChannelGroups:
    mods = dict(module.named_modules())
    by_layer, groups = {}, []
    for i, l in enumerate(profile.layers):
        rng = tuple(range(l.out_channels))
        aux = ((f"{l.name}.bias", rng),) if getattr(mods.get(l.name), "bias", None) is not None else ()
        g = ChannelGroup(id=i, members=(l.name,), channels=l.out_channels, member_index={l.name: rng}, aux=aux,
                         blocked="it is the network's output layer" if l.is_output else None)
        by_layer[l.name] = g
        groups.append(g)
    return ChannelGroups(by_layer=by_layer, traced=False, note=note, groups=groups)


GROUPS_BUDGET_S = 15.0   # coupling analysis longer than this falls back to per-layer channels


class AnalysisTimeout(BaseException):   # not an Exception: library code must not swallow it
    pass


@contextmanager
def deadline(seconds: float):
    """Abort pure-Python work (Torch-Pruning's index tracing) that runs past ``seconds``.

    Torch-Pruning can take practically forever on some graphs (MaxViT's window reshapes); a call
    tracer raises :class:`AnalysisTimeout` at the next Python call after the deadline.
    """
    end = time.monotonic() + seconds
    previous = sys.gettrace()

    clock = time.monotonic

    def tracer(frame, event, arg):   # also the local tracer: long loops inside one call are caught too
        if clock() > end:
            raise AnalysisTimeout()
        return tracer

    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(previous)


def build_dependency_graph(module: nn.Module, example: torch.Tensor):
    import torch_pruning as tp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(module, example_inputs=example, verbose=False)


def channel_groups(module: nn.Module, profile: ModelProfile, example: torch.Tensor,
                   budget_s: float = GROUPS_BUDGET_S) -> ChannelGroups:
    """Group the prunable layers by coupled output channels (per-layer groups if that takes too long)."""
    try:
        with deadline(budget_s):
            return _channel_groups(module, profile, example)
    except AnalysisTimeout:
        return _single_groups(module, profile, f"channel coupling analysis took longer than {budget_s:.0f} s; "
                                               "channels are pruned per layer and compaction is unavailable")


def _channel_groups(module: nn.Module, profile: ModelProfile, example: torch.Tensor) -> ChannelGroups:
    if isinstance(module, torch.jit.ScriptModule):
        return _single_groups(module, profile, "TorchScript model: no dependency graph, channels are pruned per layer "
                                               "(BatchNorm entries are not zeroed; compaction is unavailable)")
    try:
        dg = build_dependency_graph(module, example[:1])
    except Exception as e:  # tracing can fail on exotic models; pruning per layer still works
        return _single_groups(module, profile, f"dependency graph failed ({type(e).__name__}: {e}); "
                                               "channels are pruned per layer")
    name_of = {id(m): n for n, m in module.named_modules()}
    layer_names = set(profile.names)
    output_layers = {l.name for l in profile.layers if l.is_output}
    order = {l.name: l.order for l in profile.layers}
    mods = dict(module.named_modules())
    by_layer: dict[str, ChannelGroup] = {}
    groups: list[ChannelGroup] = []
    for layer in profile.layers:
        if layer.name in by_layer:
            continue
        m = mods[layer.name]
        C = layer.out_channels
        try:
            pruner = dg.get_pruner_of_module(m)
            # probe with the first and last channel: tracing every index is slow on deep reshapes
            # (MaxViT); coupled layers that keep the channel order return the same two indices
            probe = [0, C - 1] if C > 1 else [0]
            group = dg.get_pruning_group(m, pruner.prune_out_channels, idxs=probe)
        except Exception:
            group = None
        members: dict[str, tuple[int, ...]] = {}
        aux: dict[str, tuple[int, ...]] = {}
        consumers = []
        if group is None:
            members[layer.name] = tuple(range(C))
        else:
            for dep, idxs in group:
                tm = dep.target.module
                name = name_of.get(id(tm))
                if name is None:
                    continue
                fn = getattr(dep.handler, "__name__", "")
                got = [int(i) for i in idxs]
                # identity mapping (the usual case) expands to all channels; anything else is kept as
                # probed and marks the group as not cleanly coupled
                idx = tuple(range(C)) if got == probe else tuple(got)
                if name in layer_names and fn == "prune_out_channels":
                    members[name] = idx
                    if getattr(tm, "bias", None) is not None:
                        aux[f"{name}.bias"] = idx
                elif name in layer_names and fn == "prune_in_channels":
                    consumers.append(name)
                elif isinstance(tm, _NORM_TYPES) and fn == "prune_out_channels":
                    for p in ("weight", "bias"):
                        if getattr(tm, p, None) is not None:
                            aux[f"{name}.{p}"] = idx
        names = sorted(members, key=lambda n: order[n])
        blocked = None
        if output_layers & set(names):
            blocked = "it is (or is coupled to) the network's output layer"
        elif any(len(members[n]) != C for n in names):
            blocked = "its coupled layers do not share the same channels"
        g = ChannelGroup(id=len(groups), members=tuple(names), channels=C,
                         member_index={n: members[n] for n in names}, aux=tuple(sorted(aux.items())),
                         consumers=tuple(sorted(set(consumers) - set(names), key=lambda n: order.get(n, 0))),
                         blocked=blocked)
        groups.append(g)
        for n in names:
            by_layer.setdefault(n, g)
        by_layer.setdefault(layer.name, g)
    return ChannelGroups(by_layer=by_layer, traced=True, groups=groups)
