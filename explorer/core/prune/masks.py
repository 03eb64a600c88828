"""The mask engine: cached rankings -> masks for any sparsity in O(1).

For each (layer, criterion, granularity) the engine scores the layer's
groups ("units"), sorts them once and keeps each unit's rank. At sparsity s
with N units exactly ``k = round(s * N)`` units are pruned -- those of rank
< k -- so every question the slider asks is a lookup:

- which units go: ``rank >= k`` keeps (materialised only on apply/export);
- the threshold: the k-th sorted score;
- how many nonzeros remain: a cumulative count along the sorted order;
- the picture: ranks of a screen-sized sample of the weight, compared with k;
- the histogram: ranks of a fixed sample of weights, binned once.

Ties are broken by position (a stable sort of the scores' bit patterns), so
``element`` + ``l1`` prunes exactly the textbook's smallest-|w|-first set.
Non-finite weights get the highest score: they are reported, never pruned
silently. Channel rankings are shared by the layers of a channel group.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..errors import PlanError
from ..finite import count_nonfinite
from ..model.groups import ChannelGroup
from ..model.layers import LayerInfo
from ..model.metrics import LayerCounts
from .criteria import ScoreContext, get_criterion
from .display import DisplaySample
from .granularity import NM, Channel, Granularity, GroupLayout, get_granularity
from .lazy_ranking import LazyRanking, lazy_supported
from .manual import manual_scores
from .oneoff import magnitude_keys
from .ranking import Ranking, pruned_units, rank_balanced, rank_nm, rank_rows, rank_scores

HIST_BINS = 101
CACHE_BUDGET_BYTES = 6 * 2**30


@dataclass
class LayerMask:
    """One layer under one (criterion, granularity): every slider question as a lookup."""

    layer: LayerInfo
    criterion: str
    granularity: Granularity
    ranking: Ranking
    unit_layout: GroupLayout            # how the layer's elements map to this layer's own units
    unit_of_own: torch.Tensor | None    # shared channel ranking: own row -> shared unit (None: identity)
    cum_nonzero: torch.Tensor | None    # (units+1,): nonzero weights among the first k pruned units
    nonzero_total: int
    weight: torch.Tensor = field(repr=False)   # the ranked weight (for the display samples)
    group: ChannelGroup | None = None
    zeros_first: int | None = None      # element + magnitude: the zero weights are exactly the first Z units
    manual_k: int | None = None         # the manual criterion: how many units were chosen (ranked first)
    _sample: DisplaySample | None = field(default=None, repr=False)
    _bins: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ display samples (built when a view asks)
    @property
    def sample(self) -> DisplaySample:
        """The heatmap and histogram samples, built on first use (never for the throwaway masks of a re-mask)."""
        if self._sample is None:
            self._sample = DisplaySample.build(self)
        return self._sample

    # ------------------------------------------------------------ lookups
    @property
    def units(self) -> int:
        return self.ranking.units

    @property
    def unit_size(self) -> int:
        return self.layer.params // self.units if self.units else 0

    def units_for(self, sparsity: float) -> int:
        if self.manual_k is not None:     # a hand-made plan prunes exactly its chosen units
            return self.manual_k
        return pruned_units(sparsity, self.units)

    def counts(self, sparsity: float) -> LayerCounts:
        k = self.units_for(sparsity)
        if self.zeros_first is not None:
            nz = self.nonzero_total - max(0, k - self.zeros_first)
        else:
            nz = self.nonzero_total - int(self.cum_nonzero[k])
        return LayerCounts(params=self.layer.params, nonzero=nz, rows=self.layer.matrix_shape[0],
                           macs=self.layer.macs, nonzero_macs=nz * self.layer.uses)

    def threshold(self, sparsity: float) -> float | None:
        return self.ranking.threshold(self.units_for(sparsity))

    def display_keep(self, sparsity: float) -> np.ndarray:
        """bool (r, c): which heatmap pixels survive at this sparsity."""
        return self.sample.display_kept(self.units_for(sparsity))

    def display_image(self, sparsity: float, level: float) -> np.ndarray:
        """float32 heatmap sample: kept weights clipped to [-level, level], pruned ones at -3*level (a colormap's
        'pruned' entry), non-finite weights at +level so they stay visible."""
        clipped = self._bins.get(("clip", level))
        if clipped is None:
            clipped = np.clip(self.sample.display_values, -level, level).astype(np.float32)
            clipped[~np.isfinite(clipped)] = level
            self._bins = {k: v for k, v in self._bins.items() if not (isinstance(k, tuple) and k[0] == "clip")}
            self._bins[("clip", level)] = clipped
        return np.where(self.display_keep(sparsity), clipped, np.float32(-3 * level))

    def hist_pruned_mask(self, sparsity: float) -> np.ndarray:
        return self.sample.hist_pruned(self.units_for(sparsity))

    def histogram(self, sparsity: float, absolute: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(edges, kept, pruned): histogram of the layer's nonzero weight values split by the mask, scaled to
        the whole layer. Weights that are already exactly zero (pruned and fine-tuned before) are left out --
        their spike at 0 would flatten everything else; :attr:`zero_share` says how many there are.

        Bins are fixed once per layer (symmetric around 0, or 0..max for |w|), so a
        slider step is one bincount over the sample.
        """
        if absolute not in self._bins:
            v = np.abs(self.sample.hist_values) if absolute else self.sample.hist_values
            finite = v[np.isfinite(v)]
            top = float(np.abs(finite).max()) if finite.size else 1.0
            top = top if top > 0 else 1.0
            edges = np.linspace(0.0 if absolute else -top, top, HIST_BINS + 1)
            idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, HIST_BINS - 1)
            idx[~np.isfinite(v)] = HIST_BINS - 1
            nonzero = self.sample.hist_values != 0
            self._bins[absolute] = (edges, idx, nonzero)
        edges, idx, nonzero = self._bins[absolute]
        scale = self.layer.params / max(1, len(self.sample.hist_values))
        pruned_mask = self.hist_pruned_mask(sparsity) & nonzero
        total = np.bincount(idx[nonzero], minlength=HIST_BINS).astype(np.float64)
        pruned = np.bincount(idx[pruned_mask], minlength=HIST_BINS).astype(np.float64)
        return edges, (total - pruned) * scale, pruned * scale

    @property
    def zero_share(self) -> float:
        """Share of the layer's weights that are exactly zero before any mask (from the kept weights)."""
        return 1.0 - self.nonzero_total / self.layer.params if self.layer.params else 0.0

    @property
    def display_axis_label(self) -> str:
        k = int(np.prod(self.layer.weight_shape[2:])) if len(self.layer.weight_shape) > 2 else 1
        if isinstance(self.granularity, NM) and k > 1:
            return f"kernel pos × input ({self.granularity.m}-input runs side by side)"
        return "input × kernel position" if k > 1 else "input"

    @property
    def magnitude_threshold(self) -> bool:
        """True when the threshold is on |w| itself (element granularity, l1/l2), so ±t can be drawn."""
        return self.granularity.name == "element" and self.criterion in ("l1", "l2")

    @property
    def per_row(self) -> bool:
        """True when units are ranked within each output row (e.g. wanda at element granularity)."""
        return self.granularity.name == "element" and get_criterion(self.criterion).per_row

    def kept_units(self, sparsity: float) -> torch.Tensor:
        """bool (units,): which (shared) units survive; for channel granularity, which channels of the group."""
        return self.ranking.keep(self.units_for(sparsity))

    def pruned_rows(self, sparsity: float, member: str | None = None) -> list[int]:
        """Channel granularity: the removed output channels of ``member`` of this layer's channel group
        (default: this layer) -- what compaction takes out."""
        if not isinstance(self.granularity, Channel):
            raise ValueError("pruned_rows is for channel granularity")
        gone = torch.nonzero(~self.kept_units(sparsity)).flatten().tolist()
        if self.group is None:
            return gone
        rows = self.group.member_index[member or self.layer.name]
        return [int(rows[c]) for c in gone]

    def removable_rows(self, sparsity: float, member: str | None = None) -> list[int]:
        """Channel granularity: the pruned output rows of ``member`` that compaction can take out exactly --
        none when the group's channels cannot be removed (``ChannelGroup.no_compact``), and for grouped
        convolutions the same number from every block (the ranking prunes blocks in turn; an unfinished
        round stays in the compact model as zeroed channels)."""
        if self.group is not None and self.group.no_compact:
            return []
        gone = torch.nonzero(~self.kept_units(sparsity)).flatten()
        if self.group is not None and self.group.blocks and gone.numel():
            blocks = torch.as_tensor(self.group.blocks)
            counts = torch.bincount(blocks[gone], minlength=self.group.num_blocks)
            r = int(counts.min())
            order = gone[torch.argsort(self.ranking.rank[gone].long())]
            taken = torch.zeros(self.group.num_blocks, dtype=torch.long)
            keep = []
            for c in order.tolist():
                b = int(blocks[c])
                if taken[b] < r:
                    taken[b] += 1
                    keep.append(c)
            gone = torch.as_tensor(sorted(keep), dtype=torch.long)
        if self.group is None:
            return [int(c) for c in gone.tolist()]
        rows = self.group.member_index[member or self.layer.name]
        return [int(rows[c]) for c in gone.tolist()]

    def element_mask(self, sparsity: float) -> torch.Tensor:
        """bool tensor of the weight's shape: True = kept. Full size: only for apply/export."""
        keep = self.kept_units(sparsity)
        return self.unit_layout.expand(keep if self.unit_of_own is None else keep[self.unit_of_own])

    @property
    def nbytes(self) -> int:
        cum = 0 if self.cum_nonzero is None else self.cum_nonzero.numel() * self.cum_nonzero.element_size()
        return cum + (self._sample.nbytes if self._sample is not None else 0)


