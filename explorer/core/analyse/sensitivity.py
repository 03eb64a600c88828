"""Layer-wise sensitivity scans: accuracy when one layer (or channel group) alone is pruned.

The result equals the naive loop -- for each layer and sparsity: prune only
that layer, evaluate the whole model on the whole split, restore -- but
is computed faster:

- one full forward caches every intermediate value of the split (torch.fx);
- for a layer, only the nodes downstream of it are recomputed (the
  "suffix"); values from outside the suffix (skip connections) come from the
  cache;
- the sparsities of a layer run as one batch: the pruned layer runs once per
  sparsity on its cached input, the rest of the suffix runs once on all of
  them stacked along the batch dimension;
- masks come from the engine's cached rankings (no re-sorting per point).

Models that torch.fx cannot trace, or whose suffix replay does not reproduce
the full forward, fall back to the naive loop (same numbers, slower). With
``channel`` granularity a layer's scan prunes its whole dependency group.
An optional early stop marks skipped points as not measured (None).

A language model's scan measures perplexity (lower is better) instead of accuracy, always with the
plain loop; the JSON then says ``"metric": "perplexity"`` and names its values ``dense_perplexity`` and
``perplexity`` (in memory they sit where accuracies do: ``dense_accuracy`` and ``layer["accuracy"]``
hold the scan's metric values, and ``ScanResult.metric`` says which metric that is).
"""
from __future__ import annotations

import csv as csv_mod
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..checks import number
from ..errors import ExplorerError, PlanError
from ..jobs import CancelToken, Progress, ProgressFn
from ..prune.criteria import Criterion, get_criterion
from ..prune.granularity import Channel, Granularity, get_granularity
from ..prune.masks import masked_tensors
from ..prune.plan import LayerPlan, Plan
from ..train.evaluate import evaluate
from ..train.metric import METRICS, metric_of
from .latency import latency_input, measure_latency, scan_point_latency
from .replay import Replayer
from .screen import SCREENED, build_screen
from .sequential import StagedSplit, order, sequential_row
from .shard import gathered, owner, world_size

if TYPE_CHECKING:
    from ..prune.state_view import StateView

DEFAULT_SPARSITIES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
PRECISIONS = ("auto", "bfloat16", "float32")
CACHE_BUDGET_BYTES = 3 * 2**30     # cached activations of the whole split must fit in this


def parse_sparsities(text) -> list[float]:
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [t for t in str(text).replace(" ", "").split(",") if t]
    if not items:
        raise PlanError("The sparsity list is empty.", "Give values in (0,1), e.g. 0.4,0.5,0.6,0.7,0.8,0.9.")
    out = []
    for t in items:
        try:
            v = float(t)
        except (TypeError, ValueError):
            raise PlanError(f"'{t}' in the sparsity list is not a number.") from None
        if math.isnan(v) or not 0.0 < v < 1.0:
            raise PlanError(f"Sparsity {t} is outside (0, 1).", "A scan probes sparsities strictly between 0 and 1.")
        out.append(v)
    if len(set(out)) != len(out):
        raise PlanError("The sparsity list has duplicates.")
    return sorted(out)


@dataclass
class ScanSpec:
    sparsities: list[float]
    granularity: Granularity = "element"
    criterion: Criterion = "l1"
    layers: list[str] | None = None
    split: str = "val"      # scans choose; choosing happens on the validation split
    early_stop: float | None = None     # accuracy floor (percent); None = off
    latency: bool = False
    latency_runs: int = 10
    latency_batch: int = 1
    # exact (default): every point on the whole split. False: the sequential scan (sequential.py) -- points on
    # a growing seeded sample until what an allocation at ``drops`` (capped at ``cap``) needs is decided; that
    # allocation equals the exact scan's. ``monotone``: also leave out (None) a layer's sparsities above one that
    # fails the loosest drop (exact only when the layer's curve does not recover).
    exact: bool = True
    drops: tuple = (0.5, 1.0, 2.0)
    cap: float = 0.95
    monotone: bool = False
    seed: int = 0
    # the sequential scan's screening precision (screen.py): "auto" (bfloat16 where it is faster, with float32 for
    # the samples it cannot certify), "bfloat16" (always, e.g. tests), "float32" (off)
    precision: str = "auto"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise PlanError(f"Unknown scan precision {self.precision!r}.", f"Choose one of {', '.join(PRECISIONS)}.")
        self.granularity = get_granularity(self.granularity)
        self.criterion = get_criterion(self.criterion)
        if self.criterion == "sparsegpt":
            raise PlanError("The sensitivity scan masks one layer at a time, and sparsegpt's masks come from its "
                            "sweep over the whole network.", "Scan with wanda (sparsegpt's preview) instead.")


