"""What the weight view draws: a screen-sized sample of a layer (heatmap) and a fixed sample of its weights
(histogram), each with the rank of its unit, so the picture at any sparsity is one comparison."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model.layers import LayerInfo
from .granularity import NM, Granularity

MAX_DISPLAY = 1024          # heatmap sample: at most this many rows and columns (a screen's worth)
HIST_SAMPLE = 200_000       # weights sampled for the histogram


def display_column_order(layer: LayerInfo, gran: Granularity) -> np.ndarray:
    """Original column (of out x in*kh*kw) shown at each display column.

    Normally the natural order; for an n:m pattern on a conv the columns are
    shown kernel-position-major, so each run of m inputs sits side by side and
    the pattern is visible.
    """
    R, C = layer.matrix_shape
    shape = layer.logical_shape
    k = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    if isinstance(gran, NM) and k > 1:
        cin = shape[1]
        return (np.arange(cin)[None, :] * k + np.arange(k)[:, None]).reshape(-1)
    return np.arange(C)


@dataclass
class DisplaySample:
    """A screen-sized sample of a layer (heatmap) and a fixed sample of its weights (histogram), with the rank
    of each sampled weight's unit, so the picture at any sparsity is one comparison."""

    rows: np.ndarray
    cols: np.ndarray                    # original column (in*kh*kw index) of each sampled display column
    pos: np.ndarray                     # position of each sampled column on the display axis
    display_values: np.ndarray          # (r, c) float32 weight values of the sample
    display_ranks: np.ndarray | None    # (r, c) rank of each heatmap pixel's unit: kept iff rank >= k
    hist_values: np.ndarray             # float32 values of the histogram sample
    hist_ranks: np.ndarray | None       # rank of each histogram sample's unit
    # the samples' (shared) unit ids: while a big layer's ranking is still sorting (lazy_ranking.LazyRanking)
    # the ranks are None and "kept" is answered by selection; they are filled once the sort is done
    display_units: np.ndarray | None = None
    hist_units: np.ndarray | None = None
    ranking: object = None

    @property
    def nbytes(self) -> int:
        return self.display_values.nbytes * 2 + self.hist_values.nbytes * 2

    def _fill(self) -> bool:
        """Ranks from the finished ranking (True when the ranks are there)."""
        if self.display_ranks is None:
            if not self.ranking.ready:
                return False
            rank = self.ranking.rank.numpy()
            self.hist_ranks = rank[self.hist_units]
            self.display_ranks = rank[self.display_units.reshape(-1)].reshape(self.display_units.shape)
        return True

    def display_kept(self, k: int) -> np.ndarray:
        """bool (r, c): the heatmap pixels whose unit survives when the first ``k`` units are pruned."""
        if self._fill():
            return self.display_ranks >= k
        return self.ranking.kept(self.display_units.reshape(-1), k).reshape(self.display_units.shape)

    def hist_pruned(self, k: int) -> np.ndarray:
        """bool: the histogram samples whose unit is among the first ``k`` pruned."""
        if self._fill():
            return self.hist_ranks < k
        return ~self.ranking.kept(self.hist_units, k)

    @classmethod
    def build(cls, m) -> "DisplaySample":
        """Sample the weight ``m.weight`` of the LayerMask ``m``."""
        layer, w = m.layer, m.weight
        # heatmap sample: the weight as out x (in*k), at most MAX_DISPLAY rows/cols
        R, C = layer.matrix_shape
        rows = np.unique(np.linspace(0, R - 1, min(R, MAX_DISPLAY)).round().astype(np.int64))
        col_order = display_column_order(layer, m.granularity)
        pos = np.unique(np.linspace(0, C - 1, min(C, MAX_DISPLAY)).round().astype(np.int64))
        cols = col_order[pos]
        flat = layer.flat_index(rows[:, None], cols[None, :]).reshape(-1)
        own_units = m.unit_layout.groups_of(flat)
        wflat = w.reshape(-1)
        display_values = wflat[torch.as_tensor(flat)].float().numpy().reshape(len(rows), len(cols))
        # histogram sample (positions drawn once, with replacement: duplicates do not matter for a histogram)
        n = layer.params
        hs = np.sort(np.random.default_rng(0).integers(0, n, HIST_SAMPLE)) if n > HIST_SAMPLE else np.arange(n)
        hist_values = wflat[torch.as_tensor(hs)].float().numpy()
        hist_units = m.unit_layout.groups_of(hs)
        if m.unit_of_own is not None:
            uo = m.unit_of_own.numpy()
            own_units, hist_units = uo[own_units], uo[hist_units]
        own_units = np.asarray(own_units).reshape(len(rows), len(cols))
        hist_units = np.asarray(hist_units)
        if not getattr(m.ranking, "ready", True):           # a big layer still sorting: select per step
            return cls(rows=rows, cols=cols, pos=pos, display_values=display_values, display_ranks=None,
                       hist_values=hist_values, hist_ranks=None, display_units=own_units, hist_units=hist_units,
                       ranking=m.ranking)
        rank_np = m.ranking.rank.numpy()
        return cls(rows=rows, cols=cols, pos=pos, display_values=display_values,
                   display_ranks=rank_np[own_units].reshape(len(rows), len(cols)),
                   hist_values=hist_values, hist_ranks=rank_np[hist_units])
