"""Compare criteria side by side: accuracy one-shot (and after fine-tuning) per criterion x sparsity.

Every criterion gets the same plan -- the same layers, the same per-layer sparsity and granularity -- so only
the choice of weights differs (and, with ``reconstruct``, the remaining weights are refitted on the calibration
samples after the mask is chosen). A layer is in the plan when every compared criterion fits it (bn-scale, for
one, needs a BatchNorm after the layer); the layers left out are listed in ``notes``.

The comparison guides a choice -- which criterion for this model -- so it is measured on the **validation**
split ("split": "val"), the split choices are made on; the test split stays for reporting the final model.
Fine-tuning picks its best epoch on the *training* split here, so the validation numbers are selection-free.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ExplorerError, PlanError
from ..jobs import CancelToken, Progress, ProgressFn
from ..prune.criteria import get_criterion
from ..prune.granularity import get_granularity
from ..prune.plan import LayerPlan, Plan
from ..train.evaluate import evaluate
from ..train.metric import metric_of
from .sensitivity import parse_sparsities
from .shard import gathered, owner, world_size

if TYPE_CHECKING:
    from ..prune.state_view import StateView

DEFAULT_CRITERIA = ("l1", "taylor", "hessian", "wanda")
DEFAULT_SPARSITIES = (0.5, 0.7, 0.9)


@dataclass(frozen=True)
class ComparePoint:
    """One measured point (sent as Progress.data for live curves)."""

    criterion: str
    index: int
    sparsity: float
    accuracy: float
    finetuned: bool


@dataclass
class CompareResult:
    model: str
    dataset: str
    granularity: str
    split: str
    sparsities: list[float]
    criteria: list[dict]                     # [{"name", "accuracy": [...], "accuracy_finetuned": [...] | None}]
    dense_accuracy: float | None = None
    reconstruct: bool = False
    calibration_samples: int = 0
    finetune_epochs: int = 0
    layers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)   # criterion -> seconds for its one-shot points
    metric: str = "accuracy"     # what the "accuracy" lists hold: accuracy, or perplexity / mse (lower is better)
    world_size: int = 1          # processes the points were dealt out to (torchrun); recorded when > 1

    def to_json(self) -> dict:
        """Exactly the keys of the compare JSON (plus ``"metric"`` when it is not accuracy)."""
        return {**({"metric": self.metric} if self.metric != "accuracy" else {}), "model": self.model, "dataset": self.dataset, "granularity": self.granularity, "split": self.split,
                "sparsities": list(self.sparsities),
                "criteria": [{"name": c["name"], "accuracy": list(c["accuracy"]),
                              "accuracy_finetuned": None if c["accuracy_finetuned"] is None
                              else list(c["accuracy_finetuned"])} for c in self.criteria],
                **({"world_size": self.world_size} if self.world_size > 1 else {})}


def parse_criteria(text) -> list[str]:
    items = list(text) if isinstance(text, (list, tuple)) else [t for t in str(text).replace(" ", "").split(",") if t]
    if not items:
        raise PlanError("The criteria list is empty.", "Give names such as l1,taylor,hessian,wanda.")
    names = [get_criterion(t).name for t in items]
    if len(set(names)) != len(names):
        raise PlanError("The criteria list has duplicates.")
    return names


def compare_layers(session: StateView, criteria: list[str], granularity, layers: list[str] | None = None):
    """The layers every criterion fits at ``granularity`` (the shared plan's layers), and notes on the others."""
    gran = get_granularity(granularity)
    names = layers or session.layer_names
    keep, notes = [], []
    for n in names:
        session.layer(n)
        why = None
        for c in criteria:
            try:
                session.check_layer_plan(n, LayerPlan(0.5, gran, c))
            except PlanError as e:
                why = e.message
                break
        if why is None:
            keep.append(n)
        elif layers:
            raise PlanError(why)
        else:
            notes.append(f"{n} left dense: {why}")
    if not keep:
        raise PlanError(f"No layer can be pruned by every compared criterion with {gran.name} granularity.",
                        notes[0].split(": ", 1)[1] if notes else None)
    return keep, notes


def compare_criteria(session: StateView, criteria, sparsities, granularity="element", reconstruct: bool = False,
                     finetune=None, split: str = "val", layers: list[str] | None = None,
                     progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                     device: torch.device | None = None, runtime=None) -> CompareResult:
    """Measure every criterion x sparsity on the same plan; the session is not changed. Evaluation and
    fine-tuning run on ``device``. ``runtime``: under torchrun the points are dealt out over its processes and
    gathered (analyse/shard.py); every process returns the whole result.

    ``finetune``: a FinetuneConfig (its epochs, learning rate, ...) for the fine-tuned column, or None."""
    from ..prune.reconstruct import reconstruct_plan
    from ..prune.sparsegpt import one_shot
    from ..train.distributed import Runtime
    from ..train.finetune import finetune as run_finetune

    device = device or torch.device("cpu")

    def copy_with(state):
        return session.model_copy(state).to(device)
    progress = progress or (lambda p: None)
    criteria = parse_criteria(criteria)
    sparsities = parse_sparsities(sparsities)
    gran = get_granularity(granularity)
    ds = session.dataset
    if not ds.has_labels:
        raise ExplorerError(f"Comparing criteria measures accuracy, which needs labels; {ds.spec} has none.",
                            "Choose a labelled dataset.")
    if ds.size(split) == 0:
        raise ExplorerError(f"The {split} split of {ds.spec} is empty: nothing to measure on.")
    if finetune is not None:
        finetune = dataclasses.replace(finetune.validated(), schedule="oneshot", steps=1, eval_split="train")
    names, notes = compare_layers(session, criteria, gran, layers)
    result = CompareResult(model=session.model_spec, dataset=ds.spec, granularity=gran.name, split=split,
                           sparsities=sparsities, criteria=[], reconstruct=reconstruct,
                           calibration_samples=session.calibration_samples,
                           finetune_epochs=finetune.epochs if finetune else 0, layers=names, notes=notes)
    q = metric_of(ds)          # accuracy, perplexity or mean squared error
    result.metric = q.name
    result.dense_accuracy = q.value(evaluate(copy_with(session.base_state()), ds, split, cancel=cancel))
    per_point = 1 + (1 if reconstruct else 0) + (finetune.epochs * 3 if finetune else 0)
    mine = [k for k in range(len(criteria) * len(sparsities)) if owner(k, runtime)]
    total = max(1, len(mine) * per_point)
    done = 0
    points: dict[int, tuple] = {}        # point index -> (accuracy, fine-tuned accuracy or None, seconds)

    def note(msg: str, data=None) -> None:
        progress(Progress(min(1.0, done / total), msg, data))

    for ci, c in enumerate(criteria):
        for i, s in enumerate(sparsities):
            if ci * len(sparsities) + i not in mine:
                continue
            if cancel is not None:
                cancel.check()
            plan = session.linked_plan(Plan({n: LayerPlan(s, gran, c) for n in names}, target_sparsity=s))
            t1 = time.perf_counter()
            if c == "sparsegpt":       # its mask comes from the sweep (the masks' scores only preview it)
                note(f"{c} at {s:.0%}: sweeping")
                state = one_shot(session, plan, cancel=cancel).state
            else:
                state = session.masked_state(plan)
            if reconstruct and c != "sparsegpt":     # sparsegpt's sweep already updated the kept weights
                note(f"{c} at {s:.0%}: reconstructing")
                state = reconstruct_plan(session, plan, cancel=cancel).state
                done += 1
            acc = q.value(evaluate(copy_with(state), ds, split, cancel=cancel))
            spent = time.perf_counter() - t1
            done += 1
            acc_ft = None
            note(f"{c} at {s:.0%}: {q.format(acc)} one-shot", ComparePoint(c, i, s, acc, False))
            if finetune:
                start = done

                def sub(p: Progress, start=start) -> None:
                    frac = (p.fraction or 0.0) * finetune.epochs * 3
                    progress(Progress(min(1.0, (start + frac) / total), f"{c} at {s:.0%}: {p.message}"))

                ft = run_finetune(session.model_copy(state), ds, session.layer_names, plan, plan,
                                  session.masks_for_state, finetune, progress=sub, cancel=cancel,
                                  runtime=Runtime(device=device))
                done = start + finetune.epochs * 3
                m = copy_with(ft.state)
                acc_ft = q.value(evaluate(m, ds, split, cancel=cancel))
                note(f"{c} at {s:.0%}: {q.format(acc_ft)} fine-tuned", ComparePoint(c, i, s, acc_ft, True))
            points[ci * len(sparsities) + i] = (acc, acc_ft, spent)
    points = gathered(points, runtime)
    result.world_size = world_size(runtime)
    for ci, c in enumerate(criteria):
        mine_c = [points[ci * len(sparsities) + i] for i in range(len(sparsities))]
        result.criteria.append({"name": c, "accuracy": [p[0] for p in mine_c],
                                "accuracy_finetuned": [p[1] for p in mine_c] if finetune else None})
        result.seconds[c] = sum(p[2] for p in mine_c)
    return result


def write_compare(result: CompareResult, path: str | Path) -> Path:
    from ..fileio import atomic_write_json

    d = result.to_json()
    for c in d["criteria"]:
        for v in c["accuracy"] + (c["accuracy_finetuned"] or []):
            if v is None or not math.isfinite(v):
                raise ExplorerError(f"Internal check failed: criterion {c['name']} has a non-numeric accuracy.")

    def verify(tmp) -> None:          # the file is reloaded and checked before it replaces anything
        import json
        with open(tmp, encoding="utf-8") as f:
            if json.load(f) != d:
                raise ExplorerError(f"Internal check failed: {path} did not read back as written.")

    return atomic_write_json(Path(path), d, verify)


def winners(result: CompareResult, finetuned: bool = False) -> list[str]:
    """The best criterion at each sparsity (ties: all of them, joined by '='), for the summary line."""
    key = "accuracy_finetuned" if finetuned else "accuracy"
    out = []
    for i in range(len(result.sparsities)):
        vals = [(c[key][i], c["name"]) for c in result.criteria if c[key] is not None]
        if not vals:
            out.append("")
            continue
        best = max(v for v, _ in vals)
        out.append("=".join(n for v, n in vals if v == best))
    return out
