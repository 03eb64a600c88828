"""Channel dependency groups, from Torch-Pruning's dependency graph.

Removing output channel c of a conv also removes entry c of the BatchNorm
after it, input channel c of every consumer, and -- through residual
additions or depthwise convs -- channel c of other layers. Those other
prunable layers form one *channel group*: they share one channel choice.
Nothing here is written per architecture; the coupling comes from tracing.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import ModelProfile

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


def build_dependency_graph(module: nn.Module, example: torch.Tensor):
    import torch_pruning as tp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tp.DependencyGraph().build_dependency(module, example_inputs=example, verbose=False)


def channel_groups(module: nn.Module, profile: ModelProfile, example: torch.Tensor) -> ChannelGroups:
    """Group the prunable layers by coupled output channels."""
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
            group = dg.get_pruning_group(m, pruner.prune_out_channels, idxs=list(range(C)))
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
                idx = tuple(int(i) for i in idxs)
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
