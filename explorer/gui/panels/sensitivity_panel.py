"""Sensitivity tab: scan layers, watch curves arrive, click a point to plan it, auto-allocate."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from explorer.core.analyse.predict import Prediction, predict_loss_increase
from explorer.core.analyse.sensitivity import ScanResult, ScanSpec, parse_sparsities, read_scan, scan, write_csv
from explorer.core.errors import ExplorerError
from explorer.core.fileio import atomic_write_json
from explorer.core.prune.criteria import CRITERIA
from explorer.core.train.metric import ACCURACY, metric_of

from ..plots.prediction_plot import PredictionPlot
from ..window.context import AppContext
from ..window.when_shown import WhenShown
from .allocation_box import AllocationBox
from .layer_table import GRANULARITY_CHOICES, criterion_tips, granularity_tips, make_combo

AUTO_PREDICT_MACS = 2e10   # a scan predicts first when the Fisher costs at most ~this many MACs (samples x MACs)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]

class SensitivityPanel(QWidget):
    """``finetune_config()`` gives the Fine-tune tab's settings (for Search)."""

    def __init__(self, ctx: AppContext, finetune_config):
        super().__init__()
        self.ctx = ctx
        self.session = ctx.session
        self.result: ScanResult | None = None
        self.quality = ACCURACY           # what the curves show: accuracy, or perplexity (lower is better)
        self._partial: dict[str, list] = {}
        self._curves: dict[str, pg.PlotDataItem] = {}
        self._points: list = []      # a running scan's points that arrived while the tab was hidden
        self._draw_points = WhenShown(self, self._flush_points)   # drawn now, or when the tab is shown (issue 24)
        self._draw_curves = WhenShown(self, self._result_curves)  # a finished scan's accuracy curves, likewise

        # --- controls
        self.sparsities = QLineEdit("0.4,0.5,0.6,0.7,0.8,0.9")
        self.sparsities.setToolTip("Sparsities to probe, in (0,1), comma-separated (the lab uses 0.4 … 0.9)")
        self.gran = make_combo(GRANULARITY_CHOICES, granularity_tips())
        self.crit = make_combo(list(CRITERIA), criterion_tips(), 72)
        self.only_selected = QCheckBox("selected layers")
        self.only_selected.setToolTip("Scan only the rows selected in the layer table")
        self.early = QCheckBox("early stop <")
        self.early.setToolTip("Skip a layer's higher sparsities once its accuracy falls below this floor; skipped "
                              "points are marked not measured (never extrapolated)")
        self.floor = QDoubleSpinBox()
        self.floor.setRange(0, 100)
        self.floor.setValue(50)
        self.floor.setSuffix(" %")
        self.latency = QCheckBox("latency")
        self.latency.setToolTip("Also measure the latency of the network with that layer's channels compacted "
                                "(channel granularity only; slower)")
        self.gran.currentTextChanged.connect(lambda g: self.latency.setEnabled(g == "channel"))
        self.latency.setEnabled(False)
        self.exact = QCheckBox("exact")
        self.exact.setToolTip("Evaluate every point on the whole split. Unticked (default): each point on a growing "
                              "sample until it is decided at 0.5, 1 and 2 points of allowed drop -- the same "
                              "allocation at those drops, sooner; points below a layer's decision keep their "
                              "sampled estimate")
        self.scan_btn = QPushButton("Scan (F8)")
        self.scan_btn.setObjectName("primary")
        self.scan_btn.clicked.connect(self.start_scan)
        self.predict_btn = QPushButton("Predict")
        self.predict_btn.setToolTip("Quick estimate without a scan: each layer's loss increase, the larger of "
                                    "½·Σ G_ii·w² over its pruned weights (G: the Gauss-Newton diagonal, the Fisher at "
                                    "the model's own predictions) and the increase measured on 128 samples of the "
                                    "scan's split (validation by default): the 96 with the highest loss exactly, 32 "
                                    "drawn from the rest and weighted)")
        self.predict_btn.clicked.connect(self.start_prediction)
        self.open_btn = QPushButton("Open…")
        self.open_btn.setToolTip("Load a scan JSON (from the CLI's sensitivity command or an earlier save)")
        self.open_btn.clicked.connect(self.open_scan_dialog)
        self.save_btn = QPushButton("Save…")
        self.save_btn.setToolTip("Save the scan as JSON (and CSV for spreadsheets)")
        self.save_btn.clicked.connect(self.save_scan_dialog)
        grid = QGridLayout()
        grid.setContentsMargins(6, 4, 6, 4)
        grid.addWidget(QLabel("sparsities"), 0, 0)
        grid.addWidget(self.sparsities, 0, 1, 1, 2)
        grid.addWidget(self.gran, 0, 3)
        grid.addWidget(self.crit, 0, 4)
        grid.addWidget(self.only_selected, 1, 0, 1, 2)
        grid.addWidget(self.early, 1, 2)
        grid.addWidget(self.floor, 1, 3)
        grid.addWidget(self.latency, 1, 4)
        row = QHBoxLayout()
        row.addWidget(self.scan_btn)
        row.addWidget(self.predict_btn)
        row.addWidget(self.exact)
        row.addStretch(1)
        row.addWidget(self.open_btn)
        row.addWidget(self.save_btn)
        grid.addLayout(row, 2, 0, 1, 5)

        # --- curves
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setLabel("bottom", "sparsity")
        self.plot.setLabel("left", "accuracy (%, val split)")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setToolTip("Accuracy when only that layer is pruned. Click a point to plan that layer at that "
                             "sparsity; drag the red line to set the allowed accuracy")
        self.legend = self.plot.addLegend(offset=(10, -10), labelTextSize="8pt")
        self.dense_line = pg.InfiniteLine(angle=0, pen=pg.mkPen((60, 60, 60), style=Qt.DashLine), label="dense",
                                          labelOpts={"position": 0.97, "color": (60, 60, 60), "anchors": [(1, 1), (1, 1)]})
        self.drop_line = pg.InfiniteLine(angle=0, movable=True, pen=pg.mkPen((220, 50, 47), width=2),
                                         label="allowed",
                                         labelOpts={"position": 0.5, "color": (220, 50, 47), "movable": True})
        self.drop_line.setToolTip("Allowed accuracy: layers whose curve stays above it may be pruned that far")
        self.plot.addItem(self.dense_line)
        self.plot.addItem(self.drop_line)
        self.dense_line.hide()
        self.drop_line.hide()
        self.drop_line.sigPositionChangeFinished.connect(self._line_moved)
        self.hover = QLabel(" ")
        self.hover.setObjectName("hoverLabel")

        # --- heat table
        self.heat = QTableWidget()
        self.heat.setEditTriggers(QTableWidget.NoEditTriggers)
        self.heat.setToolTip("Accuracy per layer and sparsity, coloured by the drop from dense (green small, red "
                             "large); double-click a cell to plan it")
        self.heat.cellDoubleClicked.connect(self._cell_clicked)
        self.heat.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)

        # --- allocation
        self.alloc = AllocationBox(ctx, finetune_config)
        self.alloc.drop_changed.connect(self._drop_changed)

        top = QVBoxLayout()
        box = QGroupBox("Scan")
        box.setLayout(grid)
        top.addWidget(box)
        top.addWidget(self.alloc)
        split = QSplitter(Qt.Vertical)
        pw = QWidget()
        pl = QVBoxLayout(pw)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.plot, 1)
        pl.addWidget(self.hover)
        self.prediction = PredictionPlot(PALETTE)
        plots = QSplitter(Qt.Horizontal)
        plots.addWidget(pw)
        plots.addWidget(self.prediction)
        plots.setSizes([600, 300])
        split.addWidget(plots)
        split.addWidget(self.heat)
        split.setSizes([420, 200])
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(split, 1)
        self.plot.scene().sigMouseMoved.connect(self._mouse_moved)

    # ------------------------------------------------------------------ scanning
    def follow_metric(self, metric) -> None:
        """Label the curves, the allowed line and the early stop for ``metric`` (the scan's or the dataset's)."""
        if metric is self.quality:
            return
        self.quality = metric
        split = self.plot.getAxis("left").labelText.split(",")[-1].strip(" )") or "val split"
        self.plot.setLabel("left", f"{metric.name} ({metric.unit + ', ' if metric.unit else ''}{split})")
        if metric.higher_is_better:
            self.early.setText("early stop <")
            self.floor.setRange(0, 100)
            self.floor.setSuffix(" %")
            self.floor.setValue(50)
        else:
            self.early.setText("early stop >")
            self.floor.setRange(1, 1e9)
            self.floor.setSuffix("")
            self.floor.setValue(1000)
        self.early.setToolTip(f"Skip a layer's higher sparsities once its {metric.name} is worse than this "
                              "(points skipped are marked not measured, never extrapolated)")
        self.drop_line.setToolTip(f"Allowed {metric.name}: layers whose curve stays on the good side of it may be "
                                  "pruned that far")

    def start_scan(self) -> None:
        s, ctx = self.session, self.ctx
        if not s.loaded_ok:
            return
        self.follow_metric(metric_of(s.dataset))
        if ctx.runner.busy:
            ctx.status("another job is running; wait or cancel it", 4000)
            return
        try:
            sps = parse_sparsities(self.sparsities.text())
            layers = ctx.selected_layers() if self.only_selected.isChecked() else None
            if self.only_selected.isChecked() and not layers:
                raise ExplorerError("No layers selected.", "Select rows in the layer table, or untick "
                                                           "'selected layers'.")
            spec = ScanSpec(sparsities=sps, granularity=self.gran.currentText(), criterion=self.crit.currentText(),
                            layers=layers, early_stop=self.floor.value() if self.early.isChecked() else None,
                            latency=self.latency.isChecked() and self.latency.isEnabled(),
                            exact=self.exact.isChecked())
            if not s.dataset.has_labels:
                raise ExplorerError(f"A scan measures {self.quality.name}, which needs labels; {s.dataset.spec} has none.",
                                    "Choose a labelled dataset.")
        except Exception as e:
            ctx.report_error(e)
            return
        self._begin(spec)
        snap = s.snapshot()       # the job's frozen input: edits meanwhile do not reach it

        def work(progress, cancel):
            # first the instant estimate (the Fisher is quick), then the measurements that replace it
            state = snap.masked_state()
            pred = self._predict_into(progress, cancel, spec, snap, state)
            # the planned model (applied or not), computed here: a cancelled scan leaves the session untouched
            return scan(snap, spec, progress, cancel, state=state, device=snap.device, prediction=pred)

        def on_progress(p):
            if isinstance(p.data, Prediction):
                self.prediction.set_prediction(p.data)
            elif p.data == "skipped":
                self.prediction.label.setText("No prediction with this scan: the Fisher of "
                                              f"{s.calibration_samples} samples takes a while on this model. "
                                              "Predict computes it.")
            elif p.data is not None and hasattr(p.data, "layer"):
                self._points.append(p.data)
                self._draw_points()

        def done(result):
            self.set_result(result)
            s.results.record_scan(result)
            ctx.status(f"scan done in {result.seconds:.1f}s ({result.method} method, "
                       f"{'exact' if result.sequential is None else 'sequential'})", 6000)

        ctx.runner.run("Sensitivity scan", work, on_done=done, on_progress=on_progress,
                       on_cancel=lambda: ctx.status("scan cancelled; the model is unchanged", 5000))

    def _predict_into(self, progress, cancel, spec: ScanSpec, snap, state=None) -> Prediction | None:
        """Send the predicted loss increase as a Progress record (nothing when it cannot be predicted, or when the
        Fisher is not known yet and would take long to compute: then Predict computes it on request). Runs in the
        scan's job, on its snapshot."""
        from explorer.core.jobs import Progress
        if not snap.calibration.has("true_fisher") and \
                snap.profile.total_macs * snap.calibration_samples > AUTO_PREDICT_MACS:
            progress(Progress(None, "no prediction: the Fisher takes a while on this model (press Predict)",
                              "skipped"))
            return None
        try:
            pred = predict_loss_increase(snap, spec.sparsities, spec.granularity, spec.criterion, spec.layers,
                                         cancel=cancel, split=spec.split, state=state)
        except ExplorerError:
            return None
        progress(Progress(None, f"predicted in {pred.seconds:.2f} s", pred))
        return pred

    def start_prediction(self) -> None:
        """Only the instant estimate (no scan)."""
        s, ctx = self.session, self.ctx
        if not s.loaded_ok or not ctx.require_labels("The loss prediction (its Fisher)"):
            return
        try:
            sps = parse_sparsities(self.sparsities.text())
            layers = ctx.selected_layers() if self.only_selected.isChecked() else None
            spec = ScanSpec(sparsities=sps, granularity=self.gran.currentText(), criterion=self.crit.currentText(),
                            layers=layers or None)
        except Exception as e:
            ctx.report_error(e)
            return

        snap = s.snapshot()

        def work(progress, cancel):
            return predict_loss_increase(snap, spec.sparsities, spec.granularity, spec.criterion, spec.layers,
                                         progress=progress, cancel=cancel)

        if ctx.start_job("Predicting loss increase", work, on_done=self.prediction.set_prediction):
            self.prediction.clear(sps)

    def _begin(self, spec: ScanSpec) -> None:
        self.result = None
        self._points = []           # (a finished scan's result replaces its points)
        self.prediction.clear(spec.sparsities)
        self._spec = spec
        self._partial = {}
        for c in self._curves.values():
            self.plot.removeItem(c)
            self.legend.removeItem(c)
        self._curves = {}
        self.heat.clear()
        self.heat.setRowCount(0)
        self.heat.setColumnCount(len(spec.sparsities))
        self.heat.setHorizontalHeaderLabels([f"{x:.0%}" for x in spec.sparsities])
        self.plot.setXRange(min(spec.sparsities) - 0.03, max(spec.sparsities) + 0.03)

    def _curve(self, name: str) -> pg.PlotDataItem:
        c = self._curves.get(name)
        if c is None:
            color = PALETTE[len(self._curves) % len(PALETTE)]
            c = pg.PlotDataItem([], [], pen=pg.mkPen(color, width=2), symbol="o", symbolSize=7,
                                symbolBrush=color, name=name)
            c.sigPointsClicked.connect(lambda item, pts, ev, n=name: self._clicked(n, pts))
            self.plot.addItem(c)
            self._curves[name] = c
        return c

    def _flush_points(self) -> None:
        points, self._points = self._points, []
        for pt in points:
            self._point(pt)
            self.prediction.point(pt)

    def _point(self, pt) -> None:
        sps = self._spec.sparsities
        accs = self._partial.setdefault(pt.layer, [None] * len(sps))
        accs[pt.index] = pt.accuracy
        xs = [sps[i] for i, a in enumerate(accs) if a is not None]
        ys = [a for a in accs if a is not None]
        self._curve(pt.layer).setData(xs, ys)
        self._heat_row(pt.layer, accs, None)

    def set_result(self, result: ScanResult) -> None:
        pred = self.prediction.prediction
        self._spec = ScanSpec(result.sparsities, result.granularity, result.criterion)
        self._begin(self._spec)
        self.result = result
        if pred is not None and pred.sparsities == list(result.sparsities) and pred.criterion == result.criterion \
                and pred.granularity == result.granularity:
            self.prediction.set_prediction(pred)
        self.prediction.set_measured(result)
        self.follow_metric(result.measure)
        for l in result.layers:
            self._heat_row(l["name"], l["accuracy"], result.dense_accuracy)
        self._draw_curves()      # the curves: now, or when the tab is next shown
        d = result.dense_accuracy
        self.dense_line.setValue(d)
        self.dense_line.show()
        self.alloc.set_scan(result)
        drop = self.alloc.allowed_drop()
        m = self.quality
        if drop is not None:
            self.drop_line.setValue(m.floor(d, drop))
        else:   # the lab's reference line (accuracy); half again the dense perplexity
            self.drop_line.setValue(100 - (100 - d) * 1.5 if m.higher_is_better else d * 1.5)
        self.drop_line.show()
        self._label_line()

    def _result_curves(self) -> None:
        result = self.result
        if result is None:
            return
        for l in result.layers:
            accs = l["accuracy"]
            xs = [result.sparsities[i] for i, a in enumerate(accs) if a is not None]
            ys = [a for a in accs if a is not None]
            self._curve(l["name"]).setData(xs, ys)
        self.plot.enableAutoRange()

    def _heat_row(self, name: str, accs, dense) -> None:
        names = [self.heat.verticalHeaderItem(r).text() for r in range(self.heat.rowCount())
                 if self.heat.verticalHeaderItem(r)]
        if name in names:
            r = names.index(name)
        else:
            r = self.heat.rowCount()
            self.heat.insertRow(r)
            self.heat.setVerticalHeaderItem(r, QTableWidgetItem(name))
        dense = dense if dense is not None else (self.result.dense_accuracy if self.result else None)
        for c, a in enumerate(accs):
            it = QTableWidgetItem("—" if a is None else f"{a:.1f}")
            it.setTextAlignment(Qt.AlignCenter)
            if a is None:
                it.setToolTip("not measured (early stop)" if self.result else "pending")
            elif dense is not None:
                m = self.quality
                drop = max(0.0, m.drop(dense, a))       # points, or % more perplexity
                t = min(1.0, drop / (10.0 if m.higher_is_better else 50.0))
                it.setBackground(QColor(int(120 + 135 * t), int(200 - 120 * t), int(120 - 60 * t)))
                it.setToolTip(f"{name} at {self._spec.sparsities[c]:.0%}: {m.format(a)} ({m.drop_label} {drop:.2f})")
            self.heat.setItem(r, c, it)

    # ------------------------------------------------------------------ interaction
    def _clicked(self, name: str, pts) -> None:
        if not pts:
            return
        x = float(pts[0].pos().x())
        try:
            self.session.set_layer(name, sparsity=x, granularity=self._spec.granularity,
                                   criterion=self._spec.criterion)
            self.session.select(name)
            self.ctx.status(f"planned {name} at {x:.0%}", 4000)
        except Exception as e:
            self.ctx.report_error(e)

    def _cell_clicked(self, r: int, c: int) -> None:
        item = self.heat.verticalHeaderItem(r)
        if item is None:
            return
        name, x = item.text(), self._spec.sparsities[c]
        try:
            self.session.set_layer(name, sparsity=x, granularity=self._spec.granularity,
                                   criterion=self._spec.criterion)
            self.session.select(name)
        except Exception as e:
            self.ctx.report_error(e)

    def _mouse_moved(self, pos) -> None:
        if not self._curves or not self.plot.sceneBoundingRect().contains(pos):
            return
        p = self.plot.getViewBox().mapSceneToView(pos)
        best, bd = None, None
        (x0, x1), (y0, y1) = self.plot.getViewBox().viewRange()
        for name, c in self._curves.items():
            xs, ys = c.getData()
            if xs is None or not len(xs):
                continue
            d = ((np.asarray(xs) - p.x()) / max(x1 - x0, 1e-9)) ** 2 + ((np.asarray(ys) - p.y()) / max(y1 - y0, 1e-9)) ** 2
            i = int(np.argmin(d))
            if bd is None or d[i] < bd:
                best, bd = (name, xs[i], ys[i]), d[i]
        if best and bd < 0.002:
            self.hover.setText(f"{best[0]}: {best[1]:.0%} → {self.quality.format(best[2])}  (click to plan)")
            for name, c in self._curves.items():
                c.setPen(pg.mkPen(c.opts["symbolBrush"], width=4 if name == best[0] else 1.5))
        else:
            self.hover.setText(" ")

    def _line_moved(self) -> None:
        if self.result is None:
            return
        self._label_line()
        self.alloc.set_drop(max(0.0, self.quality.drop(self.result.dense_accuracy, self.drop_line.value())))

    def _drop_changed(self, v: float) -> None:
        if self.result is not None:
            self.drop_line.setValue(self.quality.floor(self.result.dense_accuracy, v))
        self._label_line()

    def _label_line(self) -> None:
        if self.result is not None:
            y, m = self.drop_line.value(), self.quality
            worse = m.drop(self.result.dense_accuracy, y)
            if m.higher_is_better:
                self.drop_line.label.setFormat(f"allowed ≥ {y:.2f}% (drop {worse:.2f})")
            else:
                self.drop_line.label.setFormat(f"allowed ≤ {y:.2f} (+{worse:.1f}%)")

    # ------------------------------------------------------------------ files
    def open_scan_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open sensitivity scan", "", "Scans (*.json);;All files (*)")
        if path:
            self.open_scan(path)

    def open_scan(self, path: str) -> None:
        try:
            r = read_scan(path)
            missing = [l["name"] for l in r.layers if l["name"] not in set(self.session.layer_names)]
            if missing:
                raise ExplorerError(f"The scan is for {r.model}: this model has no layer(s) {', '.join(missing[:4])}.")
        except Exception as e:
            self.ctx.report_error(e)
            return
        self.session.results.record_scan(r)
        self.set_result(r)

    def save_scan_dialog(self) -> None:
        if self.result is None:
            self.ctx.status("nothing to save yet", 3000)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save scan", "sensitivity.json", "JSON (*.json)")
        if path:
            self.save_scan(path)

    def save_scan(self, path: str) -> None:
        try:
            atomic_write_json(path, self.result.to_json())
            write_csv(self.result, path[:-5] + ".csv" if path.endswith(".json") else path + ".csv")
            self.ctx.status(f"saved {path} (+ .csv)", 5000)
        except Exception as e:
            self.ctx.report_error(e)
