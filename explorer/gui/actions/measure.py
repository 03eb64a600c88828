"""Run ▸ Evaluate and Measure latency: jobs on copies of the model, whose results the session records.

Both measure the planned model on copies: they never apply the plan, and a cancelled job changes nothing.
The session keeps each result with the plan and kept weights it was measured on, so the dashboard and the
Latency tab mark numbers that an edit made stale.
"""
from __future__ import annotations

from PySide6.QtGui import QKeySequence

from explorer.core.flows.measure import evaluate_plan, measure_latency
from explorer.core.measure_plan import evaluate_dense_if_quick
from explorer.core.train.metric import metric_of

from ..window.context import AppContext


class MeasureActions:
    """The Evaluate (F5) and Measure latency (F6) actions."""

    def __init__(self, ctx: AppContext, menu, toolbar):
        self.ctx = ctx
        self.session = ctx.session
        menu.addSection("Measure")
        self.act_eval = ctx.action("&Evaluate accuracy", self.evaluate, QKeySequence("F5"),
                                   "Top-1 accuracy of the dense and the current (planned) model on the test split",
                                   menu)
        self.act_lat = ctx.action("Measure &latency", self.measure_latency, QKeySequence("F6"),
                                  "Median latency of dense, masked and compacted models (same input, fixed threads)",
                                  menu)
        self.act_eval.setIconText("Evaluate")
        self.act_lat.setIconText("Latency")
        toolbar.addSeparator()
        toolbar.addAction(self.act_eval)
        toolbar.addAction(self.act_lat)

    def evaluate(self) -> None:
        s, ctx = self.session, self.ctx
        if not s.loaded_ok or not ctx.require_labels(f"Measuring {metric_of(s.dataset).name}"):
            return
        snap = s.snapshot()
        need_dense = s.measurements.dense is None
        # measured on a copy: evaluating a plan never applies it, so later jobs start where the user left them
        ctx.runner.run("Evaluating", lambda p, c: evaluate_plan(snap, need_dense, p, c),
                       on_done=lambda r: s.results.record_evaluation(snap.plan, snap.base_id, r[0], r[1]))

    def evaluate_dense_on_open(self) -> None:
        """The dense baseline, right after a model opens, when evaluating it takes about a second or less: done
        at once (no job), so the cards compare with it from the start and the job queue stays free."""
        try:
            evaluate_dense_if_quick(self.session)
        except Exception:   # an odd model is measured when the user asks, with a proper error then
            pass

    def measure_latency(self) -> None:
        s, ctx = self.session, self.ctx
        if not s.loaded_ok:
            return
        batch = int(ctx.settings.value("latency/batch", 1))
        runs = int(ctx.settings.value("latency/runs", 30))
        threads = int(ctx.settings.value("latency/threads", 0)) or None
        with_onnx = str(ctx.settings.value("latency/onnx", "false")).lower() == "true"
        snap = s.snapshot()
        ctx.runner.run("Measuring latency", lambda p, c: measure_latency(snap, batch, runs, threads, with_onnx, p, c),
                       on_done=lambda r: s.results.record_latency(snap.plan, snap.base_id, r))
