"""Rankings: a layer's units (weights or groups) sorted once by score, so every sparsity is a lookup.

At sparsity s with N units exactly ``k = round(s * N)`` units are pruned -- those of rank < k. Ties are
broken by position (a stable radix sort of the scores' int32 bit patterns), so ``element`` + ``l1`` prunes
exactly the textbook's smallest-|w|-first set. n:m rankings prune the pattern's candidates first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..errors import PlanError


def pruned_units(sparsity: float, units: int) -> int:
    """How many of ``units`` groups a sparsity prunes: round(s * N) (Python's round, like the lab)."""
    if not (0.0 <= sparsity <= 1.0) or math.isnan(sparsity):
        raise PlanError(f"Sparsity {sparsity} is outside [0, 1].")
    return int(round(sparsity * units))


def _sort_keys(scores: torch.Tensor) -> torch.Tensor:
    """int32 keys whose order is the scores' order (scores >= 0; NaN last)."""
    s = scores.detach().float().abs().contiguous()
    keys = s.view(torch.int32).clone()
    keys[torch.isnan(s)] = torch.iinfo(torch.int32).max
    return keys


@dataclass
class Ranking:
    """Units in pruning order: ``rank[u]`` is the position of unit u (0 = pruned first)."""

    sorted_keys: torch.Tensor        # int32 bit patterns of the scores, in pruning order
    rank: torch.Tensor               # int32 (units,)
    comparable_fn: Callable | None = None   # scores -> cross-layer scale (monotone); None: no global scope
    nonfinite: int = 0
    order: torch.Tensor | None = field(default=None, repr=False)   # int64 unit ids in pruning order (build only)
    _comparable: np.ndarray | None = field(default=None, repr=False)

    @property
    def comparable_sorted(self) -> np.ndarray | None:
        """Ascending scores on the cross-layer scale (global scope); derived from the sort, computed once."""
        if self.comparable_fn is None:
            return None
        if self._comparable is None:
            scores = self.sorted_keys.view(torch.float32).double()
            # a balanced (per-block) ranking is not sorted by score: a unit is reached once all before it are
            self._comparable = np.maximum.accumulate(self.comparable_fn(scores).numpy())
        return self._comparable

    @property
    def units(self) -> int:
        return int(self.rank.numel())

    def threshold(self, k: int) -> float | None:
        """Score of the last pruned unit (None when nothing is pruned)."""
        if k <= 0:
            return None
        v = self.sorted_keys[min(k, self.units) - 1:min(k, self.units)].view(torch.float32)
        return float(v[0])

    def keep(self, k: int) -> torch.Tensor:
        return self.rank >= k

    @property
    def nbytes(self) -> int:
        return self.sorted_keys.numel() * 4 + self.rank.numel() * 4


def rank_scores(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stable sort of non-negative scores (a radix sort on their int32 bit patterns):
    (sorted keys, int32 rank of each unit, int64 unit ids in pruning order)."""
    keys = _sort_keys(scores.flatten())
    sorted_keys, order = torch.sort(keys, stable=True)
    rank = torch.empty(order.numel(), dtype=torch.int32)
    rank[order] = torch.arange(order.numel(), dtype=torch.int32)
    return sorted_keys, rank, order


def rank_nm(grouped: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n:m ranking of element scores (groups, m): first the m-n smallest of every group, by score,
    then the rest by score. Up to sparsity (m-n)/m only pattern candidates go, so every group keeps at least
    n and exactly n at (m-n)/m; beyond it the survivors go too (at most n remain): every prefix is n:m-valid
    from (m-n)/m on."""
    G = grouped.shape[0]
    keys = _sort_keys(grouped).reshape(G, m)
    within = torch.sort(keys, dim=1, stable=True).indices          # position order inside each group
    pos = torch.empty_like(within)
    pos.scatter_(1, within, torch.arange(m).expand(G, m).contiguous())
    tier = (pos >= (m - n)).flatten()                               # 0: candidate, 1: survivor of the pattern
    flat = keys.flatten()
    _, by_score = torch.sort(flat, stable=True)
    _, by_tier = torch.sort(tier[by_score].to(torch.int32), stable=True)
    order = by_score[by_tier]
    rank = torch.empty(order.numel(), dtype=torch.int32)
    rank[order] = torch.arange(order.numel(), dtype=torch.int32)
    return flat[order], rank, order


def rank_rows(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row ranking of element scores (rows, cols), as Wanda compares weights within each output row: first
    every row's smallest weight (the rows by score), then every row's second smallest, and so on. The first
    k = round(s * rows * cols) units therefore take floor(k/rows) or ceil(k/rows) weights from every row -- exactly
    s * cols per row whenever that is whole -- and the layer's sparsity is exactly the planned one."""
    R, C = scores.shape
    keys = _sort_keys(scores).reshape(R, C)
    within = torch.sort(keys, dim=1, stable=True).indices
    pos = torch.empty_like(within)
    pos.scatter_(1, within, torch.arange(C).expand(R, C).contiguous())
    flat = keys.flatten()
    _, by_score = torch.sort(flat, stable=True)
    _, by_pos = torch.sort(pos.flatten()[by_score], stable=True)
    order = by_score[by_pos]
    rank = torch.empty(order.numel(), dtype=torch.int32)
    rank[order] = torch.arange(order.numel(), dtype=torch.int32)
    return flat[order], rank, order


def rank_balanced(scores: torch.Tensor, blocks) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Channel ranking balanced across equal-sized blocks (the groups of a grouped convolution): first the
    weakest unit of every block (by score), then the second weakest of every block, and so on. Any prefix
    prunes the same number from every block, give or take one."""
    keys = _sort_keys(scores.flatten())
    b = np.asarray(blocks, dtype=np.int64)
    k = keys.numpy()
    by_block = np.lexsort((np.arange(len(k)), k, b))           # block-major, by score inside each block
    starts = np.searchsorted(b[by_block], b[by_block], side="left")
    tier = np.empty(len(k), dtype=np.int64)
    tier[by_block] = np.arange(len(k)) - starts
    order = torch.as_tensor(np.lexsort((np.arange(len(k)), k, tier)))
    rank = torch.empty(order.numel(), dtype=torch.int32)
    rank[order] = torch.arange(order.numel(), dtype=torch.int32)
    return keys[order], rank, order
