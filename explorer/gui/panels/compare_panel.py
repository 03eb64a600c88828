"""Criteria tab: which criterion is best on this model? Accuracy vs sparsity per criterion, on the same plan.

The job is the CLI's ``compare`` (core ``analyse.compare``): every ticked criterion prunes the same layers to
the same sparsities; curves arrive as points are measured -- one-shot dashed, fine-tuned solid -- on the
validation split. The calibration-sample count set here is the session's: hessian, wanda, apoz and
reconstruction all use it, and recipes record it.
"""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QSignalBlocker, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from explorer.core.analyse.compare import DEFAULT_CRITERIA, CompareResult, compare_criteria, winners, write_compare
from explorer.core.analyse.sensitivity import parse_sparsities
from explorer.core.errors import ExplorerError
from explorer.core.prune.calibration import MAX_CALIBRATION_SAMPLES
from explorer.core.prune.criteria import CRITERIA

from ..window.context import AppContext
from .layer_table import GRANULARITY_CHOICES, granularity_tips, make_combo
from .sensitivity_panel import PALETTE


class ComparePanel(QWidget):
    """``finetune_config()`` gives the Fine-tune tab's settings (learning rate, optimizer, ...)."""

    def __init__(self, ctx: AppContext, finetune_config):
        super().__init__()
        self.ctx = ctx
        self.session = ctx.session
        self.finetune_config = finetune_config
        self.result: CompareResult | None = None
        self._points: dict[tuple[str, bool], dict[int, float]] = {}
        self._curves: dict[tuple[str, bool], pg.PlotDataItem] = {}
        self._sparsities: list[float] = []
        self._colors: dict[str, tuple] = {}

        self.boxes: dict[str, QCheckBox] = {}
        crit_grid = QGridLayout()
        crit_grid.setContentsMargins(0, 0, 0, 0)
        for i, (name, c) in enumerate(CRITERIA.items()):
            b = QCheckBox(name)
            b.setToolTip(c.tooltip)
            b.setChecked(name in DEFAULT_CRITERIA)
            self.boxes[name] = b
            crit_grid.addWidget(b, i // 5, i % 5)      # two rows (a third would grow every tab page's height)
        self.sparsities = QLineEdit("0.5,0.7,0.9")
        self.sparsities.setToolTip("Sparsities to compare at, in (0,1), comma-separated (every layer of the plan "
                                   "at that sparsity)")
        self.gran = make_combo(GRANULARITY_CHOICES, granularity_tips())
        self.gran.setToolTip("Granularity of the shared plan (bn-scale and apoz need channel)")
        self.reconstruct = QCheckBox("reconstruct")
        self.reconstruct.setToolTip("Refit the remaining weights on the calibration samples after choosing each mask "
                                    "(least squares to the dense layer's output), before measuring")
        self.epochs = QSpinBox()
        self.epochs.setRange(0, 100)
        self.epochs.setToolTip("Also fine-tune this many epochs after pruning (0: one-shot only); the other "
                               "settings come from the Fine-tune tab, the best epoch is chosen on training "
                               "accuracy so the validation numbers stay selection-free")
        self.samples = QSpinBox()
        self.samples.setRange(1, MAX_CALIBRATION_SAMPLES)
        self.samples.setToolTip("Calibration samples (seeded, from the training split) for hessian, wanda, apoz and "
                                "reconstruction — everywhere in the app; recipes record the number")
        self.samples.editingFinished.connect(self._samples_edited)
        self.start_btn = QPushButton("Compare (Shift+F9)")
        self.start_btn.setObjectName("primary")
        self.start_btn.setToolTip("Prune with every ticked criterion at every sparsity and measure validation "
                                  "accuracy (in the background; Esc cancels)")
        self.start_btn.clicked.connect(self.start)
        self.save_btn = QPushButton("Save…")
        self.save_btn.setToolTip("Save the comparison as JSON (the CLI's compare format)")
        self.save_btn.clicked.connect(self.save_dialog)
        self.status = QLabel("Tick criteria and compare: which one keeps most accuracy on this model?")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("criteria", crit_grid)
        form.addRow("sparsities", self.sparsities)
        row = QHBoxLayout()
        row.addWidget(self.gran)
        row.addWidget(self.reconstruct)
        row.addStretch(1)
        form.addRow("granularity", row)
        form.addRow("fine-tune epochs", self.epochs)
        form.addRow("calibration samples", self.samples)
        btns = QHBoxLayout()
        btns.addWidget(self.start_btn)
        btns.addStretch(1)
        btns.addWidget(self.save_btn)
        form.addRow(btns)
        box = QGroupBox("Compare criteria")
        box.setLayout(form)

        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("bottom", "sparsity")
        self.plot.setLabel("left", "validation accuracy (%)")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setToolTip("Accuracy per criterion on the same plan: dashed = one-shot, solid = after fine-tuning")
        self.plot.setTitle("dashed: one-shot · solid: fine-tuned", size="9pt")
        self.legend = self.plot.addLegend(offset=(10, -10), labelTextSize="8pt")
        self.dense_line = pg.InfiniteLine(angle=0, pen=pg.mkPen((60, 60, 60), style=Qt.DotLine), label="dense",
                                          labelOpts={"position": 0.95, "color": (60, 60, 60)})
        self.plot.addItem(self.dense_line)
        self.dense_line.hide()
        self.table = QTableWidget()
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setToolTip("Validation accuracy per criterion (rows) and sparsity; the best at each sparsity is "
                              "bold")
        split = QSplitter(Qt.Vertical)
        split.addWidget(self.plot)
        split.addWidget(self.table)
        split.setSizes([420, 160])
        lay = QVBoxLayout(self)
        lay.addWidget(box)
        lay.addWidget(self.status)
        lay.addWidget(split, 1)
        self.session.loaded.connect(self._sync_samples)
        # calibration samples changed (or a recipe was loaded): a whole-plan event, never a slider tick
        self.session.editor.changed.connect(lambda names: names is None and self._sync_samples())
        if self.session.loaded_ok:
            self._sync_samples()

    # ------------------------------------------------------------------ settings
    def _sync_samples(self) -> None:
        with QSignalBlocker(self.samples):
            self.samples.setValue(self.session.calibration_samples)

    def _samples_edited(self) -> None:
        try:
            self.session.set_calibration_samples(self.samples.value())
        except Exception as e:
            self.ctx.report_error(e)

    def criteria(self) -> list[str]:
        return [n for n, b in self.boxes.items() if b.isChecked()]

    # ------------------------------------------------------------------ the job
    def start(self) -> None:
        s, ctx = self.session, self.ctx
        if not s.loaded_ok:
            return
        try:
            crits = self.criteria()
            if not crits:
                raise ExplorerError("No criterion ticked.", "Tick at least one criterion to compare.")
            sps = parse_sparsities(self.sparsities.text())
            self._samples_edited()
            cfg = None
            if self.epochs.value() > 0:
                from dataclasses import replace
                cfg = replace(self.finetune_config(), epochs=self.epochs.value()).validated()
        except Exception as e:
            ctx.report_error(e)
            return
        if not ctx.require_labels("Comparing criteria"):
            return
        gran, rec = self.gran.currentText(), self.reconstruct.isChecked()

        snap = s.snapshot()

        def work(progress, cancel):
            return compare_criteria(snap, crits, sps, gran, reconstruct=rec, finetune=cfg, progress=progress,
                                    cancel=cancel, device=snap.device)

        def on_progress(p):
            if p.data is not None and hasattr(p.data, "criterion"):
                self._point(p.data)

        def failed(e):
            self._running(False)
            self.status.setText(f"failed: {e}")
            ctx.report_error(e)

        def cancelled():
            self._running(False)
            self.status.setText("cancelled; the model is unchanged")

        if ctx.start_job("Comparing criteria", work, on_done=self.set_result, on_progress=on_progress,
                         on_error=failed, on_cancel=cancelled):
            self._begin(crits, sps)
            self._running(True)
            self.status.setText(f"comparing {', '.join(crits)} at {', '.join(f'{x:.0%}' for x in sps)} "
                                f"({gran}{', reconstructed' if rec else ''})…")

    def _running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)

    def _begin(self, crits: list[str], sps: list[float]) -> None:
        self.result = None
        self._sparsities = list(sps)
        self._points = {}
        for c in self._curves.values():
            self.plot.removeItem(c)
            self.legend.removeItem(c)
        self._curves = {}
        self.dense_line.hide()
        self._colors = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(crits)}
        self.plot.setXRange(min(sps) - 0.03, max(sps) + 0.03)
        self._fill_table(crits, {})

    def _curve(self, crit: str, finetuned: bool) -> pg.PlotDataItem:
        key = (crit, finetuned)
        c = self._curves.get(key)
        if c is None:
            color = self._colors.get(crit, PALETTE[len(self._colors) % len(PALETTE)])
            pen = pg.mkPen(color, width=2, style=Qt.SolidLine if finetuned else Qt.DashLine)
            c = pg.PlotDataItem([], [], pen=pen, symbol="o" if finetuned else "t", symbolSize=7, symbolBrush=color,
                                name=None if finetuned else crit)
            self.plot.addItem(c)
            self._curves[key] = c
        return c

    def _point(self, pt) -> None:
        pts = self._points.setdefault((pt.criterion, pt.finetuned), {})
        pts[pt.index] = pt.accuracy
        idx = sorted(pts)
        self._curve(pt.criterion, pt.finetuned).setData([self._sparsities[i] for i in idx], [pts[i] for i in idx])
        crits = [c for c, _ in self._colors.items()]
        self._fill_table(crits, self._points)

    def set_result(self, result: CompareResult) -> None:
        self._running(False)
        self._begin([c["name"] for c in result.criteria], result.sparsities)
        self.result = result
        for c in result.criteria:
            for ft, key in ((False, "accuracy"), (True, "accuracy_finetuned")):
                if c[key] is not None:
                    self._points[(c["name"], ft)] = dict(enumerate(c[key]))
                    self._curve(c["name"], ft).setData(result.sparsities, c[key])
        crits = [c["name"] for c in result.criteria]
        self._fill_table(crits, self._points)
        if result.dense_accuracy is not None:
            self.dense_line.setValue(result.dense_accuracy)
            self.dense_line.label.setFormat(f"dense {result.dense_accuracy:.2f}%")
            self.dense_line.show()
        self.plot.enableAutoRange()
        best = ", ".join(f"{s:.0%}: {w}" for s, w in zip(result.sparsities, winners(result)))
        line = f"best one-shot on {result.split} — {best}"
        if result.finetune_epochs:
            line += "; after fine-tuning — " + ", ".join(
                f"{s:.0%}: {w}" for s, w in zip(result.sparsities, winners(result, finetuned=True)))
        for n in result.notes:
            line += f"\nnote: {n}"
        self.status.setText(line)
        self.ctx.status("comparison done", 5000)

    def _fill_table(self, crits: list[str], points: dict) -> None:
        sps = self._sparsities
        finetuned = any(ft for (_, ft) in points)
        cols = [f"{s:.0%}" for s in sps] + ([f"{s:.0%} ft" for s in sps] if finetuned else [])
        self.table.clear()
        self.table.setColumnCount(len(cols))
        self.table.setHorizontalHeaderLabels(cols)
        self.table.setRowCount(len(crits))
        self.table.setVerticalHeaderLabels(crits)
        for j, ft in enumerate([False, True] if finetuned else [False]):
            for i in range(len(sps)):
                vals = {c: points.get((c, ft), {}).get(i) for c in crits}
                known = [v for v in vals.values() if v is not None]
                best = max(known) if known else None
                for r, c in enumerate(crits):
                    v = vals[c]
                    it = QTableWidgetItem("…" if v is None else f"{v:.2f}")
                    it.setTextAlignment(Qt.AlignCenter)
                    if v is not None and v == best and len(known) > 1:
                        f = it.font()
                        f.setBold(True)
                        it.setFont(f)
                    self.table.setItem(r, j * len(sps) + i, it)

    # ------------------------------------------------------------------ files
    def save_dialog(self) -> None:
        if self.result is None:
            self.ctx.status("nothing to save yet: run a comparison first", 3000)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save comparison", "compare.json", "JSON (*.json)")
        if path:
            self.save(path)

    def save(self, path: str) -> None:
        try:
            write_compare(self.result, path)
            self.ctx.status(f"saved {path}", 5000)
        except Exception as e:
            self.ctx.report_error(e)
