"""Fine-tune tab: settings, start/cancel, live loss and accuracy curves, snapshots of iterative steps."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from explorer.core.train.evaluate import evaluate
from explorer.core.train.finetune import FinetuneConfig, default_lr, finetune
from explorer.core.train.metric import metric_of

from .context import AppContext


class FinetunePanel(QWidget):
    """``evaluate`` runs after a fine-tune, so its test accuracy reaches the dashboard and the History."""

    def __init__(self, ctx: AppContext, evaluate_after):
        super().__init__()
        self.ctx = ctx
        self.session = ctx.session
        self.evaluate_after = evaluate_after
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(3)
        self.epochs.setToolTip("Epochs of training per step (masks enforced: pruned weights stay exactly 0)")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-6, 10.0)
        self.lr.setSingleStep(0.001)
        self.lr.setValue(default_lr("sgd"))
        self.lr.setToolTip("Initial learning rate (cosine-annealed to 0 over each step)")
        self.optimizer = QComboBox()
        self.optimizer.addItems(["sgd", "adam"])
        self.optimizer.setToolTip("SGD with momentum 0.9 and weight decay 1e-4 (the lab's recipe), or Adam")
        self.optimizer.currentTextChanged.connect(lambda o: self.lr.setValue(default_lr(o)))
        self.batch = QSpinBox()
        self.batch.setRange(1, 4096)
        self.batch.setValue(32)
        self.schedule = QComboBox()
        self.schedule.addItems(["oneshot", "iterative", "agp"])
        self.schedule.setItemData(0, "Prune to the plan at once, then fine-tune", 3)
        self.schedule.setItemData(1, "Reach the plan in K prune → fine-tune steps (each step kept as a snapshot)", 3)
        self.schedule.setItemData(2, "Automated gradual pruning: sparsity rises along a cubic during training", 3)
        self.schedule.setToolTip("How to get to the planned sparsity: at once, in K steps, or gradually (AGP)")
        self.steps = QSpinBox()
        self.steps.setRange(1, 50)
        self.steps.setValue(3)
        self.steps.setToolTip("Iterative: number of prune → fine-tune steps")
        self.cosine = QCheckBox("cosine schedule")
        self.cosine.setChecked(True)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.schedule.currentTextChanged.connect(lambda t: self.steps.setEnabled(t == "iterative"))
        self.steps.setEnabled(False)
        form = QFormLayout()
        form.addRow("epochs", self.epochs)
        form.addRow("learning rate", self.lr)
        form.addRow("optimizer", self.optimizer)
        form.addRow("batch size", self.batch)
        form.addRow("schedule", self.schedule)
        form.addRow("steps", self.steps)
        form.addRow("seed", self.seed)
        form.addRow("", self.cosine)
        self.start_btn = QPushButton("Fine-tune (F7)")
        self.start_btn.setObjectName("primary")
        self.start_btn.setToolTip("Apply the plan and fine-tune a copy of the model in the background; the best "
                                  "epoch's weights are kept")
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(ctx.runner.cancel)
        self.cancel_btn.setEnabled(False)
        self.status = QLabel("Plan some sparsity, then fine-tune to recover accuracy.")
        self.status.setWordWrap(True)
        self.keep_btn = QPushButton("Keep the last finished step")
        self.keep_btn.setToolTip("The cancelled iterative run finished some steps: take the last one's weights and "
                                 "plan (earlier steps go to the History)")
        self.keep_btn.clicked.connect(self._keep_partial)
        self.keep_btn.hide()
        self._partial_snaps: list = []

        self.loss_plot = pg.PlotWidget(title="training loss")
        self.loss_plot.setLabel("bottom", "epoch")
        self.acc_plot = pg.PlotWidget(title="validation accuracy (%)")
        self.acc_plot.setLabel("bottom", "epoch")
        self.loss_curve = self.loss_plot.plot([], [], pen=pg.mkPen((220, 90, 40), width=2), symbol="o", symbolSize=5)
        self.acc_curve = self.acc_plot.plot([], [], pen=pg.mkPen((40, 120, 220), width=2), symbol="o", symbolSize=5)
        self.dense_line = pg.InfiniteLine(angle=0, pen=pg.mkPen((90, 90, 90), style=Qt.DashLine), label="dense",
                                          labelOpts={"position": 0.05})
        self.acc_plot.addItem(self.dense_line)
        self.dense_line.hide()

        left = QVBoxLayout()
        left.addLayout(form)
        btns = QHBoxLayout()
        btns.addWidget(self.start_btn)
        btns.addWidget(self.cancel_btn)
        left.addLayout(btns)
        left.addWidget(self.status)
        left.addWidget(self.keep_btn)
        left.addStretch(1)
        plots = QVBoxLayout()
        plots.addWidget(self.acc_plot, 1)
        plots.addWidget(self.loss_plot, 1)
        lay = QHBoxLayout(self)
        lay.addLayout(left)
        lay.addLayout(plots, 1)
        self.history = []
        self.session.loaded.connect(self._forget_partial)

    def config(self) -> FinetuneConfig:
        return FinetuneConfig(epochs=self.epochs.value(), lr=self.lr.value(), optimizer=self.optimizer.currentText(),
                              batch_size=self.batch.value(), cosine=self.cosine.isChecked(), seed=self.seed.value(),
                              schedule=self.schedule.currentText(), steps=self.steps.value())

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
        target = s.plan.copy()
        # one-shot trains the planned masks; iterative/AGP go there from what the model holds now
        start = target if cfg.schedule == "oneshot" else s.applied_plan.copy()
        names = s.layer_names
        self.history = []
        partial: dict = {}
        self._forget_partial()
        self.loss_curve.setData([], [])
        self.acc_curve.setData([], [])
        metric = metric_of(s.dataset)          # accuracy, or a language model's perplexity (lower is better)
        self.acc_plot.setTitle(f"validation {metric.label}" + ("" if metric.higher_is_better else " (lower is better)"))
        dense = s.measurements.dense
        if metric.value(dense) is not None:
            self.dense_line.setValue(metric.value(dense))
            self.dense_line.show()

        def val_of(r):
            return r.val_accuracy if metric.higher_is_better else getattr(r, "val_perplexity", None)

        def work(progress, cancel):
            module = s.model_copy(s.masked_state(start))     # in the worker: big models copy slowly
            result = finetune(module, s.dataset, names, target, start, s.masks_for_state, cfg, progress, cancel,
                              partial=partial)
            for snap in result.snapshots:   # test accuracy (or perplexity) of every step, for the History view
                snap.test_accuracy = metric.value(evaluate(s.model_copy(snap.state), s.dataset, "test", cancel=cancel))
            return result

        def on_progress(p):
            if p.data is not None and hasattr(p.data, "train_loss"):
                self.history.append(p.data)
                xs = [r.epoch for r in self.history]
                self.loss_curve.setData(xs, [r.train_loss for r in self.history])
                accs = [(r.epoch, val_of(r)) for r in self.history if val_of(r) is not None]
                if accs:
                    self.acc_curve.setData([a for a, _ in accs], [b for _, b in accs])
                self.status.setText(f"epoch {p.data.epoch}: loss {p.data.train_loss:.4f}"
                                    + (f", val {metric.name} {metric.format(val_of(p.data))}"
                                       if val_of(p.data) is not None else "")
                                    + f", sparsity {p.data.sparsity:.1%}")

        def done(result):
            self._set_running(False)
            s.adopt_finetune(result.snapshots, result.state, result.plan)
            self.status.setText("done" + (f": best epoch {result.best_epoch} kept" if result.best_epoch else "")
                                + f"; its test {metric.name} goes to the dashboard and the History tab.")
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
            self.session.adopt_finetune(snaps, snaps[-1].state, snaps[-1].plan)
            self.status.setText(f"kept {snaps[-1].label}; its test accuracy goes to the dashboard and the History.")
            self.evaluate_after()

    def _forget_partial(self) -> None:
        self._partial_snaps = []
        self.keep_btn.hide()

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
