"""One mask at one sparsity without a ranking: what applying a plan to a big layer needs, in little memory.

A ranking (``ranking.py``) sorts all of a layer's scores once so that every sparsity is a lookup; for a
102 M-weight layer that sort takes seconds and ~20 bytes per weight. Applying one plan needs only the mask
at one sparsity, and for element granularity with a magnitude criterion (``l1``, ``l2``: the score is |w|)
that mask is fixed by the k-th smallest score alone. It is found here by a radix select on the scores'
int32 bit patterns (two histogram passes over the weight in chunks), and the masked weight is written
chunk by chunk: a few MB of temporaries instead of a sort.

The result is bit-identical to the ranking's: the same keys (a zero weight scores 0, a non-finite one
+inf, every other at least the smallest subnormal), the same count ``k = round(s * N)``, and ties broken by
position (among weights whose key equals the k-th, the first ones by index go), as the stable sort does.
"""
from __future__ import annotations

import torch

from .ranking import pruned_units

CHUNK = 1 << 22                     # elements per pass step (16 MB of float32 keys)
MIN_PARAMS = 1 << 20                # smaller layers go through the cached ranking as before
MAGNITUDE = ("l1", "l2")            # criteria whose element score is |w|
_TINY = torch.finfo(torch.float32).smallest_normal * torch.finfo(torch.float32).eps   # smallest subnormal


def supports(criterion: str, granularity: str, params: int, min_params: int | None = None) -> bool:
    """Whether a layer's one-off mask can be computed here (element granularity, magnitude, a layer of at least
    ``min_params`` weights: :data:`MIN_PARAMS` unless given)."""
    least = MIN_PARAMS if min_params is None else min_params
    return str(granularity) == "element" and str(criterion) in MAGNITUDE and params >= least


_INF_BITS = 0x7F800000


def _keys(w: torch.Tensor) -> torch.Tensor:
    """int32 keys of |w| exactly as the mask engine ranks them (see masks.MaskEngine._element_scores)."""
    if w.dtype == torch.float32:
        # the bits of |w| are the bits of w without the sign; zero is 0 (so the clamp to the smallest subnormal
        # changes nothing), and inf/NaN (every pattern from 0x7F800000 up) score +inf
        return (w.view(torch.int32) & 0x7FFFFFFF).clamp_max_(_INF_BITS)
    a = w.detach().abs().float().clamp_min(_TINY)
    a = a.masked_fill(w == 0, 0.0)
    a = a.masked_fill(~torch.isfinite(w), float("inf"))
    return a.view(torch.int32)


magnitude_keys = _keys      # the public name (the mask engine's lazy rankings use the same keys)


def _chunks(flat: torch.Tensor):
    for i in range(0, flat.numel(), CHUNK):
        yield i, flat[i:i + CHUNK]


def kth_key(w: torch.Tensor, k: int) -> tuple[int, int]:
    """(key of the k-th smallest score (1-based), how many keys are smaller) by a two-pass radix select."""
    flat = w.detach().contiguous().view(-1)
    hist = torch.zeros(1 << 15, dtype=torch.int64)
    for _, c in _chunks(flat):
        hist += torch.bincount(_keys(c) >> 16, minlength=1 << 15)
    cum = torch.cumsum(hist, 0)
    hi = int(torch.searchsorted(cum, k))            # first bin whose cumulative count reaches k
    below = int(cum[hi - 1]) if hi > 0 else 0
    low = torch.zeros(1 << 16, dtype=torch.int64)
    for _, c in _chunks(flat):
        kk = _keys(c)
        low += torch.bincount(kk[(kk >> 16) == hi] & 0xFFFF, minlength=1 << 16)
    cum2 = torch.cumsum(low, 0)
    lo = int(torch.searchsorted(cum2, k - below))
    less = below + (int(cum2[lo - 1]) if lo > 0 else 0)
    return (hi << 16) | lo, less


def _masked_chunks(w: torch.Tensor, sparsity: float):
    """(start, chunk of ``w`` with its ``round(sparsity * N)`` smallest-|w| weights at +0.0) in index order."""
    n = w.numel()
    k = pruned_units(sparsity, n)
    src = w.detach().contiguous().view(-1)
    zero = torch.zeros((), dtype=w.dtype)
    if k == 0 or k >= n:
        for i, c in _chunks(src):
            yield i, (c if k == 0 else torch.zeros_like(c))
        return
    kth, less = kth_key(w, k)
    need = k - less                                  # weights with key == kth that go (the first ones by index)
    seen = 0
    for i, c in _chunks(src):
        kk = _keys(c)
        keep = kk > kth
        eq = kk == kth
        if bool(eq.any()):
            order = torch.cumsum(eq, 0, dtype=torch.int64) + seen   # 1-based index among the equal keys so far
            keep |= eq & (order > need)
            seen += int(eq.sum())
        yield i, torch.where(keep, c, zero)


def masked_weight(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A new tensor: ``w`` with its ``round(sparsity * N)`` smallest-|w| weights at +0.0 (ties by position)."""
    out = torch.empty_like(w, memory_format=torch.contiguous_format)
    dst = out.view(-1)
    for i, c in _masked_chunks(w, sparsity):
        dst[i:i + c.numel()].copy_(c)
    return out


def mask_in_place(w: torch.Tensor, sparsity: float) -> None:
    """Write :func:`masked_weight` ``(w, sparsity)`` into ``w`` itself, chunk by chunk (no copy of the layer).

    Safe in one pass: the k-th key is found before anything is written, and each chunk is read (and its tied
    keys counted) before it is overwritten, never after. Masking is idempotent: a second call changes nothing.
    A non-contiguous ``w`` (a transposed or channels-last layer) is masked into a copy and copied back."""
    if not w.is_contiguous():
        with torch.no_grad():
            w.copy_(masked_weight(w, sparsity))
        return
    flat = w.detach().view(-1)
    with torch.no_grad():
        for i, c in _masked_chunks(w, sparsity):
            dst = flat[i:i + c.numel()]
            if c.data_ptr() != dst.data_ptr():
                dst.copy_(c)


def matches(w: torch.Tensor, sparsity: float, other: torch.Tensor) -> bool:
    """Is ``other`` bit for bit :func:`masked_weight` ``(w, sparsity)``? Chunk by chunk, never the whole tensor."""
    from ..fileio import bit_equal

    if other.shape != w.shape or other.dtype != w.dtype:
        return False
    flat = other.detach().contiguous().view(-1)
    return all(bit_equal(c, flat[i:i + c.numel()]) for i, c in _masked_chunks(w, sparsity))
