"""Global scope: one threshold on comparable scores across many layers.

Every layer's units are ranked by a score on a shared scale (the
criterion's ``comparable``: a group's mean |w| for l1, its RMS for l2), a
single threshold is found so that the chosen share of all their weights is
pruned, and each layer is capped so none is emptied. Linked layers (a
channel group) count as one entity. The result is per-layer sparsities, so
a global plan is an ordinary plan afterwards.
"""
from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING

import numpy as np

from ..errors import PlanError
from .criteria import get_criterion
from .granularity import NM, Channel, Element, get_granularity
from .plan import LayerPlan

if TYPE_CHECKING:
    from .state_view import StateView

_SIGN = 1 << 63
_MAXF = float(np.finfo(np.float64).max)


def _key(x: float) -> int:
    """A Python int that orders like the float64 x (monotone: x < y iff key(x) < key(y); -0.0 maps like 0.0)."""
    i = struct.unpack("<q", struct.pack("<d", x))[0]
    return i if i >= 0 else -(i & (_SIGN - 1))


def _from_key(k: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", k if k >= 0 else (-k) | _SIGN))[0]


def _smallest_t(f, lo: float, hi: float, K: int) -> float:
    """Smallest float64 t in [lo, hi] with f(t) >= K (f non-decreasing; hi if none does), by bisection on an
    integer key that orders like the floats. Python ints cannot overflow, every step narrows [a, b], so it ends
    in at most 65 steps for any bounds; NaN or infinite bounds are clamped to the finite range first."""
    lo = -_MAXF if math.isnan(lo) else min(max(float(lo), -_MAXF), _MAXF)
    hi = _MAXF if math.isnan(hi) else min(max(float(hi), -_MAXF), _MAXF)
    if lo > hi:
        return hi
    a, b = _key(lo), _key(hi)
    while a < b:
        mid = (a + b) // 2
        if f(_from_key(mid)) >= K:
            b = mid
        else:
            a = mid + 1
    return _from_key(a)


def _finite_range(c: np.ndarray) -> tuple[float, float] | None:
    """The smallest and largest finite score of an ascending array (-inf first, +inf then NaN last, as NumPy
    sorts them), by two binary searches: no mask or copy of a layer's scores (a VGG-16 layer has 103 M)."""
    i = int(np.searchsorted(c, -np.inf, side="right"))
    j = int(np.searchsorted(c, np.inf, side="left"))
    return (float(c[i]), float(c[j - 1])) if i < j else None


def global_sparsities(session: StateView, names: list[str], target: float, granularity: str, criterion: str,
                      max_layer_sparsity: float = 0.95) -> dict[str, float]:
    gran = get_granularity(granularity)
    if isinstance(gran, NM):
        raise PlanError(f"Global scope does not apply to the {gran.name} pattern: it fixes the sparsity of every run "
                        "of weights.", "Use local scope for n:m, or element/vector/kernel/channel for global scope.")
    crit = get_criterion(criterion)
    if crit.per_row and isinstance(gran, Element):
        raise PlanError(f"Global scope does not apply to {crit.name} at element granularity: its scores are compared "
                        "within each output row of a layer, not across layers.",
                        f"Use local scope (the Wanda paper prunes every layer to the same sparsity), or {crit.name} "
                        "with a group granularity (vector, kernel, channel) for global scope.")
    if not 0.0 <= target <= 1.0 or math.isnan(target):
        raise PlanError(f"Sparsity {target} is outside [0, 1].")
    if not 0.0 <= max_layer_sparsity <= 1.0:
        raise PlanError(f"The per-layer cap {max_layer_sparsity} is outside [0, 1].")
    entities = []  # (member names, comparable sorted, elements per unit, units, cap units)
    seen = set()
    for n in names:
        view = session.layer_mask(n, LayerPlan(0.0, gran, criterion))
        members = view.group.members if (isinstance(gran, Channel) and view.group is not None) else (n,)
        if members in seen:
            continue
        seen.add(members)
        units = view.units
        size = sum(session.layer(m).params for m in members) // units
        comp = view.ranking.comparable_sorted
        entities.append((members, comp, size, units, int(math.floor(max_layer_sparsity * units + 1e-9))))
    if not entities:
        return {}
    total = sum(size * units for _, _, size, units, _ in entities)
    K = int(round(target * total))

    def pruned(t: float, side: str) -> int:
        return sum(size * min(cap, int(np.searchsorted(c, t, side=side))) for _, c, size, _, cap in entities)

    counts = [0] * len(entities)
    if K > 0:
        finite = [r for r in (_finite_range(c) for _, c, _, _, _ in entities) if r is not None]
        lo = min((r[0] for r in finite), default=0.0)
        hi = max((r[1] for r in finite), default=0.0)
        if pruned(hi, "right") < K:          # the caps bind: everything up to its cap
            t = hi
        else:
            t = _smallest_t(lambda x: pruned(x, "right"), lo, hi, K)
        less = [min(cap, int(np.searchsorted(c, t, side="left"))) for _, c, _, _, cap in entities]
        leq = [min(cap, int(np.searchsorted(c, t, side="right"))) for _, c, _, _, cap in entities]
        deficit = K - sum(e[2] * l for e, l in zip(entities, less))
        for i, e in enumerate(entities):
            take = 0
            if deficit > 0:
                take = min(leq[i] - less[i], -(-deficit // e[2]))
                deficit -= take * e[2]
            counts[i] = less[i] + take
    out = {}
    for (members, _, _, units, _), k in zip(entities, counts):
        for m in members:
            out[m] = k / units if units else 0.0
    return out
