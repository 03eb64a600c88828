"""Fine-tune tab: settings, start/cancel, live accuracy/sparsity and loss curves, snapshots of iterative steps,
earlier runs kept for comparison, and test accuracy vs sparsity per schedule."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from explorer.core.flows import finetune as finetune_flow
from explorer.core.train.defaults import finetune_defaults
from explorer.core.train.finetune import FinetuneConfig
from explorer.core.train.masking import sparsity_of
from explorer.core.train.metric import metric_of
from explorer.core.train.schedules import AGP_END
from explorer.core.train.settings import finetune_settings

from ..plots.finetune_chart import LossChart, RunChart, RunTrace, ScheduleChart
from ..window.context import AppContext

SCHEDULE_TIPS = {
    "oneshot": "Prune to the plan at once, then fine-tune",
    "iterative": "Reach the plan in K prune → fine-tune steps (each step kept as a snapshot)",
    "agp": "Automated gradual pruning (Zhu & Gupta): sparsity rises along a cubic while training, then the rest "
           "of training recovers at the planned sparsity",
}


class FinetunePanel(QWidget):
    """``evaluate`` runs after a fine-tune, so its test accuracy reaches the dashboard and the History."""

    def __init__(self, ctx: AppContext, evaluate_after):
        super().__init__()
        self.ctx = ctx
        self.session = ctx.session
        self.evaluate_after = evaluate_after
        self._build_settings()
        self.start_btn = QPushButton("Fine-tune (F7)")
        self.start_btn.setObjectName("primary")
        self.start_btn.setToolTip("Apply the plan and fine-tune a copy of the model in the background; the best "
                                  "epoch's weights (on the validation split) are kept")
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(ctx.runner.cancel)
        self.cancel_btn.setEnabled(False)
        self.clear_btn = QPushButton("Clear charts")
        self.clear_btn.setToolTip("Forget the earlier runs drawn for comparison")
        self.clear_btn.clicked.connect(self.clear_charts)
        self.status = QLabel("Plan some sparsity, then fine-tune to recover accuracy.")
        self.status.setWordWrap(True)
        self.keep_btn = QPushButton("Keep the last finished step")
        self.keep_btn.setToolTip("The cancelled iterative run finished some steps: take the last one's weights and "
                                 "plan (earlier steps go to the History)")
        self.keep_btn.clicked.connect(self._keep_partial)
        self.keep_btn.hide()
        self._partial_snaps: list = []

        self.run_chart = RunChart()
        self.loss_chart = LossChart()
        self.schedule_chart = ScheduleChart()
        # kept names: the accuracy and loss curves of the run in progress
        self.acc_plot, self.loss_plot = self.run_chart, self.loss_chart
        self.loss_curve = self.loss_chart.curve

        btns = QHBoxLayout()
        btns.addWidget(self.start_btn)
        btns.addWidget(self.cancel_btn)
        btns.addWidget(self.clear_btn)
        btns.addStretch(1)
        bottom = QSplitter(Qt.Horizontal)
        bottom.addWidget(self.loss_chart)
        bottom.addWidget(self.schedule_chart)
        charts = QSplitter(Qt.Vertical)
        charts.addWidget(self.run_chart)
        charts.addWidget(bottom)
        charts.setStretchFactor(0, 3)
        charts.setStretchFactor(1, 2)
        lay = QVBoxLayout(self)
        lay.addLayout(self.form)
        lay.addLayout(btns)
        lay.addWidget(self.status)
        lay.addWidget(self.keep_btn)
        lay.addWidget(charts, 1)
        self.history = []
        self._dense_val: dict[int, float] = {}
        self.session.loaded.connect(self._on_loaded)
        self._on_loaded()

    # ---------------------------------------------------------------- settings

    def _build_settings(self) -> None:
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(3)
        self.epochs.setToolTip("Epochs of training per step for iterative, of the whole run for one-shot and AGP "
                               "(masks enforced: pruned weights stay exactly 0)")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-6, 10.0)
        self.lr.setSingleStep(0.001)
        self.lr.setToolTip("Initial learning rate (the cosine anneals it to 0); the default depends on the model's "
                           "size and type")
        self.optimizer = QComboBox()
        self.optimizer.addItems(["sgd", "adam"])
        self.optimizer.setToolTip("SGD with momentum 0.9 and weight decay 1e-4 (the lab's recipe), or Adam; the "
                                  "optimizer's state of pruned weights is kept at zero too")
        self.optimizer.currentTextChanged.connect(self._optimizer_changed)
        self.batch = QSpinBox()
        self.batch.setRange(1, 4096)
        self.batch.setValue(32)
        self.batch.setToolTip("Training batch size")
        self.schedule = QComboBox()
        self.schedule.addItems(["oneshot", "iterative", "agp"])
        for i, name in enumerate(("oneshot", "iterative", "agp")):
            self.schedule.setItemData(i, SCHEDULE_TIPS[name], Qt.ToolTipRole)
        self.schedule.setToolTip("How to get to the planned sparsity: at once, in K steps, or gradually (AGP)")
        self.steps = QSpinBox()
        self.steps.setRange(1, 50)
        self.steps.setValue(3)
        self.steps.setToolTip("Iterative: number of prune → fine-tune steps")
        self.spacing = QComboBox()
        self.spacing.addItems(["geometric", "linear"])
        self.spacing.setToolTip("Iterative: geometric steps remove the same share of the remaining weights each "
                                "time; linear steps add the same sparsity (their last step removes most survivors)")
        self.rewind = QCheckBox("rewind learning rate")
        self.rewind.setChecked(True)
        self.rewind.setToolTip("Learning-rate rewinding (Renda et al. 2020): after each pruning step (and for AGP's "
                               "recovery) training restarts at the initial rate instead of continuing at a small one")
        self.agp_end = QDoubleSpinBox()
        self.agp_end.setRange(5, 95)
        self.agp_end.setDecimals(0)
        self.agp_end.setSuffix(" %")
        self.agp_end.setValue(100 * AGP_END)
        self.agp_end.setToolTip("AGP: share of training during which sparsity follows the cubic; the rest recovers "
                                "at the planned sparsity")
        self.cosine = QCheckBox("cosine schedule")
        self.cosine.setChecked(True)
        self.cosine.setToolTip("Anneal the learning rate to 0 along a cosine (per step when rewinding)")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Seed of the batch order (the same seed gives the same weights)")
        self.schedule.currentTextChanged.connect(self._schedule_changed)
        self._lr_default = self.lr.value()
        for w in (self.epochs, self.steps):
            w.valueChanged.connect(self._follow_default_lr)
        self.schedule.currentTextChanged.connect(self._follow_default_lr)
        g = QGridLayout()
        rows = [("epochs", self.epochs, "schedule", self.schedule),
                ("learning rate", self.lr, "steps", self.steps),
                ("optimizer", self.optimizer, "spacing", self.spacing),
                ("batch size", self.batch, "AGP pruning", self.agp_end),
                ("seed", self.seed, None, self.rewind)]
        for r, (la, wa, lb, wb) in enumerate(rows):
            g.addWidget(QLabel(la), r, 0)
            g.addWidget(wa, r, 1)
            if lb:
                g.addWidget(QLabel(lb), r, 2)
            g.addWidget(wb, r, 3)
        g.addWidget(self.cosine, len(rows), 3)
        g.setColumnStretch(1, 1)
        g.setColumnStretch(3, 1)
        self.form = g
        self._schedule_changed("oneshot")

    def _schedule_changed(self, schedule: str) -> None:
        self.steps.setEnabled(schedule == "iterative")
        self.spacing.setEnabled(schedule == "iterative")
        self.agp_end.setEnabled(schedule == "agp")
        self.rewind.setEnabled(schedule != "oneshot")

    def _defaults(self):
        s = self.session
        return finetune_defaults(s.profile if s.loaded_ok else None)

    def _default_lr(self, optimizer: str | None = None) -> float:
        """The model's rate for the optimizer and the run's length (a short run of a small CNN takes a lower one)."""
        schedule = self.schedule.currentText()
        total = self.epochs.value() * (self.steps.value() if schedule == "iterative" else 1)
        return self._defaults().lr(optimizer or self.optimizer.currentText(), total, schedule)

    def _follow_default_lr(self, *_) -> None:
        """Keep the rate at the default while the user has not typed one of their own."""
        if abs(self.lr.value() - self._lr_default) < 1e-12:
            self._set_default_lr()

    def _set_default_lr(self, optimizer: str | None = None) -> None:
        self._lr_default = self._default_lr(optimizer)
        self.lr.setValue(self._lr_default)

    def _optimizer_changed(self, optimizer: str) -> None:
        self._set_default_lr(optimizer)

    def _on_loaded(self) -> None:
        self._forget_partial()
        self._dense_val = {}
        d = self._defaults()
        if self.optimizer.currentText() != d.optimizer:
            self.optimizer.setCurrentText(d.optimizer)      # sets the rate too
        else:
            self._set_default_lr(d.optimizer)
        self.optimizer.setToolTip(f"Default for this model: {d.note}. SGD has momentum 0.9 and weight decay 1e-4; "
                                  "the optimizer's state of pruned weights is kept at zero too")
        self.clear_charts()

    def config(self) -> FinetuneConfig:
        """The tab's settings, resolved like every other door's (train/settings.py)."""
        return finetune_settings(self.session.profile if self.session.loaded_ok else None,
                                 epochs=self.epochs.value(), lr=self.lr.value(),
                                 optimizer=self.optimizer.currentText(), batch_size=self.batch.value(),
                                 cosine=self.cosine.isChecked(), seed=self.seed.value(),
                                 schedule=self.schedule.currentText(), steps=self.steps.value(),
                                 spacing=self.spacing.currentText(), rewind=self.rewind.isChecked(),
                                 agp_end=self.agp_end.value() / 100.0)

    def clear_charts(self) -> None:
        self.history = []
        self.run_chart.clear_runs()
        self.loss_chart.show_trace(None)
        self.schedule_chart.clear_points()

    @property
    def acc_curve(self):
        """The accuracy curve of the run in progress (x: epochs, 0 = just pruned)."""
        return self.run_chart.current_curve

    # ---------------------------------------------------------------- the job

    def start(self) -> None:
        s, ctx = self.session, self.ctx
        if not s.loaded_ok:
            return
        if ctx.runner.busy:
            ctx.status("another job is running; wait or cancel it", 4000)
            return
        try:
            cfg = self.config().validated()
        except Exception as e:
            ctx.report_error(e)
            return
        if not ctx.require_labels("Fine-tuning"):
            return
        snap = s.snapshot()              # the job's frozen input: it never reads the live session
        target = snap.plan
        names = snap.layer_names
        partial: dict = {}
        self._forget_partial()
        self.history = []
        key = id(s.require())
        dense_val = self._dense_val.get(key)
        total = s.totals(target)
        metric = metric_of(s.dataset)          # accuracy, or a language model's perplexity (lower is better)
        self.run_chart.set_metric(metric)
        label = (f"{cfg.schedule}" + (f" ×{cfg.steps}" if cfg.schedule == "iterative" else "")
                 + f" {total.sparsity:.0%}, {cfg.optimizer} {cfg.lr:g}")
        self.run_chart.start_run(RunTrace(label, cfg.schedule, start_sparsity=sparsity_of(s.module, names)), dense_val)
        self.loss_chart.show_trace(self.run_chart.current)
        dense = s.measurements.dense
        self.schedule_chart.set_dense(metric.value(dense))

        def val_of(r):
            return getattr(r, f"val_{metric.name}", None)     # accuracy, perplexity or mse

        def work(progress, cancel):
            return finetune_flow.run_measured(snap, cfg, progress, cancel, partial, need_dense_val=dense_val is None)

        def on_progress(p):
            r = p.data
            if r is not None and hasattr(r, "train_loss"):
                self.history.append(r)
                self.run_chart.add_record(r)
                self.loss_chart.show_trace(self.run_chart.current)
                self.status.setText(f"epoch {r.epoch}: loss {r.train_loss:.4f}"
                                    + (f", val {metric.name} {metric.format(val_of(r))}"
                                       if val_of(r) is not None else "")
                                    + f", sparsity {r.sparsity:.1%}"
                                    + (f" (just pruned: val {r.pruned_accuracy:.2f}%)"
                                       if r.pruned_accuracy is not None else ""))

        def done(out):
            self._set_running(False)
            result = out.result
            if out.dense_val is not None:
                self._dense_val[key] = out.dense_val
                self.run_chart.set_dense(out.dense_val)
            final = result.snapshots[-1] if result.snapshots else None
            if final is not None and final.test_accuracy is not None:
                self.schedule_chart.add(cfg.schedule, final.sparsity, final.test_accuracy)
            s.results.adopt_finetune(result.snapshots, result.state, result.plan)
            self.status.setText("done" + (f": best epoch {result.best_epoch} (on validation) kept"
                                          if result.best_epoch else "")
                                + (f", test {metric.name} {metric.format(final.test_accuracy)}"
                                   if final and final.test_accuracy is not None else "")
                                + "; it goes to the dashboard and the History tab.")
            self.evaluate_after()

        def cancelled():
            self._set_running(False)
            snaps = partial.get("snapshots") or []
            if snaps and cfg.schedule == "iterative" and not ctx.is_closing():
                # offered, not asked: a modal question would block whatever drives the window
                self._partial_snaps = list(snaps)
                self.keep_btn.setText(f"Keep step {len(snaps)} of {cfg.steps} ({snaps[-1].label})")
                self.keep_btn.show()
                self.status.setText(f"cancelled after {len(snaps)} of {cfg.steps} step(s): the model is as it was "
                                    "before; you can keep the last finished step.")
                return
            self.status.setText("cancelled: the model is as it was before fine-tuning")

        def failed(e):
            self._set_running(False)
            self.status.setText(f"failed: {e}")
            ctx.report_error(e)

        self._set_running(True)
        self.status.setText("fine-tuning…")
        ctx.runner.run("Fine-tuning", work, on_done=done, on_progress=on_progress, on_cancel=cancelled,
                       on_error=failed)

    def _keep_partial(self) -> None:
        snaps = self._partial_snaps
        self._forget_partial()
        if snaps:
            self.session.results.adopt_finetune(snaps, snaps[-1].state, snaps[-1].plan)
            self.status.setText(f"kept {snaps[-1].label}; its test accuracy goes to the dashboard and the History.")
            self.evaluate_after()

    def _forget_partial(self) -> None:
        self._partial_snaps = []
        self.keep_btn.hide()

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.clear_btn.setEnabled(not running)

