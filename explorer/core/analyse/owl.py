"""Per-layer sparsity from a per-layer statistic, around a target: OWL's outlier ratio and the heavy-tail alpha.

- **Outlier ratio** (OWL, Yin et al. 2024, "Outlier Weighed Layerwise sparsity"): with wanda's score
  A_ij = |W_ij|·‖X_j‖₂ (the input norms from the calibration samples), the share of scores above M × their mean.
  Like the paper, the ratio is taken per *block* when the model has a stack of blocks (``model/blocks.py``: the
  scores of all the block's layers pooled, one ratio and one sparsity for the block); layers outside any block
  (an LM head, a CNN stem, a model without blocks) are units of their own.
- **Alpha** (weightwatcher / AlphaPruning, Martin & Mahoney; Lu et al. 2024): the power-law exponent of the tail
  of the eigenvalue spectrum of WᵀW (the squared singular values; a conv reshaped to out × in·k·k), fitted with
  the Hill (continuous maximum-likelihood) estimator, the tail's start x_min chosen by Clauset's rule (the one that
  minimises the Kolmogorov-Smirnov distance). Data-free. Lower alpha = heavier tail = better trained. A unit's
  alpha is the mean of its layers'.

Both map to sparsities the same way: the unit statistic is scaled linearly onto [-λ, +λ] (OWL: more outliers ->
less sparsity; alpha: lower alpha -> less sparsity), and a common shift (found by bisection) makes the
parameter-weighted mean equal the target S, every layer clipped to [0, 1] -- so the plan meets S by weight count
(up to each layer's rounding to whole units). Equal statistics everywhere give the uniform plan.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import PlanError
from ..model.blocks import find_blocks
from ..prune.criteria import ScoreContext, get_criterion
from ..prune.plan import LayerPlan, Plan

if TYPE_CHECKING:
    from ..prune.state_view import StateView

ALLOCATIONS = ("uniform", "owl", "alpha")
OWL_M = 5.0           # the paper's M for LLaMA
OWL_LAMBDA = 0.08     # the paper's λ: the largest deviation from the target sparsity
MIN_EIGENVALUES = 5   # fewer than this: no tail to fit (alpha is None)


@dataclass
class LayerAllocation:
    plan: Plan
    method: str
    target: float
    sparsities: dict[str, float]
    statistic: dict[str, float | None]       # per layer: its outlier ratio or alpha
    units: dict[str, list[str]] = field(default_factory=dict)   # unit (block path or layer) -> its layers
    settings: dict = field(default_factory=dict)

    def record(self) -> dict:
        """What the recipe and report record (the plan's per-layer sparsities reproduce it)."""
        return {"method": self.method, "target_sparsity": self.target, **self.settings,
                "level": "block" if any(len(v) > 1 for v in self.units.values()) else "layer",
                "statistic": {k: (None if v is None else round(v, 6)) for k, v in self.statistic.items()}}


# ---------------------------------------------------------------- statistics

def _matrix(state: StateView, name: str) -> torch.Tensor:
    info = state.layer(name)
    w = state.base_state()[info.key].detach().float()
    if info.transposed:
        w = w.t()
    return w


def wanda_scores(state: StateView, name: str, norms: dict[str, torch.Tensor]) -> torch.Tensor:
    """|W_ij|·‖X_j‖ of one layer (wanda's element score, computed by the wanda criterion itself)."""
    ctx = ScoreContext(layer=name, statistic=lambda kind, layer: norms.get(layer))
    return get_criterion("wanda").element_scores(_matrix(state, name), ctx)


def outlier_ratios(state: StateView, names: list[str] | None = None, m: float = OWL_M, units=None,
                   progress=None, cancel=None) -> dict[str, float]:
    """{layer: outlier ratio of its unit} (see the module's docstring); needs calibration samples."""
    _check_m(m)
    names = list(names or state.layer_names)
    units = units or layer_units(state, names)
    norms = state.calibration.statistic_of("input_norm", progress=progress, cancel=cancel)
    out: dict[str, float] = {}
    for members in units.values():
        if cancel is not None:
            cancel.check()
        scores = [wanda_scores(state, n, norms).flatten() for n in members]
        total = sum(s.numel() for s in scores)
        mean = sum(float(s.double().sum()) for s in scores) / max(1, total)
        above = sum(int((s > m * mean).sum()) for s in scores)
        for n in members:
            out[n] = above / max(1, total)
    return out


def hill_alpha(eigs) -> float | None:
    """Power-law exponent of the tail of ``eigs`` (Hill MLE; x_min by the minimal KS distance); None if too few."""
    x = np.sort(np.asarray(eigs, dtype=np.float64))
    x = x[x > x.max() * 1e-12] if x.size else x
    n = x.size
    if n < MIN_EIGENVALUES:
        return None
    logs = np.log(x)
    best, best_d = None, math.inf
    # candidates: every x_min leaving at least MIN_EIGENVALUES in the tail
    for k in range(0, n - MIN_EIGENVALUES + 1):
        tail = logs[k:] - logs[k]
        s = tail.sum()
        if s <= 0:
            continue
        cnt = n - k
        alpha = 1.0 + cnt / s
        model_cdf = 1.0 - np.exp(-(alpha - 1.0) * tail)          # 1 - (x/x_min)^(1-alpha)
        emp = np.arange(cnt) / cnt
        d = float(np.max(np.abs(model_cdf - emp)))
        if d < best_d:
            best, best_d = float(alpha), d
    return best


def layer_alpha(weight: torch.Tensor) -> float | None:
    """The heavy-tail alpha of one weight (out × rest): its squared singular values' tail exponent."""
    w = weight.detach().float().reshape(weight.shape[0], -1)
    return hill_alpha((torch.linalg.svdvals(w) ** 2).numpy())


def alphas(state: StateView, names: list[str] | None = None, cancel=None) -> dict[str, float | None]:
    out = {}
    for n in names or state.layer_names:
        if cancel is not None:
            cancel.check()
        out[n] = layer_alpha(_matrix(state, n))
    return out


# ---------------------------------------------------------------- units and the mapping

def layer_units(state: StateView, names: list[str]) -> dict[str, list[str]]:
    """{unit: its layers}: one unit per block of the model's block stack, one per layer outside any block."""
    stack = find_blocks(state.module)
    units: dict[str, list[str]] = {}
    paths = stack.paths if stack is not None else []
    for n in names:
        home = next((p for p in paths if n.startswith(p + ".")), n)
        units.setdefault(home, []).append(n)
    return units


def meet_target(target: float, deviation: dict[str, float], params: dict[str, int]) -> dict[str, float]:
    """s_u = clip(target - deviation_u + c, 0, 1) with c chosen so the param-weighted mean of s is ``target``."""
    total = sum(params.values())
    if total == 0:
        return {u: target for u in deviation}

    def mean(c):
        return sum(params[u] * min(1.0, max(0.0, target - d + c)) for u, d in deviation.items()) / total

    lo, hi = -2.0, 2.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if mean(mid) < target:
            lo = mid
        else:
            hi = mid
    c = (lo + hi) / 2
    return {u: min(1.0, max(0.0, target - d + c)) for u, d in deviation.items()}


def _deviations(stat: dict[str, float], lam: float, more_is_denser: bool) -> dict[str, float]:
    """Each unit's statistic scaled onto [-lam, lam] (positive = less sparse)."""
    lo, hi = min(stat.values()), max(stat.values())
    if hi - lo <= 1e-12:
        return {u: 0.0 for u in stat}
    return {u: (2 * (v - lo) / (hi - lo) - 1) * lam * (1 if more_is_denser else -1) for u, v in stat.items()}


def _check_m(m) -> None:
    if not isinstance(m, (int, float)) or math.isnan(m) or m <= 0:
        raise PlanError(f"OWL's M (--owl-m) must be a positive number, e.g. 5 (got {m}).")


def _check(target, lam) -> None:
    if not isinstance(target, (int, float)) or math.isnan(target) or not 0.0 <= target <= 1.0:
        raise PlanError(f"The target sparsity must be between 0 and 1 (got {target}).")
    if not isinstance(lam, (int, float)) or math.isnan(lam) or not 0.0 <= lam <= 0.5:
        raise PlanError(f"The largest deviation λ (--owl-lambda) must be between 0 and 0.5 (got {lam}).",
                        "The OWL paper uses 0.08.")


def fitting_layers(state: StateView, names: list[str], target: float, granularity: str, criterion: str,
                   strict: bool = False) -> tuple[list[str], dict[str, str]]:
    """(the layers ``granularity``/``criterion`` fit, {layer: why not} for the others); refuses when none fits
    (or, ``strict``, when any does not)."""
    proto = LayerPlan(target, granularity, criterion)
    fits, skipped = [], {}
    for n in names:
        try:
            state.check_layer_plan(n, proto)
            fits.append(n)
        except PlanError as e:
            if strict:
                raise
            skipped[n] = e.message
    if not fits:
        raise PlanError(f"No layer fits {granularity} granularity with the {criterion} criterion"
                        + (f": {next(iter(skipped.values()))}" if skipped else "."))
    return fits, skipped


def allocate(state: StateView, method: str, target: float, names: list[str] | None = None,
             granularity: str = "element", criterion: str = "l1", m: float = OWL_M, lam: float = OWL_LAMBDA,
             progress=None, cancel=None) -> LayerAllocation:
    """The plan of ``method`` (``uniform``, ``owl``, ``alpha``) at overall sparsity ``target`` over ``names``."""
    if method not in ALLOCATIONS:
        raise PlanError(f"Unknown allocation '{method}'; use {', '.join(ALLOCATIONS)}.")
    _check(target, lam)
    names = list(names or state.layer_names)
    units = layer_units(state, names)
    params = {u: sum(state.layer(n).params for n in ms) for u, ms in units.items()}
    settings: dict = {}
    if method == "uniform":
        stat: dict[str, float | None] = {n: None for n in names}
        dev = {u: 0.0 for u in units}
    elif method == "owl":
        stat = dict(outlier_ratios(state, names, m, units, progress, cancel))
        dev = _deviations({u: stat[ms[0]] for u, ms in units.items()}, lam, more_is_denser=True)
        settings = {"m": m, "lambda": lam}
    else:
        stat = alphas(state, names, cancel)
        per_unit = {}
        for u, ms in units.items():
            vals = [stat[n] for n in ms if stat[n] is not None]
            per_unit[u] = sum(vals) / len(vals) if vals else None
        known = [v for v in per_unit.values() if v is not None]
        fill = sum(known) / len(known) if known else 0.0     # a unit with no fit gets the mean: no deviation
        dev = _deviations({u: (v if v is not None else fill) for u, v in per_unit.items()}, lam,
                          more_is_denser=False)
        settings = {"lambda": lam}
    sps_u = meet_target(target, dev, params)
    sps = {n: sps_u[u] for u, ms in units.items() for n in ms}
    plan = Plan({n: LayerPlan(s, granularity, criterion) for n, s in sps.items()}, "local", target)
    return LayerAllocation(plan, method, target, sps, stat, units, settings)


@dataclass
class LayerDiagnostics:
    """The layer table's Outliers and Alpha columns: per layer (not pooled per block)."""
    outliers: dict[str, float] | None       # None without calibration data
    alpha: dict[str, float | None]
    m: float = OWL_M


def has_calibration_data(state: StateView) -> bool:
    return state.dataset.size("train") > 0 and not isinstance(state.module, torch.jit.ScriptModule)


def diagnose(state: StateView, m: float = OWL_M, progress=None, cancel=None) -> LayerDiagnostics:
    """Each layer's own outlier ratio (when there are calibration samples) and heavy-tail alpha."""
    names = list(state.layer_names)
    out = (outlier_ratios(state, names, m, {n: [n] for n in names}, progress, cancel)
           if has_calibration_data(state) else None)
    return LayerDiagnostics(out, alphas(state, names, cancel), m)
