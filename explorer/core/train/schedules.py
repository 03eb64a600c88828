"""Sparsity sequences of the pruning schedules, and the learning-rate phases that go with them.

- **one-shot**: the target at once.
- **iterative** (Han et al. 2015): K prune -> fine-tune steps. ``geometric`` spacing removes the same share of
  the weights that are still there at every step (keep ratio k0 * (k1/k0)^(j/K)), the literature's steps;
  ``linear`` spacing adds the same sparsity at every step (its last step removes most of the survivors at
  once: 0 -> 31.7 -> 63.3 -> 95 % drops 86 % of what is left in step 3). A user can also give the sparsity
  after each step.
- **AGP** (Zhu & Gupta 2017): s_t = s_f + (s_i - s_f)(1 - t / (end * T))^3 for t <= end * T, with the masks
  recomputed from the current weights at regular iterations; the rest of training (the recovery phase) runs
  at the final sparsity.

Fractions are "the share of the way from the start plan to the target": 0 = start, 1 = target (exactly).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import PlanError
from ..prune.plan import Plan

SPACINGS = ("geometric", "linear")
AGP_END = 0.5          # AGP: the cubic reaches the target after this share of training (then recovery)
AGP_UPDATES = 10       # AGP: masks recomputed this many times along the cubic
AGP_ANNEAL_PRUNING = False   # AGP with rewinding: the pruning phase keeps the full rate


def layer_sparsity_at(s0: float, s1: float, frac: float, spacing: str = "linear") -> float:
    """A layer's sparsity ``frac`` of the way from s0 to s1 (frac >= 1 gives s1 exactly)."""
    if frac >= 1.0:
        return s1
    if frac <= 0.0:
        return s0
    k0, k1 = 1.0 - s0, 1.0 - s1
    if spacing == "geometric" and k0 > 0 and k1 > 0:
        s = 1.0 - k0 * (k1 / k0) ** frac
    else:
        s = s0 + (s1 - s0) * frac
    return min(max(s, 0.0), 1.0)


def plan_at(target: Plan, start: Plan, frac: float, spacing: str = "linear") -> Plan:
    """Per-layer plan ``frac`` of the way from ``start`` to ``target`` (a layer whose granularity changes starts
    from dense)."""
    layers = {}
    for n, lp in target.layers.items():
        s0 = start.get(n).sparsity if start.get(n).granularity == lp.granularity else 0.0
        layers[n] = lp.at_sparsity(layer_sparsity_at(s0, lp.sparsity, frac, spacing))
    return Plan(layers, target.scope, target.target_sparsity)


def plan_at_level(target: Plan, start: Plan, level: float, sizes: dict[str, int]) -> Plan:
    """The plan of an iterative step the user asked for by overall sparsity ``level`` (weighted by layer size).

    Every layer goes the same share of the way (geometrically, in kept weights): a uniform plan reaches exactly
    ``level`` in every layer, a per-layer plan keeps its proportions."""
    s0, s1 = overall_sparsity(start, sizes, target), overall_sparsity(target, sizes)
    if level >= s1 - 1e-12:
        return target
    lo, hi = 0.0, 1.0            # the overall sparsity rises with frac: bisect for the level
    for _ in range(60):
        mid = (lo + hi) / 2
        if overall_sparsity(plan_at(target, start, mid, "geometric"), sizes) < level:
            lo = mid
        else:
            hi = mid
    plan = plan_at(target, start, (lo + hi) / 2, "geometric")
    layers = {}
    for n, lp in plan.layers.items():     # uniform layers land on the level exactly, not via exp(log(.))
        t0 = start.get(n).sparsity if start.get(n).granularity == lp.granularity else 0.0
        if abs(t0 - s0) < 1e-12 and abs(target.layers[n].sparsity - s1) < 1e-12:
            lp = lp.at_sparsity(level)
        layers[n] = lp
    return Plan(layers, target.scope, target.target_sparsity)


def overall_sparsity(plan: Plan, sizes: dict[str, int], like: Plan | None = None) -> float:
    """Weight-count-weighted sparsity of ``plan`` over the layers in ``sizes`` (``like``: only layers whose
    granularity matches it count as pruned, as in :func:`plan_at`)."""
    total = sum(sizes.values())
    if not total:
        return 0.0
    pruned = 0.0
    for n, size in sizes.items():
        lp = plan.get(n)
        if like is not None and like.get(n).granularity != lp.granularity:
            continue
        pruned += lp.sparsity * size
    return pruned / total


