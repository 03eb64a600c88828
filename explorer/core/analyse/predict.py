"""Instant sensitivity estimate: the loss increase of pruning one layer alone, predicted without a scan.

For a layer pruned alone at sparsity s (with the scan's granularity and criterion) the estimate combines two
numbers, each where it holds:

- the second-order (Optimal Brain Damage) model ``quadratic`` = Σ over the pruned weights of ½ · G_ii · w_i²,
  with G the *true* Fisher diagonal: squared per-sample gradients at labels drawn from the model's own softmax
  (seeded), whose expectation is the Gauss-Newton diagonal (``prune/calibration.py``, statistic ``true_fisher``).
  Unlike the empirical Fisher (the gradients at the true labels, what the ``hessian`` criterion ranks by), it
  does not vanish at a model that fits its samples: the empirical Fisher made this estimate 10^2-10^4x too small.
  It is noise-free, but it stays a diagonal second-order model: pruning 40-90 % of a layer is far outside the
  regime where that holds, and it still predicts several times (up to ~80x) too little there;
- ``sampled``: the loss increase measured on a small sample of the scan's split -- the layer really pruned,
  one (suffix-replayed) forward pass of those samples per point. Exact in expectation at any sparsity. At a
  trained model a few low-margin samples carry most of the change, so the sample is stratified
  (``loss_sample.py``): the split's samples are ranked once by their dense loss, the :data:`SAMPLE` x 3/4
  hardest are taken exactly and the rest of the budget is a seeded draw from the others, weighted by its inverse
  sampling fraction; the change is the weighted mean of per-sample differences (pruned minus dense loss of the
  same sample). Unbiased for the whole split's change (its first ``POOL`` samples), with the spread of the easy
  samples' small changes only -- the first 128 samples of the split, the estimate before, missed the measured
  increase by up to 22x at 40-50 %.

The estimate is the larger of the two: the sampled increase wherever the loss really grows, the quadratic where
the sample cannot resolve the increase (it is below the quadratic floor, or negative). ``sample=0`` gives the
quadratic alone (no forward pass at all). Every curve is a sum over masks plus a few small forward passes --
a fraction of a second to a few seconds on the built-in models -- so the Sensitivity tab draws these predicted
curves before the scan measures anything; each layer's measured loss increase then replaces its prediction, and
:func:`prediction_error` says how far off the prediction was. The measured increase is relative to the model
the scan starts from (``state``: default the kept weights).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..errors import ExplorerError, PlanError
from ..jobs import CancelToken, ProgressFn, ProgressMeter
from ..prune.granularity import Channel, get_granularity
from ..prune.masks import masked_tensors
from ..prune.plan import LayerPlan, Plan
from .loss_sample import POOL, SampledLossChange

if TYPE_CHECKING:
    from ..prune.state_view import StateView

SAMPLE = 128     # samples of the scan's split the estimate measures the loss on


@dataclass
class Prediction:
    sparsities: list[float]
    granularity: str
    criterion: str
    layers: list[dict] = field(default_factory=list)    # [{"name", "delta_loss", "quadratic", "sampled"}]
    samples: int = 0          # calibration samples of the curvature
    sampled: int = 0          # samples of ``split`` the loss was measured on (0: the quadratic alone)
    split: str = "val"
    population: int = 0       # the samples of ``split`` they were drawn from (ranked by their dense loss)
    exact: int = 0            # of ``sampled``: the highest dense losses, taken exactly (the rest drawn, seeded)
    precision: str = "fp32"   # what the sampled forwards ran in ('bf16' on CPUs with bfloat16 matrix units)
    seconds: float = 0.0

    def layer(self, name: str) -> dict:
        for l in self.layers:
            if l["name"] == name:
                return l
        raise KeyError(name)


def predict_loss_increase(session: StateView, sparsities: list[float], granularity="element", criterion="l1",
                          layers: list[str] | None = None, progress: ProgressFn | None = None,
                          cancel: CancelToken | None = None, sample: int = SAMPLE, split: str = "val",
                          state: dict[str, torch.Tensor] | None = None, curvature: str = "true_fisher",
                          pool: int = POOL, seed: int = 0, stratify: bool = True,
                          precision: str = "auto") -> Prediction:
    """Predicted loss increase of every layer (channel: its whole group) pruned alone at each sparsity:
    ``delta_loss`` = max(``quadratic``, ``sampled``) per point (see the module's text). ``sample``: how many
    samples of ``split`` the loss is measured on (0: the quadratic alone), stratified over its first ``pool``
    samples with the draw's ``seed`` (``stratify=False``: the first ``sample`` samples, the estimate before
    issue 25's stratification, kept for the benchmark's comparison; ``precision``: of those forwards, see
    :class:`~explorer.core.analyse.loss_sample.SampledLossChange`); ``state``: the model the layers are
    pruned from (default the kept weights; the prunable weights always come from the kept ones, as in a scan);
    ``curvature``: the calibration statistic of the quadratic ('fisher': the empirical Fisher, the old estimate)."""
    if not session.dataset.has_labels:
        raise ExplorerError("The loss prediction needs the Fisher, which needs labels; "
                            f"{session.dataset.spec} has none.", "Choose a labelled dataset.")
    t0 = time.perf_counter()
    gran = get_granularity(granularity)
    if curvature not in ("true_fisher", "fisher"):
        raise ValueError(curvature)
    diag = session.calibration.statistic_of(curvature, progress=progress, cancel=cancel)
    base = session.base_state()
    n = min(int(sample), session.dataset.size(split), int(pool)) if sample else 0
    out = Prediction(list(sparsities), gran.name, str(criterion), samples=session.calibration_samples,
                     sampled=n, split=split)
    names = layers or session.layer_names
    units = []
    for name in names:
        try:
            session.check_layer_plan(name, LayerPlan(0.5, gran, criterion))
        except PlanError:
            if layers:
                raise
            continue
        members = tuple(session.linked_layers(name)) if isinstance(gran, Channel) else (name,)
        units.append((name, members))
    meter = ProgressMeter(progress, max(1, len(units) * len(sparsities)), "predicting the loss increase")
    sampler = SampledLossChange(session.model_copy(state), session.dataset, split, n, pool, seed, cancel,
                                stratify, precision, session.profile.total_macs) if n else None
    curves: dict[tuple, dict] = {}
    for name, members in units:
        if cancel is not None:
            cancel.check()
        if members in curves:     # a linked layer: same group, same curve
            out.layers.append({"name": name, **{k: list(v) for k, v in curves[members].items()},
                               "group": list(members)})
            meter.step(len(sparsities))
            continue
        keys = {m: session.profile.weight_key(m) for m in members}
        saliency = {m: 0.5 * diag[m].double() * base[keys[m]].double() ** 2 for m in members}
        quad, sampled, variants = [], [], []
        per = sampler.per_pass(len(sparsities)) if n else 1
        for i, s in enumerate(sparsities):
            masks, extra = session.materialize(Plan({m: LayerPlan(s, gran, criterion) for m in members}))
            quad.append(float(sum(saliency[m][~masks[keys[m]]].sum() for m in members if keys[m] in masks)))
            if n:
                variants.append(masked_tensors(base, masks, extra))
                if len(variants) == per or i == len(sparsities) - 1:   # a few variants in memory at a time
                    sampled += sampler.changes(variants, cancel)
                    variants = []
            meter.step(1)
        entry = {"delta_loss": [max(q, m) for q, m in zip(quad, sampled)] if n else list(quad), "quadratic": quad}
        if n:
            entry["sampled"] = sampled
        curves[members] = entry
        out.layers.append({"name": name, **entry})
    if sampler is not None:     # (the replay may have fallen back to full float32 forwards on its first use)
        out.population, out.exact, out.precision = sampler.pool, sampler.sample.top, sampler.precision
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


def attach_prediction(result, prediction) -> None:
    """Record ``prediction``'s loss per layer on a scan ``result`` (sensitivity.ScanResult) as ``"predicted_loss"``
    (the scan's dense loss plus the predicted increase, one per sparsity: the same quantity as ``"loss"``); nothing
    when it predicts other points."""
    if prediction is None or result.dense_loss is None or list(prediction.sparsities) != list(result.sparsities):
        return
    predicted = {l["name"]: l["delta_loss"] for l in prediction.layers}
    for l in result.layers:
        if l["name"] in predicted:
            l["predicted_loss"] = [result.dense_loss + d for d in predicted[l["name"]]]
    # every number says its split ("predicted_loss_from"): the estimate may read the scan's own split (default)
    result.predicted_loss_from = {"split": prediction.split, "samples": prediction.sampled,
                                  "population": prediction.population, "exact": prediction.exact,
                                  "precision": prediction.precision, "calibration_samples": prediction.samples}
