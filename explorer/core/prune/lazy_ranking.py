"""A big layer's first ranking without waiting for its sort (issue 24): answer by selection, sort in the background.

Sorting a 102.8 M-weight layer (VGG-16's ``classifier.0``) takes seconds. The slider's first steps do not need
the sort: at sparsity s exactly ``k = round(s * N)`` units go -- those whose (key, position) is among the k
smallest -- so every question is answered by the k-th smallest key alone, found by a radix select:

- the keys' top 16 bits are histogrammed once at build (one pass); a step finds the bin holding the k-th key and
  histograms the low 16 bits of that bin's keys (one pass, cached per bin);
- a sampled unit is kept iff its key is above the k-th, or equal to it and not among the first ``need`` of
  the equal keys by position (the stable sort's tie order), so the display and histogram samples are exact.

Meanwhile a daemon thread runs the same stable sort as :func:`ranking.rank_scores` on the same keys; once it
is done every lookup is the sorted ranking's. Anything that needs the whole ranking (``rank``, ``sorted_keys``:
apply, export, global scope) waits for that thread. Results are bit-identical to the full ranking's.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

from .ranking import Ranking

MIN_PARAMS = 8 << 20          # layers with fewer units are sorted at once (under ~1 s)
_HI_BITS = 15                 # keys are < 2**31: the top 16 of their 32 bits take 2**15 values
CHUNK = 1 << 22
_INF_BITS = 0x7F800000


class LazyRanking(Ranking):
    """A :class:`Ranking` whose sort runs in a background thread; lookups before it ends are selections."""

    def __init__(self, keys: torch.Tensor, comparable_fn=None, start: bool = True):
        """``keys``: the int32 sort keys of the units (as :func:`ranking._sort_keys` makes them). ``start``: begin
        the background sort now (tests pass False and call :meth:`finish` when they want the sorted state)."""
        self._keys = keys.contiguous().view(-1)                       # int32 keys in unit order
        self._hi = torch.empty(self._keys.numel(), dtype=torch.int16)   # top bits of every key
        hist = torch.zeros(1 << _HI_BITS, dtype=torch.int64)
        for i in range(0, self._keys.numel(), CHUNK):
            h = (self._keys[i:i + CHUNK] >> 16).to(torch.int16)
            self._hi[i:i + CHUNK] = h
            hist += torch.bincount(h.to(torch.int32), minlength=1 << _HI_BITS)
        self._cum_hi = torch.cumsum(hist, 0)
        self._low: OrderedDict[int, torch.Tensor] = OrderedDict()       # hi bin -> cumulative low-bit counts
        self._ties: OrderedDict[int, np.ndarray] = OrderedDict()        # key -> positions holding it
        self._lock = threading.RLock()     # selection tables vs. freeing them once the sort is done
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._sorted: torch.Tensor | None = None
        self._rank: torch.Tensor | None = None
        self.comparable_fn = comparable_fn
        self.nonfinite = int(hist[_INF_BITS >> 16])   # keys are clamped at +inf's bits: that bin holds only them
        self._comparable = None
        self._started = False
        if start:
            self._started = True
            threading.Thread(target=self._sort, name="ranking-sort", daemon=True).start()

    def finish(self) -> None:
        """Sort now in this thread if the background sort was never started; then wait for it."""
        if not self._started:
            self._started = True
            self._sort()
        self.wait()

    # ------------------------------------------------------------ the full ranking (background)
    def _sort(self) -> None:
        try:
            sorted_keys, order = torch.sort(self._keys, stable=True)
            rank = torch.empty(order.numel(), dtype=torch.int32)
            rank[order] = torch.arange(order.numel(), dtype=torch.int32)
            del order
            self._sorted, self._rank = sorted_keys, rank
        except BaseException as e:        # noqa: BLE001  (re-raised where the ranking is used)
            self._error = e
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self._done.is_set() and self._error is None

    def wait(self) -> None:
        """Block until the full ranking exists (re-raises what the sort raised)."""
        if not self._started:
            self.finish()
            return
        self._done.wait()
        if self._error is not None:
            raise self._error
        if self._keys is not None:          # selection is no longer needed: free its tables
            with self._lock:
                self._keys = self._hi = None
                self._low.clear()
                self._ties.clear()

    @property
    def sorted_keys(self) -> torch.Tensor:
        self.wait()
        return self._sorted

    @property
    def rank(self) -> torch.Tensor:
        self.wait()
        return self._rank

    @property
    def order(self):                        # the engine frees a ranking's build order; this one keeps none
        return None

    @order.setter
    def order(self, value) -> None:
        pass

    @property
    def units(self) -> int:
        return int(self._cum_hi[-1])

    @property
    def nbytes(self) -> int:
        n = self.units
        sel = 0 if self._keys is None else n * 6
        return sel + (n * 8 if self._done.is_set() else 0)

    # ------------------------------------------------------------ selection (before the sort is done)
    def _select(self, k: int) -> tuple[int, int]:
        """(the k-th smallest key (1-based), how many keys are smaller), for 1 <= k <= units; lock held."""
        hi = int(torch.searchsorted(self._cum_hi, k))
        below = int(self._cum_hi[hi - 1]) if hi > 0 else 0
        cum = self._low.get(hi)
        if cum is None:
            low = torch.zeros(1 << 16, dtype=torch.int64)
            for i in range(0, self._keys.numel(), CHUNK):
                c = self._keys[i:i + CHUNK]
                low += torch.bincount(c[self._hi[i:i + CHUNK] == hi] & 0xFFFF, minlength=1 << 16)
            cum = torch.cumsum(low, 0)
            self._low[hi] = cum
            while len(self._low) > 64:
                self._low.popitem(last=False)
        lo = int(torch.searchsorted(cum, k - below))
        less = below + (int(cum[lo - 1]) if lo > 0 else 0)
        return (hi << 16) | lo, less

    def _tie_positions(self, key: int) -> np.ndarray:
        pos = self._ties.get(key)
        if pos is None:
            pos = torch.nonzero(self._keys == key).flatten().numpy()
            self._ties[key] = pos
            while len(self._ties) > 8:
                self._ties.popitem(last=False)
        return pos

    def threshold(self, k: int) -> float | None:
        if k > 0:
            with self._lock:
                if self._keys is not None and not self._done.is_set():
                    key, _ = self._select(min(k, self.units))
                    return float(torch.tensor([key], dtype=torch.int32).view(torch.float32)[0])
        return super().threshold(k)

    def kept(self, units: np.ndarray, k: int) -> np.ndarray:
        """bool, exactly ``rank[units] >= k``: by selection while the sort runs (ties by position, as the stable
        sort breaks them), from the rank once it is done."""
        n = self.units
        if k <= 0:
            return np.ones(units.shape, dtype=bool)
        if k >= n:
            return np.zeros(units.shape, dtype=bool)
        with self._lock:
            if self._keys is not None and not self._done.is_set():
                kth, less = self._select(k)
                keys = self._keys.numpy()[units]
                out = keys > kth
                eq = keys == kth
                if eq.any():
                    need = k - less                 # keys equal to the k-th that go: the first ones by position
                    out[eq] = np.searchsorted(self._tie_positions(kth), units[eq]) >= need
                return out
        return self.rank.numpy()[units] >= k


def lazy_supported(criterion: str, granularity_name: str, group_size: int, params: int, dtype) -> bool:
    """Element l1/l2 (the score is |w|) on a float32 layer of at least :data:`MIN_PARAMS` weights."""
    return (granularity_name == "element" and criterion in ("l1", "l2") and group_size == 1
            and dtype == torch.float32 and params >= MIN_PARAMS)
