"""Edit ▸ Reconstruct on apply: a checkbox next to Apply.

Ticked, Apply masks the plan and then refits each pruned layer's remaining weights to its dense output on the
calibration samples (core ``prune.reconstruct``) in a job with progress and Cancel; the refitted weights become
the session's kept weights (``session.results.adopt``), like fine-tuned ones, so Reset to dense returns to the loaded
weights. The mask is unchanged and pruned weights stay exactly 0. Cancel leaves the session as it was.

A plan with ``sparsegpt`` layers is applied by its sweep (core ``prune.sparsegpt.one_shot``) in a job whether or
not the box is ticked: the slider only previewed it (|w|·‖x‖ across the layer); the sweep chooses the mask and
updates the kept weights, which the session adopts like reconstructed ones.
"""
from __future__ import annotations

from PySide6.QtWidgets import QCheckBox

from explorer.core.prune.plan import Plan
from explorer.core.prune.reconstruct import reconstruct_plan
from explorer.core.prune.sparsegpt import one_shot

from ..window.context import AppContext

TIP = ("Reconstruct on Apply: after choosing the mask, refit each pruned layer's remaining weights so that its "
       "output matches the dense layer's on the calibration samples (least squares; channel pruning refits the "
       "next layer). Better one-shot accuracy without fine-tuning; the mask does not change.")


class ReconstructOption:
    def __init__(self, ctx: AppContext, menu, toolbar, before_action, evaluate_after):
        self.ctx = ctx
        self.session = ctx.session
        self.evaluate_after = evaluate_after
        self.box = QCheckBox("Reconstruct")
        self.box.setToolTip(TIP)
        toolbar.insertWidget(before_action, self.box)
        self.action = ctx.action("Reconstruct on apply", lambda checked: self.box.setChecked(checked), "Ctrl+Shift+K",
                                 TIP, menu)
        self.action.setCheckable(True)
        self.box.toggled.connect(self.action.setChecked)
        self.last = None     # the last Reconstruction (per-layer output errors), for the status line and tests

    @property
    def checked(self) -> bool:
        return self.box.isChecked()

    @staticmethod
    def sweeps(plan: Plan) -> bool:
        """Does applying ``plan`` need SparseGPT's sweep (its slider showed only a preview)?"""
        return any(lp.criterion == "sparsegpt" for lp in plan.active().values())

    def sweep(self, plan: Plan) -> bool:
        """Apply ``plan`` by running its sparsegpt sweeps layer after layer, as a job."""
        s, ctx = self.session, self.ctx
        samples = s.calibration_samples

        def done(r):
            self.last = r
            s.results.adopt_sweep(r, plan)
            ctx.status(f"sparsegpt: {len(r.swept)} layer(s) swept ({r.order}) on {samples} samples; the masks and "
                       "kept weights are now the sweep's (the slider showed a |w|·‖x‖ preview)", 10000)
            if s.dataset.has_labels:
                self.evaluate_after()

        snap = s.snapshot(plan)
        return ctx.start_job("SparseGPT sweep", lambda p, c: one_shot(snap, plan, progress=p, cancel=c),
                             on_done=done,
                             on_cancel=lambda: ctx.status("sparsegpt cancelled; the model is unchanged", 5000))

    def run(self, plan: Plan | None = None) -> bool:
        """Apply ``plan`` (default: the session's) with reconstruction, as a job. False if it did not start."""
        s, ctx = self.session, self.ctx
        if not s.loaded_ok:
            return False
        plan = (plan or s.plan)
        if not plan.active():
            s.apply(plan)
            ctx.status("nothing pruned: nothing to reconstruct", 4000)
            return False
        if self.sweeps(plan):
            if self.checked:
                ctx.status("sparsegpt updates the kept weights itself: applying by its sweep, without "
                           "reconstruction", 6000)
            return self.sweep(plan)
        samples = s.calibration_samples

        def done(rec):
            self.last = rec
            s.results.adopt(rec.state, plan, f"reconstructed ({samples} samples)")
            fitted = [f for f in rec.layers if not f.method.startswith("skipped")]
            before = sum(f.error_before for f in fitted) / max(1, len(fitted))
            after = sum(f.error_after for f in fitted) / max(1, len(fitted))
            ctx.status(f"reconstructed {len(fitted)} layer(s) on {samples} samples: mean relative output error "
                       f"{before:.3f} → {after:.3f}", 10000)
            if s.dataset.has_labels:
                self.evaluate_after()

        snap = s.snapshot(plan)
        return ctx.start_job("Reconstructing", lambda p, c: reconstruct_plan(snap, plan, p, c), on_done=done,
                             on_cancel=lambda: ctx.status("reconstruction cancelled; the model is unchanged", 5000))
