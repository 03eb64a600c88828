"""Search the sparsest allocation that stays within an accuracy drop *after fine-tuning*.

A sensitivity scan measures one-shot drops, which fine-tuning mostly recovers, so a per-layer drop
threshold is conservative. This job walks down a grid of overall target sparsities: for each target
it allocates greedily from the scan (sensitive layers keep more), fine-tunes a copy and measures the
validation accuracy; the first (sparsest) plan within ``max_drop`` points of the dense validation
accuracy wins. A grid walked from the top, not a bisection: validation accuracy on a small split is
noisy and not monotone in sparsity. Test accuracy is reported for the winner only (selection never
looks at the test split).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..errors import ExplorerError, PlanError
from ..jobs import CancelToken, Progress, ProgressFn
from ..model.layers import load_state
from ..prune.plan import Plan
from ..train.distributed import Runtime
from ..train.evaluate import evaluate
from ..train.finetune import FinetuneConfig, finetune
from ..train.metric import metric_of
from ..train.settings import finetune_settings
from .allocate import allocate_to_target
from .sensitivity import ScanResult

if TYPE_CHECKING:
    from ..prune.state_view import StateView

DEFAULT_TARGETS = (0.95, 0.93, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)


@dataclass(frozen=True)
class Trial:
    target: float
    sparsity: float
    val_accuracy: float
    ok: bool


@dataclass
class SearchResult:
    plan: Plan
    state: dict[str, torch.Tensor]
    sparsity: float
    val_accuracy: float
    test_accuracy: float | None
    dense_val_accuracy: float
    trials: list[Trial] = field(default_factory=list)


def _uniform(session: StateView, scan: ScanResult, target: float):
    """The baseline the search is compared with: every scanned layer at the same sparsity."""
    from ..prune.plan import LayerPlan
    from .allocate import Allocation

    names = [l["name"] for l in scan.layers]
    plan = session.linked_plan(Plan({n: LayerPlan(target, scan.granularity, scan.criterion) for n in names}))
    return Allocation(plan=plan, sparsities={n: target for n in names}, predicted_accuracy=float("nan"),
                      predicted_drop=float("nan"), sparsity=session.totals(plan).sparsity)


def search_allocation(session: StateView, scan: ScanResult, max_drop: float, cfg: FinetuneConfig | None = None,
                      targets: list[float] | None = None, cap: float = 0.95, progress: ProgressFn | None = None,
                      cancel: CancelToken | None = None, method: str = "greedy",
                      device: torch.device | None = None) -> SearchResult:
    """``method``: 'greedy' (allocation from the scan) or 'uniform' (the same search for one sparsity).
    Fine-tuning and evaluation run on ``device``."""
    if method not in ("greedy", "uniform"):
        raise PlanError(f"Unknown search method '{method}'; use greedy or uniform.")

    def allocate(target: float):
        return allocate_to_target(session, scan, target, "sparsity", cap) if method == "greedy" \
            else _uniform(session, scan, min(target, cap))

    if not max_drop >= 0:
        raise PlanError(f"The allowed drop must be a non-negative number of points (got {max_drop}).")
    grid = sorted({round(float(t), 4) for t in (targets or DEFAULT_TARGETS) if 0 < t <= 1}, reverse=True)
    if not grid:
        raise PlanError("The search needs target sparsities in (0, 1].")
    ds = session.dataset
    if not ds.has_labels or ds.size("val") == 0:
        raise ExplorerError("The search fine-tunes and selects on the validation split, which needs labels.",
                            "Choose a labelled dataset with a val split.")
    cfg = cfg.validated() if cfg is not None else finetune_settings(session.profile)
    progress = progress or (lambda p: None)
    template = session.model_copy(session.base_state()).to(device or torch.device("cpu"))
    measure = metric_of(ds)
    dense_val = measure.value(evaluate(template, ds, "val", cancel=cancel))
    floor = measure.floor(dense_val, max_drop)       # the worst validation value the budget allows
    total = len(grid)

    def trial(target: float, i: int):
        alloc = allocate(target)
        module = copy.deepcopy(template)
        load_state(module, session.masked_state(alloc.plan))
        done = i / total

        def sub(p: Progress) -> None:
            progress(Progress(done + (p.fraction or 0) / total, f"search step {i + 1}/{total}: target "
                              f"{target:.1%} — {p.message}", None, None))
        r = finetune(module, ds, session.layer_names, alloc.plan, alloc.plan, session.masks_for_state, cfg, sub,
                     cancel, runtime=Runtime(device=device) if device is not None else None)
        load_state(module, r.state)
        val = measure.value(evaluate(module, ds, "val", cancel=cancel))
        t = Trial(target=target, sparsity=alloc.sparsity, val_accuracy=val, ok=measure.ok(val, floor))
        progress(Progress((i + 1) / total, f"target {target:.1%}: val {measure.format(val)} "
                          f"({'within' if t.ok else 'beyond'} the allowed {measure.drop_label} {max_drop:g})", t))
        return t, alloc.plan, r.state

    top = allocate(1.0).sparsity          # the most the scan's measured points can reach
    trials: list[Trial] = []
    best = None
    tried = set()
    for i, target in enumerate(grid):
        target = min(target, top)
        if round(target, 4) in tried:
            continue
        tried.add(round(target, 4))
        t, plan, state = trial(target, i)
        trials.append(t)
        if t.ok:
            best = (t, plan, state)
            break
    if best is None:
        raise ExplorerError(f"No allocation stayed within {max_drop:g} points after fine-tuning "
                            f"(dense validation {measure.name} {measure.format(dense_val)}).",
                            "Allow a larger drop, fine-tune longer, or scan lower sparsities.")
    t, plan, state = best
    module = copy.deepcopy(template)
    load_state(module, state)
    test = measure.value(evaluate(module, ds, "test", cancel=cancel)) if ds.size("test") else None
    return SearchResult(plan=plan, state=state, sparsity=t.sparsity, val_accuracy=t.val_accuracy,
                        test_accuracy=test, dense_val_accuracy=dense_val, trials=trials)
