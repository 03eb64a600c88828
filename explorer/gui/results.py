"""Evaluate and measure latency from the window; keep the dashboard's accuracy/latency cards current.

Jobs work on copies of the model (the window stays responsive and a
cancelled job changes nothing); results land in ``session.results`` keyed by
the weights version they were measured on, so stale numbers are marked.
"""
from __future__ import annotations

import copy

import torch
from PySide6.QtGui import QKeySequence

from explorer.core.deploy.compact import channel_removals, compact_model, has_structure
from explorer.core.train.evaluate import evaluate
from explorer.core.jobs import Progress
from explorer.core.analyse.latency import latency_input, measure_latencies


def model_copy(session, state) -> torch.nn.Module:
    with session.lock:
        m = copy.deepcopy(session.module)
    m.load_state_dict(state)
    return m.eval()


class ResultsController:
    """Run ▸ Evaluate / Measure latency, and the dashboard cards that show their results."""

    def __init__(self, win):
        self.win = win
        s = win.session
        self.session = s
        win.run_menu.addSection("Measure")
        self.act_eval = win._act("&Evaluate accuracy", self.evaluate, QKeySequence("F5"),
                                 "Top-1 accuracy of the dense and the current (planned) model on the test split",
                                 win.run_menu)
        self.act_lat = win._act("Measure &latency", self.measure_latency, QKeySequence("F6"),
                                "Median latency of dense, masked and compacted models (same input, fixed threads)",
                                win.run_menu)
        self.act_eval.setIconText("Evaluate")
        self.act_lat.setIconText("Latency")
        win.toolbar.addSeparator()
        win.toolbar.addAction(self.act_eval)
        win.toolbar.addAction(self.act_lat)

    # ------------------------------------------------------------------ evaluate
    def evaluate(self) -> None:
        s, win = self.session, self.win
        if not s.loaded_ok:
            return
        if not win.require_labels("Measuring accuracy"):
            return
        plan = s.plan.copy()
        need_dense = "dense_eval" not in s.results
        original = s.original_state()
        base_version = s.version

        def work(progress, cancel):
            state = s.masked_state(plan)
            out = {"state": state}
            if need_dense:
                m = model_copy(s, original)
                out["dense"] = evaluate(m, s.dataset, "test", progress=lambda p: progress(
                    Progress((p.fraction or 0) * 0.5, "evaluating dense model")), cancel=cancel)
            m = model_copy(s, state)
            out["current"] = evaluate(m, s.dataset, "test", progress=lambda p: progress(
                Progress(0.5 + (p.fraction or 0) * 0.5, "evaluating current model")), cancel=cancel)
            return out

        def done(out):
            if "dense" in out:
                s.results["dense_eval"] = out["dense"]
            if s.plan == plan and s.version == base_version:
                if s.pending:
                    s.apply_state(plan, out["state"])
                s.results["current_eval"] = (s.version, out["current"])
                s.record(self._label(), accuracy=out["current"].accuracy)
            s.metrics_changed.emit()

        win.runner.run("Evaluating", work, on_done=done)

    def _label(self) -> str:
        s = self.session
        t = s.totals(s.applied_plan)
        grans = sorted({lp.granularity for lp in s.applied_plan.active().values()})
        what = "dense" if not grans else f"{t.sparsity:.0%} {'/'.join(grans)}"
        return f"{what} ({s.base_label})"

    # ------------------------------------------------------------------ latency
    def measure_latency(self) -> None:
        s, win = self.session, self.win
        if not s.loaded_ok:
            return
        plan = s.plan.copy()
        original = s.original_state()
        batch = int(win.settings.value("latency/batch", 1))
        runs = int(win.settings.value("latency/runs", 30))
        threads = int(win.settings.value("latency/threads", 0)) or None
        structured = has_structure(plan)
        removals = channel_removals(s, plan) if structured else {}
        example = latency_input(s.dataset, s.require().input_shape, batch)
        base_version = s.version

        def work(progress, cancel):
            state = s.masked_state(plan)
            out = {"state": state, "batch": batch}
            models = {"dense": model_copy(s, original), "masked": model_copy(s, state)}
            if structured:
                progress(Progress(None, "compacting"))
                models["compact"] = compact_model(models["masked"], state, removals, example, cancel=cancel)
                from explorer.core.model.layers import profile_model
                out["compact_macs"] = profile_model(models["compact"], s.require().input_shape).total_macs
                out["compact_params"] = sum(p.numel() for p in models["compact"].parameters())
            out.update(measure_latencies(models, example, runs, threads=threads, progress=progress, cancel=cancel))
            return out

        def done(out):
            t = s.totals(plan)
            lat = {"dense": out["dense"], "masked": out["masked"], "compact": out.get("compact"),
                   "dense_macs": t.macs, "masked_macs": t.nonzero_macs, "compact_macs": out.get("compact_macs"),
                   "compact_params": out.get("compact_params"), "plan": plan, "batch": out["batch"]}
            s.results["latency"] = (s.version, lat)
            if s.plan == plan and s.version == base_version:
                if s.pending:
                    s.apply_state(plan, out["state"])
                s.results["latency"] = (s.version, lat)
                best = out.get("compact") or out["masked"]
                s.record(self._label(), latency_ms=best.median_ms)
            s.metrics_changed.emit()

        win.runner.run("Measuring latency", work, on_done=done)

    # ------------------------------------------------------------------ dashboard
    def update_results(self) -> None:
        s, d = self.session, self.win.dashboard
        if not s.loaded_ok:
            return
        dense = s.results.get("dense_eval")
        cur = s.results.get("current_eval")
        cur_acc = cur[1].accuracy if cur else None
        stale = bool(cur) and (cur[0] != s.version or s.pending)
        d.show_accuracy(dense.accuracy if dense else None, cur_acc, stale,
                        (dense.loss if dense else None, cur[1].loss if cur else None))
        lat = s.results.get("latency")
        if not lat:
            d.show_latency("—", "Run ▸ Measure latency (F6)")
            return
        version, L = lat
        best = L["compact"] or L["masked"]
        speed = L["dense"].median_ms / best.median_ms if best.median_ms else 0
        which = "compacted" if L["compact"] else "masked"
        d.show_latency(f"{best.median_ms:.3g} ms", f"{which}; dense {L['dense'].median_ms:.3g} ms = {speed:.2f}× "
                       + ("(stale)" if version != s.version or s.pending else ""))
