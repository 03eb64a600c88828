"""Channel dependency groups, from Torch-Pruning's dependency graph.

Removing output channel c of a conv also removes entry c of the BatchNorm
after it, input channel c of every consumer, and -- through residual
additions, concatenations or depthwise convs -- channel c of other layers. Those other
prunable layers form one *channel group*: they share one channel choice.
Nothing here is written per architecture; the coupling comes from tracing.

Each coupled tensor's own index of every shared channel is read from Torch-Pruning's root indices:
a few probe channels first (cheap on deep reshapes), and all channels when the probes do not show a
plain shift (a concatenation offset) -- a channel shuffle, a split. Channels that do not map one to one
(a reshape that spreads a channel) block channel pruning for the group, with the reason.

Some groups can be masked but not removed exactly; ``ChannelGroup.no_compact`` says why (a LayerNorm
or GroupNorm normalises over the channels, so removing them changes its statistics; nn.MultiheadAttention
would re-split its heads; a free parameter adds to the channels). Grouped convolutions need every conv
group to lose the same number of channels: ``ChannelGroup.blocks`` gives each shared channel's block, and
the channel ranking of such a group is balanced across blocks.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import ModelProfile
from .tp_pruners import build_dependency_graph

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)
_STATS_NORMS = (nn.LayerNorm, nn.GroupNorm)   # normalise across channels: removing one changes the others

__all__ = ["ChannelGroup", "ChannelGroups", "channel_groups", "build_dependency_graph", "GROUPS_BUDGET_S"]


@dataclass(frozen=True)
class ChannelGroup:
    """Prunable layers whose output channels go together, and what else goes with them."""

    id: int
    members: tuple[str, ...]                           # prunable layers (execution order)
    channels: int
    member_index: dict[str, tuple[int, ...]]           # shared channel c -> that member's output row
    aux: tuple[tuple[str, tuple[int, ...]], ...] = ()  # parameters zeroed along dim 0 with the channels (a
    #                                                    name may repeat: a channel copied to several places)
    consumers: tuple[str, ...] = ()                    # layers that lose input channels on compaction
    blocked: str | None = None                         # why channel pruning is refused for this group
    blocks: tuple[int, ...] | None = None              # block of each shared channel: blocks lose equally
    no_compact: str | None = None                      # why compaction keeps these channels (zeroed)

    @property
    def linked(self) -> bool:
        return len(self.members) > 1

    @property
    def num_blocks(self) -> int:
        return len(set(self.blocks)) if self.blocks else 1


@dataclass
class ChannelGroups:
    by_layer: dict[str, ChannelGroup]
    traced: bool                       # False: no dependency graph (e.g. TorchScript); single-layer groups
    note: str = ""
    groups: list[ChannelGroup] = field(default_factory=list)

    def of(self, layer: str) -> ChannelGroup:
        return self.by_layer[layer]


ATTENTION_NOTE = ("it is a projection inside nn.MultiheadAttention, whose q/k/v and output widths must stay equal "
                  "to its embed_dim (channels and heads can be zeroed, not removed)")


def _own_group(i: int, l, blocked: str | None = None, no_compact: str | None = None):
    rng = tuple(range(l.out_channels))
    aux = ((l.bias_key, rng),) if l.bias_key else ()
    return ChannelGroup(id=i, members=(l.name,), channels=l.out_channels, member_index={l.name: rng}, aux=aux,
                        blocked=blocked or ("it is the network's output layer" if l.is_output else None),
                        no_compact=no_compact)


def _single_groups(module: nn.Module, profile: ModelProfile, note: str) -> ChannelGroups:
    groups = [_own_group(i, l) for i, l in enumerate(profile.layers)]
    return ChannelGroups(by_layer={g.members[0]: g for g in groups}, traced=False, note=note, groups=groups)


# coupling analysis longer than this falls back to per-layer channels (a slow or busy machine may allow more)
GROUPS_BUDGET_S = float(os.environ.get("PRUNING_EXPLORER_GROUPS_BUDGET_S", "15"))


class AnalysisTimeout(BaseException):   # not an Exception: library code must not swallow it
    pass


_ENDS: list[float] = []   # the active deadlines (nested: a layer's inside the whole analysis's)


@contextmanager
def deadline(seconds: float):
    """Abort pure-Python work (Torch-Pruning's index tracing) that runs past ``seconds``.

    Torch-Pruning can take practically forever on some graphs (MaxViT's window reshapes, Swin's patch
    merging); a profile hook raises :class:`AnalysisTimeout` at the next call after the earliest active
    deadline (a profile hook sees calls only, not every line: much cheaper than a trace function).
    """
    _ENDS.append(time.monotonic() + seconds)
    end = min(_ENDS)
    previous = sys.getprofile()

    clock = time.monotonic

    def watcher(frame, event, arg):   # every call and return, C calls included: loops calling anything stop too
        if clock() > end:
            raise AnalysisTimeout()

    sys.setprofile(watcher)
    try:
        yield
    finally:
        _ENDS.pop()
        try:
            sys.setprofile(previous)
        except TypeError:        # a C-level profiler (cProfile) cannot be put back from Python
            sys.setprofile(None)


def expired() -> bool:
    """Has an enclosing deadline passed (so a timeout belongs to it, not to an inner one)?"""
    return bool(_ENDS) and time.monotonic() > min(_ENDS)


LAYER_BUDGET_S = 2.0     # one layer's coupling longer than this: its channels are pruned alone, never removed


def channel_groups(module: nn.Module, profile: ModelProfile, example: torch.Tensor,
                   budget_s: float = GROUPS_BUDGET_S) -> ChannelGroups:
    """Group the prunable layers by coupled output channels (per-layer groups if that takes too long)."""
    try:
        with deadline(budget_s):
            return _channel_groups(module, profile, example)
    except AnalysisTimeout:
        return _single_groups(module, profile, f"channel coupling analysis took longer than {budget_s:.0f} s; "
                                               "channels are pruned per layer and compaction is unavailable")


@contextmanager
def _static_index_mapping():
    """Torch-Pruning recomputes every concat/split/reshape index mapping of the whole graph on each
    ``get_pruning_group`` (seconds per call on transformers). Nothing is pruned while groups are read, so the
    mappings ``build_dependency`` computed stay valid: skip the recomputation meanwhile."""
    from torch_pruning.dependency import graph as tp_graph

    im = tp_graph.index_mapping
    original = im.update_index_mapping
    im.update_index_mapping = lambda graph: None
    try:
        yield
    finally:
        im.update_index_mapping = original


def _probe_set(C: int) -> list[int]:
    return sorted({0, 1, 2, C // 3, C // 2, (2 * C) // 3, C - 2, C - 1} & set(range(C)))


def _mapping(item, roots: list[int]) -> dict[int, list[int]] | None:
    """{root channel: this tensor's indices} of one group item (None: Torch-Pruning lost the root indices)."""
    ri = getattr(item, "root_idxs", None)
    if ri is None or len(ri) != len(item.idxs) or any(r is None for r in ri):
        return None
    out: dict[int, list[int]] = {}
    for r, i in zip(ri, item.idxs):
        out.setdefault(int(r), []).append(int(i))
    return out


def _offsets(mp: dict[int, list[int]] | None, roots: list[int]) -> tuple[int, ...] | None:
    """The offsets when every probed root maps to root + each offset (one offset: the identity or a
    concatenation; several: the channel copied into several places, e.g. Swin's patch merging)."""
    if mp is None or set(mp) != set(roots):
        return None
    offs = {tuple(sorted(i - r for i in mp[r])) for r in roots}
    return offs.pop() if len(offs) == 1 else None


class _Analysis:
    """One group's Torch-Pruning dependency items, read into members, aux tensors, consumers and reasons."""

    def __init__(self, dg, names, profile: ModelProfile, mods: dict[str, nn.Module]):
        self.dg, self.names, self.profile, self.mods = dg, names, profile, mods
        self.layer_of = {}            # module id -> prunable layer name (Conv/Linear/Conv1D modules only)
        for l in profile.layers:
            if not l.param:
                self.layer_of[id(mods[l.name])] = l.name

    def read(self, root: str, C: int):
        """(items, maps, roots) of the root's group: probe channels first, all channels when a tensor that
        matters does not show a plain shift -- unless the group cannot be compacted anyway (then the probes
        say enough for masks, and tracing every channel through reshapes can take minutes)."""
        m = self.mods[root]
        pruner = self.dg.get_pruner_of_module(m)
        roots = _probe_set(C)
        group = self.dg.get_pruning_group(m, pruner.prune_out_channels, idxs=roots)
        items = list(group.items)
        maps = [_mapping(it, roots) for it in items]
        irregular = any(self._needs_map(it) and _offsets(mp, roots) is None for it, mp in zip(items, maps))
        if irregular and len(roots) < C and not any(self.stops_compaction(it) for it in items):
            roots = list(range(C))
            group = self.dg.get_pruning_group(m, pruner.prune_out_channels, idxs=roots)
            items = list(group.items)
            maps = [_mapping(it, roots) for it in items]
        return items, maps, roots

    def stops_compaction(self, item) -> str | None:
        """Why this coupled tensor keeps the group from being removed exactly (None: it does not)."""
        tm = item.dep.target.module
        name = self.target_name(tm)
        if isinstance(tm, _STATS_NORMS) and getattr(item.dep.handler, "__name__", "") == "prune_out_channels":
            return f"{type(tm).__name__} {name} normalises over these channels, so removing them would change its " \
                   "statistics"
        if isinstance(tm, nn.MultiheadAttention):
            return f"they pass through nn.MultiheadAttention {name}, which would re-split its heads"
        if isinstance(tm, nn.Parameter):
            return f"the parameter {name} acts on these channels"
        return None

    def _needs_map(self, item) -> bool:
        fn = getattr(item.dep.handler, "__name__", "")
        tm = item.dep.target.module
        if fn == "prune_out_channels":
            return id(tm) in self.layer_of or isinstance(tm, _NORM_TYPES)
        return isinstance(tm, nn.Conv2d) and tm.groups > 1   # grouped-conv consumers need their blocks

    def target_name(self, tm) -> str:
        if isinstance(tm, nn.Parameter):
            return self.dg._param_to_name.get(tm, "a parameter")
        return self.names.get(id(tm), type(tm).__name__)


def _copies(mp: dict[int, list[int]] | None, roots: list[int], C: int) -> list[tuple[int, ...]] | None:
    """This tensor's index of every shared channel 0..C-1, once per place the channel goes (usually one),
    or None when the channels do not map one to k."""
    offs = _offsets(mp, roots)
    if offs is not None and len(roots) < C:
        return [tuple(range(o, o + C)) for o in offs]
    if mp is None or set(mp) != set(range(C)) or len({len(v) for v in mp.values()}) != 1:
        return None
    k = len(mp[0])
    out = [tuple(sorted(mp[c])[j] for c in range(C)) for j in range(k)]
    return out if len({i for idx in out for i in idx}) == C * k else None


def _full(mp, roots, C) -> tuple[int, ...] | None:
    copies = _copies(mp, roots, C)
    return copies[0] if copies is not None and len(copies) == 1 else None


def _blocks_of(parts: list[tuple[int, ...]]) -> tuple[tuple[int, ...] | None, str | None]:
    """Combine per-conv block ids of every shared channel into one partition; all blocks must be equal-sized."""
    if not parts:
        return None, None
    keys = list(zip(*parts))
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    blocks = tuple(ids[k] for k in keys)
    sizes = {blocks.count(b) for b in set(blocks)}
    if len(sizes) > 1:
        return None, "grouped convolutions split these channels into groups of different sizes"
    return (blocks if len(ids) > 1 else None), None


def _channel_groups(module: nn.Module, profile: ModelProfile, example: torch.Tensor) -> ChannelGroups:
    if isinstance(module, torch.jit.ScriptModule):
        return _single_groups(module, profile, "TorchScript model: no dependency graph, channels are pruned per layer "
                                               "(BatchNorm entries are not zeroed; compaction is unavailable)")
    try:
        dg = build_dependency_graph(module, example[:1])
    except Exception as e:  # tracing can fail on exotic models; pruning per layer still works
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return _single_groups(module, profile, f"dependency graph failed ({type(e).__name__}: {msg}); "
                                               "channels are pruned per layer and compaction is unavailable")
    names = {id(m): n for n, m in module.named_modules()}
    mods = dict(module.named_modules())
    with _static_index_mapping():
        return _read_groups(module, profile, _Analysis(dg, names, profile, mods), mods)


def _read_groups(module, profile: ModelProfile, an: "_Analysis", mods) -> ChannelGroups:
    output_layers = {l.name for l in profile.layers if l.is_output}
    order = {l.name: l.order for l in profile.layers}
    by_layer: dict[str, ChannelGroup] = {}
    groups: list[ChannelGroup] = []
    slow: dict[tuple, str] = {}     # layers like one whose analysis timed out are not analysed again
    for layer in profile.layers:
        if layer.name in by_layer:
            continue
        parent = mods.get(layer.name.rpartition(".")[0]) if "." in layer.name else module
        if layer.param or isinstance(parent, nn.MultiheadAttention):   # q/k/v (not a module's own weight), out_proj
            g = _own_group(len(groups), layer, no_compact=ATTENTION_NOTE)
            groups.append(g)
            by_layer[layer.name] = g
            continue
        like = (type(parent).__name__, layer.kind, layer.name.rpartition(".")[2])   # the same place in a block
        try:
            if like in slow:
                raise AnalysisTimeout()
            with deadline(LAYER_BUDGET_S):
                g = _read_group(an, layer, len(groups), output_layers, order)
        except AnalysisTimeout:
            if expired():
                raise
            slow.setdefault(like, layer.name)
            g = _own_group(len(groups), layer, no_compact=f"Torch-Pruning's analysis of its channels (or of "
                                                          f"{slow[like]}'s, a layer like it) took longer than "
                                                          f"{LAYER_BUDGET_S:.0f} s")
        groups.append(g)
        for n in g.members:
            by_layer.setdefault(n, g)
        by_layer.setdefault(layer.name, g)
    return ChannelGroups(by_layer=by_layer, traced=True, groups=groups)


def _read_group(an: _Analysis, layer, gid: int, output_layers: set[str], order: dict[str, int]) -> ChannelGroup:
    C = layer.out_channels
    try:
        items, maps, roots = an.read(layer.name, C)
    except AnalysisTimeout:
        raise
    except Exception as e:
        if an.mods[layer.name] not in an.dg.module2node:
            why = ("the traced graph does not call it as a module (its weight is used directly), so Torch-Pruning "
                   "cannot follow its channels")
        else:
            why = f"Torch-Pruning could not follow its channels ({type(e).__name__})"
        return _own_group(gid, layer, no_compact=why)
    members: dict[str, tuple[int, ...]] = {}
    aux: list[tuple[str, tuple[int, ...]]] = []    # a tensor may hold a channel in several places
    consumers, block_parts = [], []
    no_compact = None
    for it, mp in zip(items, maps):
        tm = it.dep.target.module
        fn = getattr(it.dep.handler, "__name__", "")
        name = an.target_name(tm)
        lname = an.layer_of.get(id(tm))
        no_compact = no_compact or an.stops_compaction(it)
        if fn == "prune_out_channels" and (lname or isinstance(tm, _NORM_TYPES)):
            copies = _copies(mp, roots, C)
            if copies is None or (lname and len(copies) != 1):
                # Torch-Pruning's map is not one to one here (a reshape, a slice, a channel shuffle): the tensor
                # is left out of the group (a layer gets a group of its own), and nothing can be removed
                if lname != layer.name:
                    no_compact = no_compact or (f"Torch-Pruning does not map these channels one to one onto {name} "
                                                "(a reshape, a slice or a shuffle)")
                continue
            if lname:
                idx = copies[0]
                members[lname] = idx
                l = an.profile.layer(lname)
                if l.bias_key:
                    aux.append((l.bias_key, idx))
                if isinstance(tm, nn.Conv2d) and tm.groups > 1 and not _depthwise(tm):
                    block_parts.append(tuple(i // (tm.out_channels // tm.groups) for i in idx))
            else:
                for p in ("weight", "bias"):
                    if getattr(tm, p, None) is not None:
                        aux += [(f"{name}.{p}", idx) for idx in copies]
        elif lname and fn == "prune_in_channels":
            consumers.append(lname)
            if isinstance(tm, nn.Conv2d) and tm.groups > 1 and not _depthwise(tm):
                idx = _full(mp, roots, C)
                if idx is None:
                    no_compact = no_compact or f"its channels enter the grouped convolution {lname} irregularly"
                else:
                    block_parts.append(tuple(i // (tm.in_channels // tm.groups) for i in idx))
    members.setdefault(layer.name, tuple(range(C)))
    names = sorted(members, key=lambda n: order[n])
    blocked = "it is (or is coupled to) the network's output layer" if output_layers & set(names) else None
    blocks, why = _blocks_of(block_parts)
    no_compact = no_compact or why
    return ChannelGroup(id=gid, members=tuple(names), channels=C, member_index={n: members[n] for n in names},
                        aux=tuple(sorted(set(aux))),
                        consumers=tuple(sorted(set(consumers) - set(names), key=lambda n: order.get(n, 0))),
                        blocked=blocked, blocks=blocks, no_compact=no_compact)


def _depthwise(m: nn.Conv2d) -> bool:
    return m.groups == m.out_channels == m.in_channels