@dataclass
class ScanPoint:
    layer: str
    index: int
    sparsity: float
    accuracy: float | None
    latency_ms: float | None = None
    loss: float | None = None           # mean cross-entropy at this point (what the instant estimate predicts)
    dense_loss: float | None = None     # ... and of the model the scan starts from


@dataclass
class ScanResult:
    model: str
    dataset: str
    granularity: str
    criterion: str
    split: str
    dense_accuracy: float
    sparsities: list[float]
    layers: list[dict] = field(default_factory=list)
    method: str = "fast"
    seconds: float = 0.0
    early_stop: float | None = None
    dense_latency_ms: float | None = None
    samples: int = 0
    skipped: dict = field(default_factory=dict)   # layer -> why it was not scanned
    dense_loss: float | None = None
    metric: str = "accuracy"       # what dense_accuracy and the layers' "accuracy" values are (train.metric)
    sequential: dict | None = None  # the sequential scan's settings (drops, stages, monotone, seed); None: exact
    world_size: int = 1            # processes the points were dealt out to (torchrun); recorded when > 1
    predicted_loss_from: dict | None = None   # what "predicted_loss" read (predict.attach_prediction); None: none

    @property
    def measure(self):
        """The scan's :class:`~explorer.core.train.metric.Metric`."""
        return METRICS[self.metric]

    def to_json(self) -> dict:
        d = {"dense_loss": self.dense_loss, "model": self.model, "dataset": self.dataset,
             "granularity": self.granularity,
             "criterion": self.criterion, "dense_accuracy": self.dense_accuracy, "sparsities": self.sparsities,
             "layers": self.layers, "split": self.split, "samples": self.samples, "method": self.method,
             "seconds": self.seconds, "early_stop": self.early_stop, "dense_latency_ms": self.dense_latency_ms,
             "skipped": self.skipped}
        d["exact"] = self.sequential is None       # which scan ran: every point on the whole split, or sequential
        if self.sequential is not None:
            d["sequential"] = self.sequential
        if self.world_size > 1:
            d["world_size"] = self.world_size
        if self.predicted_loss_from is not None:
            d["predicted_loss_from"] = self.predicted_loss_from
        if self.metric != "accuracy":   # the values are named by their metric
            d = {("dense_" + self.metric if k == "dense_accuracy" else k): v for k, v in d.items()}
            d["layers"] = [{(self.metric if k == "accuracy" else k): v for k, v in l.items()} for l in self.layers]
            d["metric"] = self.metric
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ScanResult":
        """Validate a scan loaded from JSON; sparsities are sorted (with their columns)."""
        hint = "Use a JSON written by `pruning-explorer sensitivity` or the window's scan."

        def bad(why: str) -> PlanError:
            return PlanError(f"Not a valid sensitivity scan: {why}.", hint)

        if not isinstance(d, dict):
            raise bad("the file does not hold a JSON object")
        metric = d.get("metric", "accuracy")
        if metric not in METRICS:
            raise bad(f"unknown metric {metric!r}")
        if metric != "accuracy":
            d = {("dense_accuracy" if k == "dense_" + metric else k): v for k, v in d.items()}
            if isinstance(d.get("layers"), list):
                d["layers"] = [{("accuracy" if k == metric else k): v for k, v in l.items()} if isinstance(l, dict)
                               else l for l in d["layers"]]
        top = 100.0 if metric == "accuracy" else float("inf")
        missing = [k for k in ("sparsities", "dense_accuracy", "model", "dataset", "layers") if k not in d]
        if missing:
            raise bad(f"missing entry '{missing[0]}'")
        try:
            if not isinstance(d["sparsities"], list):
                raise PlanError("'sparsities' must be a list")
            sparsities = [number(x, "a sparsity") for x in d["sparsities"]]
            dense = number(d["dense_accuracy"], "dense_" + metric, 0.0, top)
        except PlanError as e:
            raise bad(e.message.rstrip(".")) from None
        model, dataset, layers = d["model"], d["dataset"], d["layers"]
        if not isinstance(model, str) or not isinstance(dataset, str):
            raise bad("'model' and 'dataset' must be text")
        split = d.get("split", "val")
        if split not in ("val", "test", "train"):
            raise bad(f"unknown split {split!r}")
        try:
            parse_sparsities(sparsities)
        except PlanError as e:
            raise bad(e.message.rstrip(".")) from None
        if not isinstance(layers, list):
            raise bad("'layers' must be a list")
        order = sorted(range(len(sparsities)), key=sparsities.__getitem__)
        clean = []
        for l in layers:
            if not isinstance(l, dict) or not isinstance(l.get("name"), str):
                raise bad(f"layer entry {l!r:.60} is not an object with a name (text)")
            group = l.get("group")
            if group is not None and not (isinstance(group, list) and all(isinstance(g, str) for g in group)):
                raise bad(f"the group of layer {l['name']} must be a list of layer names")
            accs = l.get("accuracy")
            if not isinstance(accs, list) or len(accs) != len(sparsities):
                raise bad(f"layer {l['name']} does not have one accuracy per sparsity")
            if any(a is not None and (isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a)
                                      or not 0 <= a <= top) for a in accs):
                raise bad(f"layer {l['name']} has {metric} values out of range (or null for 'not measured')")
            entry = dict(l, accuracy=[None if accs[i] is None else float(accs[i]) for i in order])
            for key in ("latency_ms", "loss", "predicted_loss", "samples", "interval"):
                vals = l.get(key)
                if isinstance(vals, list) and len(vals) == len(sparsities):
                    entry[key] = [vals[i] for i in order]
            clean.append(entry)
        return cls(model=model, dataset=dataset, granularity=str(d.get("granularity", "element")),
                   criterion=str(d.get("criterion", "l1")), split=split,
                   dense_accuracy=dense, sparsities=[sparsities[i] for i in order], layers=clean,
                   method=str(d.get("method", "fast")), seconds=float(d.get("seconds") or 0.0),
                   early_stop=d.get("early_stop"), dense_latency_ms=d.get("dense_latency_ms"),
                   samples=int(d.get("samples") or 0), skipped=dict(d.get("skipped") or {}),
                   dense_loss=d.get("dense_loss"), metric=metric,
                   sequential=d.get("sequential") if isinstance(d.get("sequential"), dict) else None,
                   predicted_loss_from=p if isinstance(p := d.get("predicted_loss_from"), dict) else None,
                   world_size=d["world_size"] if isinstance(d.get("world_size"), int) and d["world_size"] > 1 else 1)

    def layer(self, name: str) -> dict:
        for l in self.layers:
            if l["name"] == name:
                return l
        raise KeyError(name)