def iterative_plans(target: Plan, start: Plan, steps: int, spacing: str = "geometric",
                    levels: tuple[float, ...] = (), sizes: dict[str, int] | None = None) -> list[Plan]:
    """The plan of each iterative step (the last is ``target``). ``levels``: the overall sparsity after each step
    (the target is appended when the last level is below it)."""
    if levels:
        if sizes is None:
            raise ValueError("levels need the layer sizes")
        s1 = overall_sparsity(target, sizes)
        if any(b <= a for a, b in zip(levels, levels[1:])):
            raise PlanError(f"Step sparsities must increase ({', '.join(f'{v:g}' for v in levels)}).")
        if levels[-1] > s1 + 1e-6:
            raise PlanError(f"The last step sparsity {levels[-1]:g} is above the plan's sparsity {s1:.4g}; the plan "
                            "is always the last step.")
        plans = [plan_at_level(target, start, v, sizes) for v in levels]
        if plans[-1] is not target:
            plans.append(target)
        return plans
    return [plan_at(target, start, j / steps, spacing) for j in range(1, steps + 1)]


# ---------------------------------------------------------------------------- AGP


def agp_fraction(t: float, end: float = AGP_END) -> float:
    """Share of the way from s_i to s_f at training progress t in [0, 1]: the cubic 1 - (1 - t/end)^3, then 1."""
    x = min(max(t / end, 0.0), 1.0) if end > 0 else 1.0
    return 1.0 - (1.0 - x) ** 3


@dataclass(frozen=True)
class AgpTimetable:
    """When AGP recomputes its masks: before training batch ``it`` (0-based over the whole run), at fraction
    ``frac`` of the way to the target. The last entry has frac 1.0 and is ``end_iteration``."""

    updates: tuple[tuple[int, float], ...]
    total: int

    @property
    def end_iteration(self) -> int:
        return self.updates[-1][0] if self.updates else 0


def agp_timetable(total: int, end: float = AGP_END, updates: int = AGP_UPDATES) -> AgpTimetable:
    """Mask updates every int(total * end / updates) iterations along the cubic; the target comes with the first
    update at or after end * total (never after the last batch, so at least one batch trains at the final
    sparsity)."""
    total = max(1, total)
    prune_its = end * total
    every = max(1, int(prune_its / max(1, updates)))
    # the target at the first update at or after end * T, and never after the last batch
    last = min(max(1, math.ceil(prune_its / every - 1e-9)) * every, total - 1) if total > 1 else 0
    out: list[tuple[int, float]] = []
    it = every
    while it < last:
        f = agp_fraction(it / total, end)
        if f >= 1.0:
            break
        out.append((it, f))
        it += every
    out.append((last, 1.0))
    return AgpTimetable(tuple(out), total)


# ---------------------------------------------------------------------------- learning-rate phases


def lr_phases(schedule: str, steps: int, epochs: int, per_epoch: int, rewind: bool,
              agp_end_iteration: int = 0) -> list[tuple[int, int, bool]]:
    """The learning-rate phases of a run as (first iteration, length, anneal) over the whole run's iterations.

    Each phase starts at the configured rate; ``anneal``: the cosine (when it is on) takes it to 0 over the
    phase, else it stays. With ``rewind`` (learning-rate rewinding, Renda et al. 2020) every pruning step of an
    iterative run restarts the schedule, and AGP prunes at the full rate and then re-trains at the final
    sparsity with the whole schedule; without it one schedule spans the whole run (fine-tuning at whatever small
    rate the schedule has reached)."""
    per_step = epochs * per_epoch
    total = per_step * steps
    if not rewind:
        return [(0, total, True)]
    if schedule == "iterative":
        return [(j * per_step, per_step, True) for j in range(steps)]
    if schedule == "agp" and 0 < agp_end_iteration < total:
        return [(0, agp_end_iteration, AGP_ANNEAL_PRUNING),
                (agp_end_iteration, total - agp_end_iteration, True)]
    return [(0, total, True)]
