"""The Sensitivity tab's loss-increase plot: the estimate's predicted curves at once, measured ones as they arrive.

When a scan starts, the instant estimate (``core/analyse/predict.py``) is computed first (a fraction of a second
to a few seconds on the built-in models): every layer's predicted loss increase -- the larger of the quadratic
½·Σ G_ii·w² over its pruned weights (G: the Gauss-Newton diagonal) and the increase measured on a small fixed
sample -- is drawn dashed. As the scan
measures a layer, its measured loss increase replaces the prediction (drawn solid; the prediction stays as a
faint dotted line) and the prediction's error is shown: measured / predicted (geometric mean) per layer.
The y axis is logarithmic: predictions and measurements can differ by orders of magnitude.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from explorer.core.analyse.predict import Prediction, prediction_error

FLOOR = 1e-7     # loss increases at or below this (or negative: noise) are drawn at the floor of the log axis


class PredictionPlot(QWidget):
    def __init__(self, palette):
        super().__init__()
        self.palette = palette
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setLogMode(x=False, y=True)
        self.plot.setLabel("bottom", "sparsity")
        self.plot.setLabel("left", "loss increase (log)")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setToolTip("Loss increase when only that layer is pruned: dashed = predicted (the larger of "
                             "½·G·w² over the pruned weights, G the Gauss-Newton diagonal, and the increase on a "
                             "stratified sample of the scan's split: its highest-loss samples exactly, a seeded "
                             "weighted draw from the rest), solid = measured by the scan")
        self._empty_range()
        self.label = QLabel("The predicted loss increase appears when a scan starts (it needs labels).")
        self.label.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.label)
        self.prediction: Prediction | None = None
        self.predicted: dict[str, pg.PlotDataItem] = {}
        self.measured_curves: dict[str, pg.PlotDataItem] = {}
        self.measured: dict[str, list] = {}
        self.errors: dict[str, dict] = {}
        self.sparsities: list[float] = []

    def _empty_range(self) -> None:
        """Decades from 10⁻⁴ to 1 until there is data: pyqtgraph's default (1 to 10 on the log axis) labels every
        minor tick and crowds them."""
        self.plot.setXRange(0, 1, padding=0.02)
        self.plot.setYRange(-4, 0, padding=0)      # log10 of the loss increase

    def clear(self, sparsities: list[float]) -> None:
        for c in list(self.predicted.values()) + list(self.measured_curves.values()):
            self.plot.removeItem(c)
        self.predicted, self.measured_curves, self.measured, self.errors = {}, {}, {}, {}
        self.prediction = None
        self.sparsities = list(sparsities)
        self.label.setText("computing the estimate (Gauss-Newton curvature, small sample)…")

    def _color(self, i: int):
        return self.palette[i % len(self.palette)]

    def set_prediction(self, pred: Prediction) -> None:
        self.prediction = pred
        self.sparsities = list(pred.sparsities)
        for i, l in enumerate(pred.layers):
            c = pg.PlotDataItem(pred.sparsities, np.maximum(l["delta_loss"], FLOOR),
                                pen=pg.mkPen(self._color(i), width=2, style=Qt.DashLine), name=l["name"])
            self.plot.addItem(c)
            self.predicted[l["name"]] = c
        self.plot.enableAutoRange()
        on = (f" and the loss on {pred.sampled} of {pred.population} {pred.split} samples ({pred.exact} with the "
              f"highest loss, the rest drawn)") if pred.sampled else ""
        self.label.setText(f"predicted from the Gauss-Newton curvature of the calibration samples{on} in "
                           f"{pred.seconds:.2f} s; measured curves replace them as the scan runs")

    def point(self, pt) -> None:
        """A scan point (``ScanPoint`` with loss and dense_loss)."""
        if pt.loss is None or pt.dense_loss is None or not self.sparsities:
            return
        vals = self.measured.setdefault(pt.layer, [None] * len(self.sparsities))
        if pt.index >= len(vals):
            return
        vals[pt.index] = pt.loss - pt.dense_loss
        self._draw_measured(pt.layer, vals)

    def set_measured(self, result) -> None:
        """A finished (or opened) scan: measured curves for every layer with losses."""
        if result.dense_loss is None:
            self.label.setText("This scan has no losses (an older file): nothing to compare the prediction with.")
            return
        if self.prediction is None:
            self.label.setText("Measured loss increase per layer; Predict draws the estimate next to it.")
        for l in result.layers:
            if isinstance(l.get("loss"), list):
                vals = [None if v is None else v - result.dense_loss for v in l["loss"]]
                self.measured[l["name"]] = vals
                self._draw_measured(l["name"], vals)

    def _draw_measured(self, name: str, vals: list) -> None:
        names = [l["name"] for l in self.prediction.layers] if self.prediction else list(self.measured)
        i = names.index(name) if name in names else len(names)
        xs = [self.sparsities[k] for k, v in enumerate(vals) if v is not None]
        ys = [max(v, FLOOR) for v in vals if v is not None]
        c = self.measured_curves.get(name)
        if c is None:
            color = self._color(i)
            c = pg.PlotDataItem([], [], pen=pg.mkPen(color, width=2), symbol="o", symbolSize=6, symbolBrush=color)
            self.plot.addItem(c)
            self.measured_curves[name] = c
        c.setData(xs, ys)
        pc = self.predicted.get(name)
        if pc is not None:      # the measurement replaces the prediction: keep it only as a faint dotted line
            pc.setPen(pg.mkPen(self._color(i), width=1, style=Qt.DotLine))
            if all(v is not None for v in vals):
                err = prediction_error(self.prediction.layer(name)["delta_loss"], vals)
                if err is not None:
                    self.errors[name] = err
                self._show_errors()

    def _show_errors(self) -> None:
        ratios = [e["ratio"] for e in self.errors.values() if e.get("ratio") is not None and math.isfinite(e["ratio"])]
        if ratios:
            lo, hi = min(ratios), max(ratios)
            span = f"×{lo:.3g}" if lo == hi else f"×{lo:.3g} … ×{hi:.3g}"
            self.label.setText(f"prediction error: measured = predicted {span} ({len(self.errors)} layer(s); "
                               "hover for each)")
        else:
            self.label.setText(f"prediction error: mean |error| {max(e['mae'] for e in self.errors.values()):.3g}")
        self.label.setToolTip("Measured ÷ predicted loss increase (geometric mean over the sparsities):\n" + "\n".join(
            f"{n}: ×{e['ratio']:.3g}, mean |error| {e['mae']:.3g}" if e.get("ratio") is not None
            else f"{n}: mean |error| {e['mae']:.3g}" for n, e in self.errors.items()))