def _variant_params(session: StateView, names: tuple[str, ...], lp: LayerPlan, sparsity: float) -> dict[str, torch.Tensor]:
    """Masked tensors of the layers in ``names`` (and their BN/bias entries for channels) at ``sparsity``."""
    plan = Plan({n: LayerPlan(sparsity, lp.granularity, lp.criterion) for n in names})
    return masked_tensors(session.base_state(), *session.materialize(plan))


def _scan_units(session: StateView, spec: ScanSpec) -> list[tuple[str, tuple[str, ...]]]:
    """(row name, layers pruned together) per scanned layer; channel scans prune the whole group."""
    explicit = bool(spec.layers)
    names = spec.layers or session.layer_names
    for n in names:
        session.layer(n)
    gran = spec.granularity
    units, skipped = [], {}
    for n in names:
        lp = LayerPlan(0.5, gran, spec.criterion)
        try:
            session.check_layer_plan(n, lp)
        except PlanError as e:
            if explicit:
                raise
            skipped[n] = e.message
            continue
        members = session.linked_layers(n) if isinstance(gran, Channel) else (n,)
        units.append((n, tuple(members)))
    if not units:
        raise PlanError(f"No layer can be scanned with '{gran.name}' granularity.",
                        "; ".join(list(skipped.values())[:2]))
    return units, skipped


def _dataset_tensors(ds, split: str):
    xs, ys = [], []
    for x, y in ds.batches(split, batch_size=1024):
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ExplorerError(f"The {split} split of {ds.spec} is empty: nothing to scan.")
    return torch.cat(xs), (torch.cat(ys) if ys[0] is not None else None)


