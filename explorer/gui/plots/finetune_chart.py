"""The Fine-tune tab's charts.

``RunChart``: validation accuracy per epoch with an epoch-0 point (the just-pruned model, before any training)
and, at every pruning step, the dip right after it; the sparsity on a second axis with a marker where the masks
changed; the dense model's validation accuracy as a reference line; earlier runs stay, dimmed, with a legend,
so one-shot, iterative and AGP compare on one chart. ``ScheduleChart``: test accuracy against sparsity of
every finished run, one curve per schedule (Han et al. 2015, Figure 5). ``LossChart``: training loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyqtgraph as pg
from PySide6.QtCore import Qt

from ..window.when_shown import WhenShown

SCHEDULE_COLORS = {"oneshot": (220, 110, 30), "iterative": (40, 150, 80), "agp": (120, 70, 200)}
SPARSITY_COLOR = (110, 110, 110)
MAX_KEPT_RUNS = 5


def _color(schedule: str, alpha: int = 255):
    r, g, b = SCHEDULE_COLORS.get(schedule, (40, 120, 220))
    return (r, g, b, alpha)


@dataclass
class RunTrace:
    """What the chart draws of one run, built from its EpochRecords."""

    label: str
    schedule: str
    start_sparsity: float = 0.0
    acc: list[tuple[float, float]] = field(default_factory=list)       # (x, val accuracy %)
    sparsity: list[tuple[float, float]] = field(default_factory=list)  # (x, sparsity %)
    markers: list[tuple[float, float]] = field(default_factory=list)   # where the masks changed
    loss: list[tuple[float, float]] = field(default_factory=list)
    epochs: int = 0

    def __post_init__(self):
        self.sparsity.append((0.0, 100.0 * self.start_sparsity))

    def add(self, r) -> None:
        """Add one EpochRecord: a pruning step that opened the epoch is a dip at x = epoch - 1."""
        x0, x1 = float(r.epoch - 1), float(r.epoch)
        s1 = 100.0 * r.sparsity
        prev_s = self.sparsity[-1][1]
        if r.pruned_accuracy is not None:
            self.acc.append((x0, r.pruned_accuracy))
        if r.step_sparsity is not None and abs(100.0 * r.step_sparsity - prev_s) > 1e-9:   # pruned, then trained
            self.sparsity.append((x0, 100.0 * r.step_sparsity))
            self.markers.append((x0, 100.0 * r.step_sparsity))
        val = r.val_accuracy if r.val_accuracy is not None else (
            r.val_perplexity if getattr(r, "val_perplexity", None) is not None else getattr(r, "val_mse", None))
        if val is not None:             # a language model's curve is its validation perplexity
            self.acc.append((x1, val))
        if abs(self.sparsity[-1][1] - s1) > 1e-9:                       # gradual (AGP) within the epoch
            self.markers.append((x1, s1))
        self.sparsity.append((x1, s1))
        self.loss.append((x1, r.train_loss))
        self.epochs = r.epoch


def _xy(points):
    return [p[0] for p in points], [p[1] for p in points]


class RunChart(pg.PlotWidget):
    """Validation accuracy (left axis) and sparsity (right axis) per epoch, this run and the ones before."""

    def __init__(self):
        super().__init__()
        pi = self.getPlotItem()
        pi.setTitle("validation accuracy and sparsity per epoch")
        pi.setLabel("left", "validation accuracy (%)")
        pi.setLabel("bottom", "epoch (0 = just pruned, before training)")
        pi.showAxis("right")
        pi.setLabel("right", "sparsity (%)")
        pi.showGrid(x=True, y=True, alpha=0.15)
        self.legend = pi.addLegend(offset=(-8, -8), labelTextSize="8pt", verSpacing=-6,
                                   brush=pg.mkBrush(255, 255, 255, 210))
        self.svb = pg.ViewBox()
        pi.scene().addItem(self.svb)
        pi.getAxis("right").linkToView(self.svb)
        self.svb.setXLink(pi)
        self.svb.setYRange(0, 100, padding=0.02)
        self.svb.setMouseEnabled(x=False, y=False)
        pi.vb.sigResized.connect(self._sync)
        self.dense_line = pg.InfiniteLine(angle=0, pen=pg.mkPen((90, 90, 90), style=Qt.DashLine),
                                          label="dense (val)", labelOpts={"position": 0.5, "color": (90, 90, 90),
                                                                          "anchors": [(0.5, 0), (0.5, 0)]})
        pi.addItem(self.dense_line, ignoreBounds=False)
        self.dense_line.hide()
        self.kept: list[RunTrace] = []
        self.current: RunTrace | None = None
        self.current_curve = pg.PlotDataItem([], [])     # the run in progress' accuracy curve (replaced on redraw)
        self._items: list = []
        self._current_items = None      # (accuracy curve, sparsity curve) of the run in progress
        self.redraw = WhenShown(self, self._catch_up)  # now, or when the tab is next shown
        self._drawn: tuple | None = None   # (kept runs, current run, its markers) the items were built for
        self.setToolTip("Validation accuracy per epoch (left axis): epoch 0 is the pruned model before training, and "
                        "each pruning step shows its dip and the recovery after it. Grey: sparsity (right axis), "
                        "▲ where the masks changed. Earlier runs stay dimmed for comparison (Clear removes them).")

    def _sync(self) -> None:
        self.svb.setGeometry(self.getPlotItem().vb.sceneBoundingRect())
        self.svb.linkedViewChanged(self.getPlotItem().vb, self.svb.XAxis)

    # -- data

    def set_metric(self, metric) -> None:
        """Label the left axis by the dataset's metric (accuracy, or a language model's perplexity)."""
        pi = self.getPlotItem()
        lower = "" if metric.higher_is_better else " (lower is better)"
        pi.setTitle(f"validation {metric.label}{lower} and sparsity per epoch")
        pi.setLabel("left", f"validation {metric.label}")

    def start_run(self, trace: RunTrace, dense_val: float | None) -> None:
        if self.current is not None and self.current.acc:
            self.kept.append(self.current)
            self.kept = self.kept[-MAX_KEPT_RUNS:]
        self.current = trace
        self.set_dense(dense_val)
        self.redraw()

    def set_dense(self, value: float | None) -> None:
        if value is None:
            self.dense_line.hide()
        else:
            self.dense_line.show()          # (a hidden label does not re-format)
            self.dense_line.setValue(value)
            self.dense_line.label.setFormat(f"dense (val) {value:.2f}")

    def add_record(self, r) -> None:
        """One epoch more of the run in progress: its two curves get the new point (no items rebuilt, so an
        epoch costs the GUI thread a few ms, issue 24); a new pruning step (marker) redraws everything."""
        if self.current is None:
            return
        self.current.add(r)
        self.redraw()              # hidden (another tab): only marked, drawn when shown

    def _catch_up(self) -> None:
        """The run in progress' new points only, when the items were built for the same runs and pruning steps;
        else everything."""
        if self._current_items is None or self._drawn != self._drawn_for():
            self._draw()
            return
        curve, scurve = self._current_items
        curve.setData(*_xy(self.current.acc))
        scurve.setData(*_xy(self.current.sparsity))
        self._x_range([t.epochs for t in self.kept] + [self.current.epochs])

    def _drawn_for(self) -> tuple:
        return (tuple(map(id, self.kept)), id(self.current), len(self.current.markers) if self.current else 0)

    def clear_runs(self) -> None:
        self.kept = []
        self.current = None
        self.redraw()

    # -- drawing

    def _draw(self) -> None:
        pi = self.getPlotItem()
        for it, on_sparsity_axis in self._items:
            (self.svb if on_sparsity_axis else pi).removeItem(it)
        self._items = []
        self.legend.clear()
        self._current_items = None
        self.current_curve = pg.PlotDataItem([], [])
        runs = [(t, False) for t in self.kept] + ([(self.current, True)] if self.current is not None else [])
        for trace, is_current in runs:
            alpha = 255 if is_current else 80
            pen = pg.mkPen(_color(trace.schedule, alpha), width=2.4 if is_current else 1.4)
            brush = pg.mkBrush(_color(trace.schedule, alpha))
            xs, ys = _xy(trace.acc)
            curve = pg.PlotDataItem(xs, ys, pen=pen, symbol="o", symbolSize=6 if is_current else 4,
                                    symbolBrush=brush, symbolPen=None, name=trace.label + (" (now)" if is_current
                                                                                            else ""))
            pi.addItem(curve)
            self._items.append((curve, False))
            if is_current:
                self.current_curve = curve
            sx, sy = _xy(trace.sparsity)
            spen = pg.mkPen(SPARSITY_COLOR + ((220 if is_current else 80),), width=1.6 if is_current else 1,
                            style=Qt.DashLine if is_current else Qt.DotLine)
            scurve = pg.PlotDataItem(sx, sy, pen=spen)
            self.svb.addItem(scurve)
            self._items.append((scurve, True))
            if is_current:
                self._current_items = (curve, scurve)
            if trace.markers:
                mx, my = _xy(trace.markers)
                marks = pg.ScatterPlotItem(mx, my, symbol="t1", size=11 if is_current else 7,
                                           brush=pg.mkBrush(_color(trace.schedule, alpha)),
                                           pen=pg.mkPen(SPARSITY_COLOR + (alpha,)))
                self.svb.addItem(marks)
                self._items.append((marks, True))
        if self.current is not None:
            s = pg.PlotDataItem([], [], pen=pg.mkPen(SPARSITY_COLOR, width=1.6, style=Qt.DashLine), symbol="t1",
                                symbolSize=9,
                                symbolBrush=pg.mkBrush(SPARSITY_COLOR))
            self.legend.addItem(s, "sparsity (right axis), ▲ pruning step")
        self._epochs_shown = None
        self._x_range([t.epochs for t, _ in runs])
        self._drawn = self._drawn_for()

    def _x_range(self, epochs: list[int]) -> None:
        pi = self.getPlotItem()
        n = max(epochs + [1])
        if n != getattr(self, "_epochs_shown", None):
            step = max(1, math.ceil(n / 10))
            pi.getAxis("bottom").setTickSpacing(step, step)
            pi.setXRange(-0.3, n + 0.3, padding=0)
            self._epochs_shown = n
        self._sync()


class LossChart(pg.PlotWidget):
    def __init__(self):
        super().__init__(title="training loss")
        self.setLabel("bottom", "epoch")
        self.curve = self.plot([], [], pen=pg.mkPen((220, 90, 40), width=2), symbol="o", symbolSize=5)
        self.trace: RunTrace | None = None
        self.redraw = WhenShown(self, self._draw)

    def show_trace(self, trace: RunTrace | None) -> None:
        self.trace = trace
        self.redraw()

    def _draw(self) -> None:
        trace = self.trace
        xs, ys = _xy(trace.loss) if trace is not None else ([], [])
        self.curve.setData(xs, ys)
        n = max(1, trace.epochs if trace is not None else 1)
        step = max(1, math.ceil(n / 8))
        self.getPlotItem().getAxis("bottom").setTickSpacing(step, step)


class ScheduleChart(pg.PlotWidget):
    """Test accuracy vs sparsity of the finished runs, one curve per schedule (Han et al. 2015, Fig. 5)."""

    def __init__(self):
        super().__init__(title="test accuracy vs sparsity")
        self.setLabel("bottom", "sparsity (%)")
        self.setLabel("left", "test accuracy (%)")
        self.showGrid(x=True, y=True, alpha=0.15)
        self.legend = self.getPlotItem().addLegend(offset=(-8, -8), labelTextSize="8pt", verSpacing=-6,
                                                   brush=pg.mkBrush(255, 255, 255, 210))
        self.points: dict[str, list[tuple[float, float]]] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.dense_line = pg.InfiniteLine(angle=0, pen=pg.mkPen((90, 90, 90), style=Qt.DashLine),
                                          label="dense (test)", labelOpts={"position": 0.2, "color": (90, 90, 90),
                                                                           "anchors": [(0.5, 0), (0.5, 0)]})
        self.addItem(self.dense_line)
        self.dense_line.hide()
        self.redraw = WhenShown(self, self._draw)
        self.setToolTip("Every finished fine-tune adds its kept weights' test accuracy at its sparsity; runs of the "
                        "same schedule join into a curve. Run a few sparsities per schedule to see which holds up.")

    def set_dense(self, value: float | None) -> None:
        if value is None:
            self.dense_line.hide()
        else:
            self.dense_line.setValue(value)
            self.dense_line.show()

    def add(self, schedule: str, sparsity: float, accuracy: float) -> None:
        pts = [p for p in self.points.get(schedule, []) if abs(p[0] - 100 * sparsity) > 1e-6]
        pts.append((100.0 * sparsity, accuracy))
        self.points[schedule] = sorted(pts)
        self.redraw()

    def _draw(self) -> None:
        if not self.points:
            return
        for schedule, pts in self.points.items():
            if schedule not in self.curves:
                self.curves[schedule] = self.plot([], [], pen=pg.mkPen(_color(schedule), width=2), symbol="o",
                                                  symbolSize=7, symbolBrush=pg.mkBrush(_color(schedule)),
                                                  symbolPen=None, name=schedule)
            self.curves[schedule].setData(*_xy(pts))
        xs = [p[0] for pts in self.points.values() for p in pts]
        lo, hi = min(xs), max(xs)
        pad = max(2.0, (10.0 - (hi - lo)) / 2)
        self.setXRange(max(0.0, lo - pad), min(100.0, hi + pad), padding=0)

    def clear_points(self) -> None:
        self.points = {}
        for c in self.curves.values():
            self.removeItem(c)
        self.curves = {}
        self.legend.clear()
