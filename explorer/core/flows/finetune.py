"""The fine-tune flow: one-shot, iterative or AGP fine-tuning of a snapshot's plan, with masks enforced.

Every door fine-tunes through :func:`run` -- the CLI's ``prune``, ``compress`` and ``finetune`` (through the prune
flow), the window's Fine-tune tab, the search and the criteria comparison -- with settings resolved by
``train.settings.finetune_settings``; so the same plan, settings and seed give bit-identical weights by every door.
One-shot trains the planned masks from the start; iterative and AGP go there from the plan the snapshot's weights
reflected (``Snapshot.applied``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..jobs import CancelToken, ProgressFn
from ..prune.plan import Plan
from ..train import finetune as training
from ..train.evaluate import evaluate
from ..train.finetune import FinetuneConfig, FinetuneResult
from ..train.metric import metric_of
from .snapshot import Snapshot


def start_plan(snap: Snapshot, cfg: FinetuneConfig) -> Plan:
    """Where the run starts: the planned masks (one-shot), else what the weights reflected."""
    return snap.plan if cfg.schedule == "oneshot" else snap.applied


def run(snap: Snapshot, cfg: FinetuneConfig, progress: ProgressFn | None = None, cancel: CancelToken | None = None,
        partial: dict | None = None, runtime=None, checkpoint: Path | None = None, resume: bool = False,
        module=None) -> FinetuneResult:
    """Fine-tune ``snap.plan`` over the snapshot's kept weights. ``module``: train this module (holding the start
    plan's masked weights already) instead of a private copy -- the prune flow's one copy of a big model."""
    start = start_plan(snap, cfg)
    if module is None:
        module = snap.model(snap.masked_state(start), trainable=True)
    return training.finetune(module, snap.dataset, snap.layer_names, snap.plan, start, snap.masks_for_state, cfg,
                    progress=progress, cancel=cancel, partial=partial, runtime=runtime or snap.runtime(),
                    checkpoint=checkpoint, resume=resume)


@dataclass
class Outcome:
    """The window's fine-tune: the result, each step's test value (for History) and the dense validation value."""
    result: FinetuneResult
    dense_val: float | None = None
    step_tests: list[float | None] = field(default_factory=list)


def run_measured(snap: Snapshot, cfg: FinetuneConfig, progress: ProgressFn | None = None,
                 cancel: CancelToken | None = None, partial: dict | None = None, need_dense_val: bool = False
                 ) -> Outcome:
    """:func:`run`, then the test metric of every finished step (the History view's points) and, if asked, the
    dense model's validation metric (the reference line of the chart)."""
    metric = metric_of(snap.dataset)
    dense_val = None
    if need_dense_val and snap.dataset.size(cfg.eval_split):
        dense_val = metric.value(evaluate(snap.job_model(snap.original), snap.dataset, cfg.eval_split,
                                          cancel=cancel))
    result = run(snap, cfg, progress, cancel, partial)
    tests = []
    for s in result.snapshots:
        s.test_accuracy = metric.value(evaluate(snap.job_model(s.state), snap.dataset, "test", cancel=cancel))
        tests.append(s.test_accuracy)
    return Outcome(result, dense_val, tests)