def _accuracy(logits: torch.Tensor, y: torch.Tensor, num_classes: int | None) -> float:
    if num_classes and logits.shape[1] > num_classes:
        logits = logits[:, :num_classes]
    return 100.0 * float((logits.argmax(1) == y).sum()) / y.shape[0]


def _loss(logits: torch.Tensor, y: torch.Tensor, num_classes: int | None) -> float:
    if num_classes and logits.shape[1] > num_classes:
        logits = logits[:, :num_classes]
    return float(torch.nn.functional.cross_entropy(torch.nan_to_num(logits, nan=0.0, posinf=1e4, neginf=-1e4), y))


def scan(session: StateView, spec: ScanSpec, progress: ProgressFn | None = None, cancel: CancelToken | None = None,
         naive: bool = False, state: dict[str, torch.Tensor] | None = None,
         device: torch.device | None = None, prediction=None, runtime=None) -> ScanResult:
    """Run a sensitivity scan on the session's current (applied) weights -- or on ``state``, e.g. the
    masked state of a plan not applied yet. Emits a Progress per point with ``data`` = :class:`ScanPoint`.
    ``device``: where the forward passes run (the scanned split is moved there once). ``prediction``: the
    instant estimate of the same sparsities (``analyse/predict.py``), recorded per layer as ``predicted_loss``
    (dense loss + predicted increase) next to the measured ``loss``. ``runtime``: under torchrun, the layers are
    dealt out over its processes and gathered (analyse/shard.py); every process returns the whole result."""
    progress = progress or (lambda p: None)
    ds = session.dataset
    measure = metric_of(ds)
    if not ds.has_labels:
        raise ExplorerError(f"A sensitivity scan measures {measure.name}, which needs labels; {ds.spec} has none.",
                            "Choose a labelled dataset.")
    if measure.name != "accuracy":
        naive = True            # the fast replay computes accuracy from cached logits
    sparsities = parse_sparsities(spec.sparsities)
    units, skipped = _scan_units(session, spec)
    t0 = time.perf_counter()
    # the applied model (or ``state``), copied: the scan swaps weights in and out, never on the live model
    device = device or torch.device("cpu")
    module = session.model_copy(state).to(device)
    lp_for = LayerPlan(0.0, spec.granularity, spec.criterion)
    x, y = _dataset_tensors(ds, spec.split)
    x, y = x.to(device), (y.to(device) if y is not None else None)
    total = len(units) * len(sparsities)
    done = 0

    replayer = None
    method = "naive"
    sequential = not spec.exact and spec.early_stop is None and not spec.latency
    staged, screen, why_float32 = None, None, "off" if spec.precision == "float32" else ""
    current, keys = dict(module.named_parameters()), session.profile.weight_keys
    dense_variant = {keys[n]: current[keys[n]].detach() for n in units[0][1]}   # checks the replays
    if not naive and sequential and spec.precision != "float32":
        screen, why_float32 = build_screen(module, x, y, order(x.shape[0], spec.seed, x.device), ds.num_classes,
                                           dense_variant, spec.precision == "bfloat16", session.module,
                                           CACHE_BUDGET_BYTES)
        if screen is not None:
            dense_acc, dense_loss = screen.dense
            method = "fast"
            staged = StagedSplit(module, x, y, spec.seed, screen=screen)
    if not naive and screen is None:
        try:
            replayer = Replayer(module, x)
            dense_acc = _accuracy(replayer.output, y, ds.num_classes)
            dense_loss = _loss(replayer.output, y, ds.num_classes)
            method = "fast"
            if replayer.cached_bytes() > CACHE_BUDGET_BYTES:
                replayer, method = None, "naive"
        except Exception:
            replayer, method = None, "naive"
    if screen is None and replayer is None:      # (a screen certified the dense accuracy and checked its replay)
        ev = evaluate(module, ds, spec.split, cancel=cancel)
        dense_acc, dense_loss = measure.value(ev), ev.loss
    elif screen is None:
        # check that replaying reproduces the full forward (dense weights as the only variant)
        try:
            again = replayer.run_variants(set(units[0][1]), [dense_variant])
            ok = again.shape == replayer.output.shape and torch.allclose(again, replayer.output, rtol=1e-4, atol=1e-5)
        except Exception:
            ok = False
        if not ok:
            replayer, method = None, "naive"
            ev = evaluate(module, ds, spec.split, cancel=cancel)
            dense_acc, dense_loss = measure.value(ev), ev.loss

    dense_latency = None
    example = None
    if spec.latency:
        if not spec.granularity.structured:
            raise PlanError("Latency sensitivity needs a structured granularity (channel): unstructured zeros do not "
                            "change dense latency.")
        example = latency_input(ds, session.input_shape, spec.latency_batch).to(device)
        dense_latency = measure_latency(module, example, runs=spec.latency_runs, cancel=cancel).median_ms

    result = ScanResult(model=session.model_spec, dataset=ds.spec, granularity=lp_for.granularity,
                        criterion=spec.criterion, split=spec.split, dense_accuracy=dense_acc,
                        sparsities=sparsities, method=method, early_stop=spec.early_stop,
                        dense_latency_ms=dense_latency, samples=int(x.shape[0]), skipped=skipped,
                        dense_loss=dense_loss, metric=measure.name)
    if sequential and replayer is not None:
        staged = StagedSplit(module, x, y, spec.seed, replayer=replayer)
        replayer = None        # the stages replay from here on; free the whole split's cache
    if staged is not None:
        result.sequential = {"drops": list(spec.drops), "cap": spec.cap, "stages": staged.sizes,
                             "monotone": spec.monotone, "seed": spec.seed,
                             "precision": "bfloat16" if screen is not None else "float32"}
        if screen is None and why_float32:
            result.sequential["precision_reason"] = why_float32
    base = session.base_state()
    params_by_name = dict(module.named_parameters())
    by_group: dict[tuple, dict] = {}
    groups = list(dict.fromkeys(m for _, m in units))      # linked rows stay on the process of their group
    mine = [u for u in units if owner(groups.index(u[1]), runtime)]
    total = len(mine) * len(sparsities)
    for row, members in mine:
        if len(members) > 1 and members in by_group:   # a linked layer: same group, same curve
            prev = by_group[members]
            entry = {**prev, "name": row, "params": session.layer(row).params}
            entry.pop(SCREENED, None)
            result.layers.append(entry)
            for i, s in enumerate(sparsities):
                done += 1
                progress(Progress(done / total, f"{row}: same channel group as {prev['name']}",
                                  ScanPoint(row, i, s, prev["accuracy"][i], (prev.get("latency_ms") or [None] * len(sparsities))[i],
                                            prev["loss"][i], dense_loss)))
            continue
        if staged is not None:
            if cancel is not None:
                cancel.check()
            entry = sequential_row(staged, row, members, session.layer(row).params, sparsities, dense_acc, spec,
                                   ds.num_classes, _loss, lambda i, m=members: {
                                       k: t.to(device) for k, t in
                                       _variant_params(session, m, lp_for, sparsities[i]).items()})
            for i, s in enumerate(sparsities):
                done += 1
                progress(Progress(done / total, f"{row}: {s:.0%} -> {measure.format(entry['accuracy'][i])}",
                                  ScanPoint(row, i, s, entry["accuracy"][i], None, entry["loss"][i], dense_loss)))
            result.layers.append(entry)
            by_group[members] = entry
            continue
        accs: list[float | None] = [None] * len(sparsities)
        lats: list[float | None] = [None] * len(sparsities)
        losses: list[float | None] = [None] * len(sparsities)
        stop = False
        per_pass = 1 if spec.early_stop is not None or replayer is None else replayer.variants_per_pass(len(sparsities))
        for i0 in range(0, len(sparsities), per_pass):
            if cancel is not None:
                cancel.check()
            idx = list(range(i0, min(i0 + per_pass, len(sparsities))))
            if stop:
                for i in idx:
                    done += 1
                    progress(Progress(done / total, f"{row}: skipped {sparsities[i]:.0%} (early stop)",
                                      ScanPoint(row, i, sparsities[i], None)))
                continue
            variants = [{k: t.to(device) for k, t in _variant_params(session, members, lp_for, sparsities[i]).items()}
                        for i in idx]
            if replayer is not None:
                changed = {k.rsplit(".", 1)[0] for v in variants for k in v}
                logits = replayer.run_variants(changed, variants)
                for j, i in enumerate(idx):
                    part = logits[j * x.shape[0]:(j + 1) * x.shape[0]]
                    accs[i], losses[i] = _accuracy(part, y, ds.num_classes), _loss(part, y, ds.num_classes)
            else:
                for j, i in enumerate(idx):
                    saved = {}
                    with torch.no_grad():
                        for pname, t in variants[j].items():
                            saved[pname] = params_by_name[pname].data
                            params_by_name[pname].data = t
                    try:
                        ev = evaluate(module, ds, spec.split, cancel=cancel)
                        accs[i], losses[i] = measure.value(ev), ev.loss
                    finally:
                        for pname, t in saved.items():
                            params_by_name[pname].data = t
            if spec.latency:
                for j, i in enumerate(idx):
                    lats[i] = scan_point_latency(session, members, lp_for, sparsities[i], variants[j], example,
                                                 spec.latency_runs, cancel)
            for i in idx:
                done += 1
                progress(Progress(done / total, f"{row}: {sparsities[i]:.0%} -> {measure.format(accs[i])}",
                                  ScanPoint(row, i, sparsities[i], accs[i], lats[i], losses[i], dense_loss)))
                if spec.early_stop is not None and accs[i] is not None and not measure.ok(accs[i], spec.early_stop):
                    stop = True
        entry = {"name": row, "params": session.layer(row).params, "accuracy": accs, "loss": losses}
        if len(members) > 1:
            entry["group"] = list(members)
        if spec.latency:
            entry["latency_ms"] = lats
        result.layers.append(entry)
        by_group[members] = entry
    if runtime is not None and runtime.distributed:
        rows = [r for r, _ in units]
        merged = gathered({rows.index(l["name"]): l for l in result.layers}, runtime)
        result.layers, result.world_size = [merged[k] for k in sorted(merged)], world_size(runtime)
    if screen is not None:   # accuracies certified; losses are bfloat16 estimates
        result.sequential["screen"] = screen.settings(result.layers)
    result.seconds = time.perf_counter() - t0
    del base
    if prediction is not None:
        from .predict import attach_prediction
        attach_prediction(result, prediction)
    return result


