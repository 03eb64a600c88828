"""Fine-tune tab: settings, start/cancel, live loss and accuracy curves, snapshots of iterative steps."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QMessageBox,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget, QCheckBox)

from explorer.core.train.evaluate import evaluate
from explorer.core.train.finetune import FinetuneConfig, finetune
from explorer.core.prune.recipe import Plan
from .results import model_copy


class FinetunePanel(QWidget):
    def __init__(self, win):
        super().__init__()
        self.win = win
        self.session = win.session
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(3)
        self.epochs.setToolTip("Epochs of training per step (masks enforced: pruned weights stay exactly 0)")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-6, 10.0)
        self.lr.setSingleStep(0.001)
        self.lr.setValue(0.01)
        self.lr.setToolTip("Initial learning rate (cosine-annealed to 0 over each step)")
        self.optimizer = QComboBox()
        self.optimizer.addItems(["sgd", "adam"])
        self.optimizer.setToolTip("SGD with momentum 0.9 and weight decay 1e-4 (the lab's recipe), or Adam")
        self.optimizer.currentTextChanged.connect(lambda o: self.lr.setValue(0.001 if o == "adam" else 0.01))
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
        self.cancel_btn.clicked.connect(win.runner.cancel)
        self.cancel_btn.setEnabled(False)
        self.status = QLabel("Plan some sparsity, then fine-tune to recover accuracy.")
        self.status.setWordWrap(True)

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
        left.addStretch(1)
        plots = QVBoxLayout()
        plots.addWidget(self.acc_plot, 1)
        plots.addWidget(self.loss_plot, 1)
        lay = QHBoxLayout(self)
        lay.addLayout(left)
        lay.addLayout(plots, 1)
        self.act = win._act("&Fine-tune", self._from_menu, QKeySequence("F7"),
                            "Fine-tune the pruned model with masks enforced", win.run_menu)
        self.history = []

    def _from_menu(self) -> None:
        i = self.win.tabs.indexOf(self)
        self.win.tabs.setCurrentIndex(i)
        self.start()

    def config(self) -> FinetuneConfig:
        return FinetuneConfig(epochs=self.epochs.value(), lr=self.lr.value(), optimizer=self.optimizer.currentText(),
                              batch_size=self.batch.value(), cosine=self.cosine.isChecked(), seed=self.seed.value(),
                              schedule=self.schedule.currentText(), steps=self.steps.value())

    def start(self) -> None:
        s, win = self.session, self.win
        if not s.loaded_ok or win.runner.busy:
            if win.runner.busy:
                win.status("another job is running; wait or cancel it", 4000)
            return
        try:
            cfg = self.config().validated()
        except Exception as e:
            win.report_error(e)
            return
        if not win.require_labels("Fine-tuning"):
            return
        target = s.plan.copy()
        # one-shot trains the planned masks; iterative/AGP go there from what the model holds now
        start = target if cfg.schedule == "oneshot" else s.applied_plan.copy()
        names = s.layer_names
        self.history = []
        self.partial: dict = {}
        self.loss_curve.setData([], [])
        self.acc_curve.setData([], [])
        dense = s.results.get("dense_eval")
        if dense is not None and dense.accuracy is not None:
            self.dense_line.setValue(dense.accuracy)
            self.dense_line.show()

        def work(progress, cancel):
            module = model_copy(s, s.masked_state(start))     # in the worker: big models copy slowly
            result = finetune(module, s.dataset, names, target, start, s.masks_for_state, cfg, progress, cancel,
                              partial=self.partial)
            for snap in result.snapshots:   # test accuracy of every step, for the History (Pareto) view
                m = model_copy(s, snap.state)
                snap.test_accuracy = evaluate(m, s.dataset, "test", cancel=cancel).accuracy
            return result

        def on_progress(p):
            if p.data is not None and hasattr(p.data, "train_loss"):
                self.history.append(p.data)
                xs = [r.epoch for r in self.history]
                self.loss_curve.setData(xs, [r.train_loss for r in self.history])
                accs = [(r.epoch, r.val_accuracy) for r in self.history if r.val_accuracy is not None]
                if accs:
                    self.acc_curve.setData([a for a, _ in accs], [b for _, b in accs])
                self.status.setText(f"epoch {p.data.epoch}: loss {p.data.train_loss:.4f}"
                                    + (f", val {p.data.val_accuracy:.2f}%" if p.data.val_accuracy is not None else "")
                                    + f", sparsity {p.data.sparsity:.1%}")

        def done(result):
            self._finish(result.snapshots, result.state, result.plan, result.best_epoch)

        def cancelled():
            snaps = self.partial.get("snapshots") or []
            self._set_running(False)
            if snaps and cfg.schedule == "iterative":
                ask = QMessageBox.question(win, "Fine-tuning cancelled",
                                           f"{len(snaps)} of {cfg.steps} step(s) finished. Keep the last finished "
                                           f"step ({snaps[-1].label})? No leaves the model as it was before.",
                                           QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes) \
                    if not win._closing else QMessageBox.No
                if ask == QMessageBox.Yes:
                    self._finish(snaps, snaps[-1].state, snaps[-1].plan, None)
                    return
            self.status.setText("cancelled: the model is as it was before fine-tuning")

        def failed(e):
            self._set_running(False)
            self.status.setText(f"failed: {e}")
            win.report_error(e)

        self._set_running(True)
        self.status.setText("fine-tuning…")
        win.runner.run("Fine-tuning", work, on_done=done, on_progress=on_progress, on_cancel=cancelled,
                       on_error=failed)

    def _set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)

    def _finish(self, snapshots, state, plan: Plan, best_epoch) -> None:
        s = self.session
        self._set_running(False)
        for snap in snapshots[:-1]:
            # earlier iterative steps: remember them so the History tab can return to them
            s.adopt(snap.state, snap.plan, f"fine-tuned ({snap.label})")
            s.record(f"{snap.label}: {snap.sparsity:.0%}", accuracy=getattr(snap, "test_accuracy", None))
        s.adopt(state, plan, "fine-tuned")
        s._push_undo()
        s.plan = plan.copy()
        s.plan_changed.emit(None)
        s.results.pop("current_eval", None)
        self.status.setText("done" + (f": best epoch {best_epoch} kept" if best_epoch else "")
                            + "; its test accuracy goes to the dashboard and the History tab.")
        self.win.results.evaluate()
