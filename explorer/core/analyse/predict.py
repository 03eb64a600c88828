"""Instant sensitivity estimate: the loss increase the second-order (OBD) saliency predicts, without evaluating.

For a layer pruned alone at sparsity s (with the scan's granularity and criterion), the loss grows by about

    ΔL ≈ Σ over the pruned weights of ½ · H_ii · w_i²

(Optimal Brain Damage: a trained model sits at a minimum, so the first-order term vanishes and the Hessian's
off-diagonal terms are dropped), with H_ii the empirical Fisher diagonal over the calibration samples. Once the
Fisher is known every curve is a sum over masks -- a fraction of a second on the built-in models -- so the
Sensitivity tab draws these predicted curves before the scan measures anything; each layer's measured loss
increase then replaces its prediction, and :func:`prediction_error` says how far off the prediction was.
The measured increase is relative to the model the scan starts from (the dense one when nothing is applied).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..errors import ExplorerError, PlanError
from ..jobs import CancelToken, ProgressFn, ProgressMeter
from ..prune.granularity import Channel, get_granularity
from ..prune.plan import LayerPlan, Plan


@dataclass
class Prediction:
    sparsities: list[float]
    granularity: str
    criterion: str
    layers: list[dict] = field(default_factory=list)    # [{"name", "delta_loss": [...]}]
    samples: int = 0
    seconds: float = 0.0

    def layer(self, name: str) -> dict:
        for l in self.layers:
            if l["name"] == name:
                return l
        raise KeyError(name)


def predict_loss_increase(session, sparsities: list[float], granularity="element", criterion="l1",
                          layers: list[str] | None = None, progress: ProgressFn | None = None,
                          cancel: CancelToken | None = None) -> Prediction:
    """Predicted loss increase of every layer (channel: its whole group) pruned alone at each sparsity."""
    if not session.dataset.has_labels:
        raise ExplorerError("The loss prediction needs the Fisher, which needs labels; "
                            f"{session.dataset.spec} has none.", "Choose a labelled dataset.")
    t0 = time.perf_counter()
    gran = get_granularity(granularity)
    fisher = session.calibration.statistic_of("fisher", progress=progress, cancel=cancel)
    base = session.base_state()
    out = Prediction(list(sparsities), gran.name, str(criterion), samples=session.calibration_samples)
    names = layers or session.layer_names
    units = []
    for n in names:
        try:
            session.check_layer_plan(n, LayerPlan(0.5, gran, criterion))
        except PlanError:
            if layers:
                raise
            continue
        members = tuple(session.linked_layers(n)) if isinstance(gran, Channel) else (n,)
        units.append((n, members))
    meter = ProgressMeter(progress, max(1, len(units) * len(sparsities)), "predicting the loss increase")
    curves: dict[tuple, list[float]] = {}
    for n, members in units:
        if cancel is not None:
            cancel.check()
        if members in curves:     # a linked layer: same group, same curve
            out.layers.append({"name": n, "delta_loss": list(curves[members]), "group": list(members)})
            meter.step(len(sparsities))
            continue
        keys = {m: session.profile.weight_key(m) for m in members}
        saliency = {m: 0.5 * fisher[m].double() * base[keys[m]].double() ** 2 for m in members}
        curve = []
        for s in sparsities:
            masks, _ = session.materialize(Plan({m: LayerPlan(s, gran, criterion) for m in members}))
            curve.append(float(sum(saliency[m][~masks[keys[m]]].sum() for m in members if keys[m] in masks)))
            meter.step(1)
        curves[members] = curve
        out.layers.append({"name": n, "delta_loss": curve})
    out.seconds = time.perf_counter() - t0
    return out


def prediction_error(predicted: list[float | None], measured: list[float | None]) -> dict | None:
    """How far a predicted loss-increase curve is from the measured one, over the points measured in both:
    ``mae`` (mean absolute error), ``relative`` (that error over the mean measured increase) and ``ratio``
    (geometric mean of measured / predicted over the points where both are positive: 1 is exact, 100 means the
    loss grew 100x more than predicted). None without common points."""
    pairs = [(p, m) for p, m in zip(predicted, measured) if p is not None and m is not None]
    if not pairs:
        return None
    p = torch.tensor([a for a, _ in pairs], dtype=torch.float64)
    m = torch.tensor([b for _, b in pairs], dtype=torch.float64)
    mae = float((p - m).abs().mean())
    scale = float(m.abs().mean())
    pos = (p > 0) & (m > 0)
    ratio = float(torch.exp((m[pos].log() - p[pos].log()).mean())) if bool(pos.any()) else None
    return {"mae": mae, "relative": mae / scale if scale > 0 else None, "ratio": ratio, "points": len(pairs)}