class MaskEngine:
    """Builds and caches :class:`LayerMask` objects for the current weights."""

    def __init__(self, layers: dict[str, LayerInfo], weight: Callable[[str], torch.Tensor],
                 channel_group: Callable[[str], ChannelGroup] | None = None,
                 gradient: Callable[[str], torch.Tensor | None] | None = None, seed: int = 0,
                 budget_bytes: int = CACHE_BUDGET_BYTES,
                 statistic: Callable[[str, str], torch.Tensor | None] | None = None, lazy: bool = True):
        self.layers = layers
        self.statistic = statistic
        self.weight = weight
        self.channel_group = channel_group
        self.gradient = gradient
        self.seed = seed
        self.budget = budget_bytes
        self.lazy = lazy   # big element l1/l2 layers: rank by selection first, sort in the background
        self._views: OrderedDict[tuple, LayerMask] = OrderedDict()
        self._rankings: OrderedDict[tuple, Ranking] = OrderedDict()
        self._build_lock = threading.RLock()   # builds may run in a worker; cached lookups need no lock
        # bumped by invalidate(): a build that started before keeps its result out of the caches. invalidate()
        # never waits for the build lock: it is called with the session's lock held (new weights), while a
        # build in a worker may be waiting for that lock (calibration statistics copy the model), so waiting
        # here deadlocked the window (the soak found it, seed 23)
        self._generation = 0
        self._build_generation = 0

    # ------------------------------------------------------------ cache
    def invalidate(self, layers: list[str] | None = None, criterion: str | None = None) -> None:
        """Forget cached rankings (after the weights change, or gradients for taylor)."""
        def stale(key):
            names = key[0] if isinstance(key[0], tuple) else (key[0],)
            return (layers is None or any(n in layers for n in names)) and (criterion is None or key[1] == criterion)
        self._generation += 1
        for d in (self._views, self._rankings):
            for key in [k for k in list(d) if stale(k)]:
                d.pop(key, None)

    def carry_from(self, other: "MaskEngine", criteria: frozenset[str]) -> None:
        """Take ``other``'s cached rankings and views of ``criteria`` (same weights; they stay valid)."""
        for mine, theirs in ((self._views, other._views), (self._rankings, other._rankings)):
            for key, v in list(theirs.items()):
                if key[1] in criteria:
                    mine[key] = v

    def _cache(self, d: OrderedDict, key, value) -> None:
        """Keep a built ranking/view unless the weights changed while it was being built."""
        if self._build_generation == self._generation:
            d[key] = value
            if self._build_generation != self._generation:   # invalidated between the check and the insert
                d.pop(key, None)

    def is_cached(self, layer: str, criterion: str, granularity: str | Granularity, units: tuple | None = None) -> bool:
        g = granularity.name if isinstance(granularity, Granularity) else get_granularity(granularity).name
        return _key(layer, criterion, g, units) in self._views

    def _trim(self) -> None:
        total = sum(v.nbytes for v in self._views.values()) + sum(r.nbytes for r in self._rankings.values())
        while total > self.budget and len(self._views) > 1:
            key, v = self._views.popitem(last=False)
            total -= v.nbytes
            rk = (v.group.members if v.group is not None and isinstance(v.granularity, Channel) else key[0],
                  key[1], key[2])
            r = self._rankings.pop(rk, None)
            if r is not None:
                total -= r.nbytes

    # ------------------------------------------------------------ building
    def _element_scores(self, name: str, criterion: str) -> torch.Tensor:
        crit = get_criterion(criterion)
        ctx = ScoreContext(layer=name, seed=self.seed, gradient=self.gradient, statistic=self.statistic)
        w = self.weight(name)
        scores = crit.element_scores(w, ctx)
        # a weight that is already exactly zero (pruned and fine-tuned before) costs nothing to prune: it goes
        # first under every criterion, so re-applying a plan to fine-tuned weights reproduces their mask
        tiny = torch.finfo(torch.float32).smallest_normal * torch.finfo(torch.float32).eps   # the smallest subnormal
        scores = torch.where(w == 0, torch.zeros((), dtype=scores.dtype), scores.float().clamp_min(tiny))
        bad = ~torch.isfinite(w)
        if bool(bad.any()):   # non-finite weights are reported, never pruned silently: highest score
            scores = scores.masked_fill(bad, float("inf"))
        return scores

    def _ranking(self, name: str, criterion: str, gran: Granularity,
                 units: tuple | None = None) -> tuple[Ranking, ChannelGroup | None]:
        layer = self.layers[name]
        crit = get_criterion(criterion)
        group = None
        if isinstance(gran, Channel) and self.channel_group is not None:
            group = self.channel_group(name)
            if group.blocked:
                raise PlanError(f"'channel' granularity does not fit layer {name}: {group.blocked}.",
                                "Its output channels must all stay; use element, n:m, vector or kernel for it.")
        if crit.name == "manual":    # the chosen units first, the rest by position: never cached across choices
            sorted_keys, rank, order = rank_scores(manual_scores(layer, gran, units or (), group))
            w = self.weight(name)
            return Ranking(sorted_keys, rank, None, count_nonfinite(w), order), group
        key = (group.members if group is not None else name, criterion, gran.name)
        if key in self._rankings:
            self._rankings.move_to_end(key)
            return self._rankings[key], group
        if group is not None and len(group.members) > 1:
            total, size = None, 0
            for member in group.members:
                ml = self.layers[member]
                lay = gran.layout(ml)
                s = crit.group_scores(lay.group_view(self._element_scores(member, criterion)))
                idx = torch.as_tensor(group.member_index[member])
                shared = s[idx]                        # shared channel c -> this member's row score
                total = shared if total is None else total + shared
                size += lay.group_size
            unit_scores = total
            comparable = (lambda sc, size=size: crit.comparable(sc, size))
        else:
            lay = gran.layout(layer)
            w = self.weight(name)
            if lazy_supported(criterion, gran.name, lay.group_size, layer.params, w.dtype) \
                    and not isinstance(gran, NM) and self.lazy:
                # a big layer: answered by selection at once, sorted in the background (lazy_ranking.py)
                ranking = LazyRanking(magnitude_keys(w.detach().reshape(-1)),
                                      lambda sc, size=lay.group_size: crit.comparable(sc, size))
                self._cache(self._rankings, key, ranking)
                return ranking, None
            elem = self._element_scores(name, criterion)
            if isinstance(gran, NM):
                sorted_keys, rank, order = rank_nm(
                    crit.group_scores(lay.group_view(elem).reshape(-1, 1)).reshape(-1, gran.m), gran.n, gran.m)
                w = self.weight(name)
                ranking = Ranking(sorted_keys, rank, None, count_nonfinite(w), order)
                self._cache(self._rankings, key, ranking)
                return ranking, None
            if crit.per_row and lay.group_size == 1:   # e.g. wanda: compared within each output row
                sorted_keys, rank, order = rank_rows(elem.reshape(layer.out_channels, -1))
                w = self.weight(name)
                ranking = Ranking(sorted_keys, rank, None, count_nonfinite(w), order)
                self._cache(self._rankings, key, ranking)
                return ranking, None
            unit_scores = elem.reshape(-1) if lay.group_size == 1 else crit.group_scores(lay.group_view(elem))
            comparable = (lambda sc, size=lay.group_size: crit.comparable(sc, size))
        if group is not None and group.blocks and isinstance(gran, Channel):
            sorted_keys, rank, order = rank_balanced(unit_scores, group.blocks)
        else:
            sorted_keys, rank, order = rank_scores(unit_scores)
        w = self.weight(name)
        ranking = Ranking(sorted_keys, rank, comparable, count_nonfinite(w), order)
        self._cache(self._rankings, key, ranking)
        return ranking, group

    def view(self, name: str, criterion: str = "l1", granularity: str | Granularity = "element",
             units: tuple | None = None) -> LayerMask:
        """The cached :class:`LayerMask`, building it on first use (may take seconds on huge layers).
        ``units``: the pruned units of a manual plan (see :mod:`manual`)."""
        if name not in self.layers:
            raise PlanError(f"Unknown layer '{name}'.", "Run `pruning-explorer info` to list the prunable layers.")
        gran = granularity if isinstance(granularity, Granularity) else get_granularity(granularity)
        layer = self.layers[name]
        gran.check(layer)
        key = _key(name, criterion, gran.name, units)
        cached = self._views.get(key)
        if cached is not None:
            return cached
        with self._build_lock:
            cached = self._views.get(key)
            if cached is not None:
                return cached
            self._build_generation = self._generation
            return self._build(name, criterion, gran, layer, key, units)

    def _build(self, name, criterion, gran, layer, key, units=None) -> LayerMask:
        if criterion == "manual":   # a click makes a new choice: keep the last few of this layer's, not all
            mine = [k for k in self._views if k[0] == name and k[1] == "manual" and k[2] == gran.name]
            for k in mine[:-3]:
                self._views.pop(k, None)
        ranking, group = self._ranking(name, criterion, gran, units)
        w = self.weight(name).detach()
        if isinstance(gran, NM):
            base = gran.layout(layer)
            unit_layout = GroupLayout(base.weight_shape, base.perm, layer.params, 1)
        else:
            unit_layout = gran.layout(layer)
        unit_of_own = None
        if group is not None and len(group.members) > 1:
            own_index = torch.as_tensor(group.member_index[name], dtype=torch.long)
            unit_of_own = torch.empty(layer.out_channels, dtype=torch.long)
            unit_of_own[own_index] = torch.arange(own_index.numel())
        zeros_first = None
        cum = None
        if unit_layout.group_size == 1 and unit_of_own is None and criterion in ("l1", "l2") \
                and not isinstance(gran, NM):
            # |w| ranks zeros first (ties by position): nonzeros after k = total - max(0, k - zeros)
            zeros_first = int(layer.params - torch.count_nonzero(w))
            nonzero_total = layer.params - zeros_first
        else:
            # nonzeros per own unit, arranged in pruning order of the (shared) units
            order = ranking.order
            if order is None:
                order = torch.empty(ranking.units, dtype=torch.long)
                order[ranking.rank.long()] = torch.arange(ranking.units)
            nz_units = (unit_layout.group_view(w) != 0).sum(dim=1, dtype=torch.int32)
            if unit_of_own is not None:
                shared_nz = torch.empty_like(nz_units)
                shared_nz[unit_of_own] = nz_units
                nz_units = shared_nz
            cum = torch.zeros(ranking.units + 1, dtype=torch.int64 if layer.params >= 2**31 else torch.int32)
            torch.cumsum(nz_units[order], 0, out=cum[1:])
            nonzero_total = int(cum[-1])
        ranking.order = None   # only needed while building: free 8 bytes per unit
        mask = LayerMask(layer=layer, criterion=criterion, granularity=gran, ranking=ranking,
                         unit_layout=unit_layout, unit_of_own=unit_of_own, cum_nonzero=cum,
                         nonzero_total=nonzero_total, weight=w, group=group, zeros_first=zeros_first,
                         manual_k=len(units or ()) if criterion == "manual" else None)
        self._cache(self._views, key, mask)
        self._trim()
        return mask

    # ------------------------------------------------------------ full masks (apply / export)
    def materialize(self, plan, base: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                                         dict[str, torch.Tensor]]:
        """Full masks of a plan: ({weight key: bool weight mask}, {aux param: bool mask}) for pruned layers only
        (keys are state_dict keys: ``LayerInfo.key``). Channel plans also mask the BatchNorm / bias entries of
        their channels (``base`` says their size)."""
        masks: dict[str, torch.Tensor] = {}
        aux: dict[str, torch.Tensor] = {}
        for name, lp in plan.active().items():
            view = self.view(name, lp.criterion, lp.granularity, lp.units)
            masks[view.layer.key] = view.element_mask(lp.sparsity)
            if isinstance(view.granularity, Channel) and view.group is not None:
                # zero the BatchNorm / bias entries of pruned channels so the channel output is exactly 0
                keep = view.kept_units(lp.sparsity)
                for pname, idx in view.group.aux:
                    t = base.get(pname)
                    if t is None:
                        continue
                    m = aux.get(pname, torch.ones(t.shape[0], dtype=torch.bool))
                    m[torch.as_tensor(idx)] &= keep
                    aux[pname] = m
        return masks, aux


def _key(name: str, criterion: str, granularity: str, units: tuple | None) -> tuple:
    """The cache key of a view: a manual plan's chosen units are part of it."""
    return (name, criterion, granularity) if criterion != "manual" else (name, criterion, granularity, units or ())


def masked_tensors(base: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                   aux: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The masked tensors only: weights and channel entries with pruned positions at +0.0 (never -0.0)."""
    out = {}
    for key, m in masks.items():
        out[key] = torch.where(m, base[key], torch.zeros((), dtype=base[key].dtype))
    for pname, m in aux.items():
        t = base[pname]
        out[pname] = torch.where(m.reshape((-1,) + (1,) * (t.dim() - 1)), t, torch.zeros((), dtype=t.dtype))
    return out


def masked_state(base: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                 aux: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``base`` with the masks applied (see :func:`masked_tensors`)."""
    changed = masked_tensors(base, masks, aux)
    return {k: changed[k] if k in changed else v.clone() for k, v in base.items()}