# ---------------------------------------------------------------- files

def write_csv(result: ScanResult, path: Path) -> Path:
    from ..fileio import atomic_write

    def w(tmp):
        with open(tmp, "w", newline="") as f:
            wr = csv_mod.writer(f)
            wr.writerow(["layer", "params"] + [f"{s:g}" for s in result.sparsities])
            wr.writerow(["(dense)", ""] + [f"{result.dense_accuracy:.4f}"] * len(result.sparsities))
            for l in result.layers:
                wr.writerow([l["name"], l["params"]] + ["" if a is None else f"{a:.4f}" for a in l["accuracy"]])
    return atomic_write(Path(path), w)


def read_scan(path: str | Path) -> ScanResult:
    from ..safe_read import read_json

    return ScanResult.from_json(read_json(path, "sensitivity scan",
                                          "Use a JSON written by `pruning-explorer sensitivity` or the window's scan."))


def run_scan_to_files(session: StateView, sparsities, granularity, criterion, layers, out: Path, csv=None, split="val",
                      early_stop=None, latency=False, naive=False, progress=None, cancel=None, device=None,
                      predict: bool = True, exact: bool = True, drops=None, runtime=None, precision="auto") -> dict:
    """``exact=False``: the sequential scan (decided at ``drops``, 0.5/1/2 points unless told). ``runtime``: under
    torchrun the points are dealt out over the processes and only rank 0 writes (and predicts)."""
    from ..fileio import atomic_write_json

    spec = ScanSpec(sparsities=parse_sparsities(sparsities), granularity=granularity, criterion=criterion,
                    layers=layers, split=split, early_stop=early_stop, latency=latency, exact=exact,
                    drops=tuple(drops) if drops else ScanSpec.drops, precision=precision)
    prediction = None
    main = runtime is None or runtime.is_main
    if predict and main:
        from .predict import predict_loss_increase
        try:
            prediction = predict_loss_increase(session, spec.sparsities, spec.granularity, spec.criterion,
                                               spec.layers, cancel=cancel, split=split)
        except (ExplorerError, ValueError):    # no curvature here (e.g. no training split): no prediction
            prediction = None
    result = scan(session, spec, progress, cancel, naive=naive, device=device, prediction=prediction,
                  runtime=runtime)
    d = result.to_json()
    if not main:
        return d
    atomic_write_json(Path(out), d)
    if csv:
        write_csv(result, Path(csv))
    return d
