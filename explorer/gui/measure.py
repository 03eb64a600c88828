"""Run ▸ Evaluate and Measure latency: jobs on copies of the model, whose results the session records.

Both measure the planned model on copies: they never apply the plan, and a cancelled job changes nothing.
The session keeps each result with the plan and kept weights it was measured on, so the dashboard and the
Latency tab mark numbers that an edit made stale.
"""
from __future__ import annotations

from PySide6.QtGui import QKeySequence

from explorer.core.analyse.latency import latency_input, measure_latencies
from explorer.core.deploy.compact import channel_removals, compact_checked, has_structure
from explorer.core.jobs import Progress
from explorer.core.measurements import LatencyComparison
from explorer.core.train.evaluate import evaluate
from explorer.core.train.metric import metric_of

from .context import AppContext


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
        plan, base_id = s.plan.copy(), s.base_id
        need_dense = s.measurements.dense is None
        original = s.original_state()

        def work(progress, cancel):
            state = s.masked_state(plan)
            dense = None
            if need_dense:
                dense = evaluate(s.job_copy(original), s.dataset, "test", progress=lambda p: progress(
                    Progress((p.fraction or 0) * 0.5, "evaluating dense model")), cancel=cancel)
            current = evaluate(s.job_copy(state), s.dataset, "test", progress=lambda p: progress(
                Progress(0.5 + (p.fraction or 0) * 0.5, "evaluating current model")), cancel=cancel)
            return current, dense

        # measured on a copy: evaluating a plan never applies it, so later jobs start where the user left them
        ctx.runner.run("Evaluating", work, on_done=lambda r: s.record_evaluation(plan, base_id, r[0], r[1]))

    def measure_latency(self) -> None:
        s, ctx = self.session, self.ctx
        if not s.loaded_ok:
            return
        plan, base_id = s.plan.copy(), s.base_id
        original = s.original_state()
        batch = int(ctx.settings.value("latency/batch", 1))
        runs = int(ctx.settings.value("latency/runs", 30))
        threads = int(ctx.settings.value("latency/threads", 0)) or None
        with_onnx = str(ctx.settings.value("latency/onnx", "false")).lower() == "true"
        structured = has_structure(plan)
        try:
            removals = channel_removals(s, plan) if structured else {}
        except Exception as e:
            ctx.report_error(e)
            return
        example = latency_input(s.dataset, s.require().input_shape, batch)
        totals = s.totals(plan)

        def work(progress, cancel):
            from explorer.core.model.layers import profile_model

            state = s.masked_state(plan)
            models = {"dense": s.model_copy(original), "masked": s.model_copy(state)}
            compact_macs = compact_params = None
            if structured:
                progress(Progress(None, "compacting"))
                models["compact"], _ = compact_checked(models["masked"], state, removals, example, cancel=cancel)
                compact_macs = profile_model(models["compact"], s.require().input_shape, example=example[:1]).total_macs
                compact_params = sum(p.numel() for p in models["compact"].parameters())
            if with_onnx:   # onnxruntime next to PyTorch: the dense model and the best pruned one, interleaved
                from explorer.core.analyse.latency import torch_threads
                from explorer.core.analyse.onnx_latency import onnx_runner

                best = "compact" if "compact" in models else "masked"
                progress(Progress(None, "exporting to ONNX for onnxruntime"))
                with torch_threads(threads):
                    models["onnx:dense"] = onnx_runner(models["dense"], example, threads)
                    models[f"onnx:{best}"] = onnx_runner(models[best], example, threads)
            # built on the CPU, the PyTorch ones timed on the device (onnxruntime runs on the CPU)
            models = {k: (m if k.startswith("onnx:") else m.to(s.device)) for k, m in models.items()}
            lat = measure_latencies(models, example, runs, threads=threads, progress=progress, cancel=cancel)
            onnx = {k[5:]: v for k, v in lat.items() if k.startswith("onnx:")} or None
            return LatencyComparison(lat["dense"], lat["masked"], lat.get("compact"), totals.macs,
                                     totals.nonzero_macs, compact_macs, compact_params, batch, onnx)

        ctx.runner.run("Measuring latency", work, on_done=lambda r: s.record_latency(plan, base_id, r))
