"""Automatic per-layer sparsity from a sensitivity scan.

Two ways to ask:

- an allowed accuracy drop per layer: every layer gets the highest measured
  sparsity whose accuracy stays within the drop (the lab's approach, with its
  reference line), capped;
- a target (overall sparsity, sparse size in bytes, or MACs): greedy,
  parameter-weighted -- repeatedly raise the layer that buys the most
  (weights, bytes or MACs; or latency, by the balance) per point of predicted
  accuracy lost, until the target is met.

Only measured points are used (never extrapolated). The predicted accuracy
adds the per-layer drops (a first-order estimate the window then checks by
measuring). Linked layers (a channel group) move together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import PlanError
from ..prune.plan import LayerPlan, Plan
from .sensitivity import ScanResult, read_scan

if TYPE_CHECKING:
    from ..prune.state_view import StateView

TARGET_KINDS = ("sparsity", "size", "macs")


@dataclass
class Allocation:
    plan: Plan
    sparsities: dict[str, float]
    predicted_accuracy: float
    predicted_drop: float
    sparsity: float                 # overall, of the prunable weights
    notes: list[str] = field(default_factory=list)

    def info(self) -> dict:
        return {"sparsity": self.sparsity, "predicted_accuracy": self.predicted_accuracy,
                "predicted_drop": self.predicted_drop, "layers": self.sparsities, "notes": self.notes}


@dataclass
class _Entity:
    names: list[str]
    params: int
    macs: int
    rows: int
    accs: list[float | None]
    lats: list[float | None] | None
    level: int = -1                 # index into sparsities (-1 = dense)


def _entities(session: StateView, scan: ScanResult) -> list[_Entity]:
    if not scan.layers:
        raise PlanError("The sensitivity scan has no layers, so there is nothing to allocate.",
                        "Scan the model again (some layers may not fit the scan's granularity).")
    known = set(session.layer_names)
    missing = [l["name"] for l in scan.layers if l["name"] not in known]
    if missing:
        raise PlanError(f"The scan names layers this model does not have: {', '.join(missing[:5])}.",
                        f"It was made for {scan.model}; open that model or scan this one.")
    seen: dict[tuple, _Entity] = {}
    out = []
    for l in scan.layers:
        group = tuple(l.get("group") or [l["name"]])
        if group in seen:
            continue
        names = [n for n in group if n in known]
        ent = _Entity(names=names, params=sum(session.layer(n).params for n in names),
                      macs=sum(session.layer(n).macs for n in names), rows=sum(session.layer(n).matrix_shape[0] for n in names),
                      accs=list(l["accuracy"]), lats=l.get("latency_ms"))
        seen[group] = ent
        out.append(ent)
    return out


def _drop(scan: ScanResult, acc: float | None) -> float:
    """How much worse than dense (accuracy points, or perplexity increase in percent): never negative."""
    return max(0.0, scan.measure.drop(scan.dense_accuracy, acc)) if acc is not None else float("inf")


def _finish(session: StateView, scan: ScanResult, ents: list[_Entity], notes: list[str]) -> Allocation:
    sps = {}
    drop = 0.0
    for e in ents:
        s = scan.sparsities[e.level] if e.level >= 0 else 0.0
        for n in e.names:
            sps[n] = s
        if e.level >= 0:
            drop += _drop(scan, e.accs[e.level])
    plan = _plan(scan, ents)
    # additive estimate, floored at 0: layers pruned together interact, so this is a first-order guide
    predicted = scan.measure.floor(scan.dense_accuracy, drop)
    return Allocation(plan=plan, sparsities=sps, predicted_accuracy=max(0.0, predicted),
                      predicted_drop=drop, sparsity=session.totals(plan).sparsity, notes=notes)


def _plan(scan: ScanResult, ents: list[_Entity]) -> Plan:
    layers = {n: LayerPlan(scan.sparsities[e.level], scan.granularity, scan.criterion)
              for e in ents if e.level >= 0 for n in e.names}
    return Plan(layers, "local", None)


def allocate_by_drop(session: StateView, scan: ScanResult, max_drop: float, cap: float = 0.95) -> Allocation:
    if max_drop is None or not isinstance(max_drop, (int, float)) or math.isnan(max_drop) or max_drop < 0:
        raise PlanError(f"The allowed drop must be a non-negative number of points (got {max_drop}).")
    ents = _entities(session, scan)
    for e in ents:
        best = -1
        for i, s in enumerate(scan.sparsities):
            if s > cap + 1e-12:
                break
            a = e.accs[i]
            if a is None:
                break                 # not measured: never extrapolate beyond it
            if _drop(scan, a) <= max_drop:
                best = i
        e.level = best
    unit = "points" if scan.measure.higher_is_better else "% perplexity increase"
    notes = [f"each layer: highest measured sparsity within {max_drop:g} {unit}"]
    seq = scan.sequential
    if seq and (not any(abs(max_drop - d) < 1e-9 for d in seq.get("drops", ())) or cap > seq.get("cap", 1.0) + 1e-12):
        notes.append(f"the sequential scan decided its points at drops {', '.join(f'{d:g}' for d in seq['drops'])} "
                     f"(cap {seq.get('cap', 1.0):g}); at {max_drop:g} some points are sampled estimates -- scan with "
                     f"--drops {max_drop:g} or --exact for the exact allocation")
    return _finish(session, scan, ents, notes)


def allocate_to_target(session: StateView, scan: ScanResult, target: float, kind: str = "sparsity", cap: float = 0.95,
                       balance: float = 0.0) -> Allocation:
    """Greedy: raise the layer with the best gain per point of predicted drop until ``target`` is met.

    ``kind``: 'sparsity' (overall share of zero prunable weights, 0..1), 'size' (sparse bytes of the
    whole model), 'macs' (MACs with a nonzero weight). ``balance`` in [0, 1] weights measured latency
    gains against weight gains (needs a scan with latency).
    """
    if kind not in TARGET_KINDS:
        raise PlanError(f"Unknown target kind '{kind}'; use {', '.join(TARGET_KINDS)}.")
    if not 0.0 <= balance <= 1.0:
        raise PlanError("The balance must be between 0 (accuracy/size) and 1 (latency).")
    ents = _entities(session, scan)
    if balance > 0 and not all(e.lats for e in ents):
        raise PlanError("The balance slider needs latency sensitivity: rescan with latency measured.")
    prof = session.profile
    total_params = prof.prunable_params
    if kind == "sparsity" and not 0.0 <= target <= 1.0:
        raise PlanError(f"Target sparsity {target} is outside [0, 1].")
    sps = scan.sparsities

    def level_s(e, lvl):
        return sps[lvl] if lvl >= 0 else 0.0

    def objective() -> float:
        # measured on the real masks (round(s*N) groups per layer, existing zeros included), not nominal s
        t = session.totals(_plan(scan, ents))
        if kind == "sparsity":
            return t.sparsity
        if kind == "macs":
            return t.nonzero_macs
        return t.sparse_bytes

    def reached() -> bool:
        v = objective()
        return v >= target if kind == "sparsity" else v <= target

    lat_dense = scan.dense_latency_ms or 0.0
    while not reached():
        best, best_score = None, -1.0
        for e in ents:
            nxt = e.level + 1
            if nxt >= len(sps) or sps[nxt] > cap + 1e-12 or e.accs[nxt] is None:
                continue
            d_now = _drop(scan, e.accs[e.level]) if e.level >= 0 else 0.0
            cost = max(0.0, _drop(scan, e.accs[nxt]) - d_now) + 1e-3
            ds = sps[nxt] - level_s(e, e.level)
            gain = (e.macs if kind == "macs" else e.params) * ds / max(1, prof.total_macs if kind == "macs" else total_params)
            if balance > 0:
                l_now = e.lats[e.level] if e.level >= 0 else lat_dense
                lat_gain = max(0.0, (l_now or 0) - (e.lats[nxt] or 0)) / max(lat_dense, 1e-9)
                gain = (1 - balance) * gain + balance * lat_gain
            score = gain / cost
            if score > best_score:
                best, best_score = e, score
        if best is None:
            return _finish(session, scan, ents, ["target not reachable within the measured points and the cap"])
        best.level += 1
    return _finish(session, scan, ents, [f"greedy to {kind} target {target:g}"])


def allocate_from_file(session: StateView, path, max_drop: float, cap: float = 0.95) -> tuple[Plan, dict]:
    scan = read_scan(path)
    a = allocate_by_drop(session, scan, max_drop, cap)
    return a.plan, a.info()
