"""History tab: every state the user went through, as a Pareto view (accuracy vs compression / latency)."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from explorer.core.model.metrics import format_bytes
from explorer.core.prune.plan import Plan
from explorer.core.train.metric import ACCURACY, metric_of

from ..window.context import AppContext
from ..window.when_shown import WhenShown


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (higher x and higher y are better)."""
    idx = []
    for i, (x, y) in enumerate(points):
        if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            idx.append(i)
    return sorted(idx, key=lambda i: points[i][0])


def _is_dense(e) -> bool:
    return not e.plan.active() and e.base_label == "loaded weights"


def _cells(e, metric) -> list[str]:
    """The table row of a History entry."""
    return [str(e.id), e.label, f"{e.sparsity:.1%}", f"{e.compression_ratio:.2f}×",
            "—" if e.accuracy is None else metric.format(e.accuracy),
            "—" if e.latency_ms is None else f"{e.latency_ms:.3g} ms"]


def _point_label(e) -> str:
    return f"#{e.id} dense" if _is_dense(e) else f"#{e.id}"


def _pad_range(plot, xs: list[float], ys: list[float]) -> None:
    """Auto range, but never narrower than a few units around the points: one point is not a tick-label storm."""
    if not xs or not ys:
        plot.enableAutoRange()
        return
    lo, hi = min(ys), max(ys)
    span = max(hi - lo, 4.0 if hi > lo else 8.0)
    plot.setYRange(lo - 0.15 * span, hi + 0.15 * span, padding=0)
    xlo, xhi = min(xs), max(xs)
    xspan = max(xhi - xlo, 0.5 * max(abs(xhi), 1e-3))
    plot.setXRange(xlo - 0.1 * xspan, xhi + 0.25 * xspan, padding=0)


class PointLabels:
    """'#id' beside every point of a plot; the text items are reused, so redraws never pile them up."""

    def __init__(self, plot):
        self.plot = plot
        self.items: list[pg.TextItem] = []

    def show(self, points: list[tuple[float, float, str]]) -> None:
        while len(self.items) < len(points):
            t = pg.TextItem(color=(50, 56, 66), anchor=(-0.15, 1.0))
            self.plot.addItem(t)
            self.items.append(t)
        for t, (x, y, text) in zip(self.items, points):
            t.setText(text)
            t.setPos(x, y)
            t.show()
        for t in self.items[len(points):]:
            t.hide()


class HistoryPanel(QWidget):
    def __init__(self, ctx: AppContext):
        super().__init__()
        self.ctx = ctx
        self.session = ctx.session
        self._metric = ACCURACY
        self.plot = pg.PlotWidget()
        self.plot.setLabel("bottom", "compression ratio (×)")
        self.plot.setLabel("left", "test accuracy (%)")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.scatter = pg.ScatterPlotItem(size=10, brush=(66, 133, 244, 200), pen=pg.mkPen((30, 60, 140)),
                                          hoverable=True, hoverSize=14, tip=self._tip)
        self.front = pg.PlotDataItem([], [], pen=pg.mkPen((230, 145, 56), width=2, style=Qt.DashLine))
        self.dense_mark = pg.ScatterPlotItem(size=16, symbol="star", brush=(230, 145, 56, 230),
                                             pen=pg.mkPen((120, 70, 10)))
        self.legend = QLabel("<span style='color:#4285f4'>●</span> evaluated state (#number as in the table)"
                             "&nbsp;&nbsp; <span style='color:#e69138'>★</span> dense model"
                             "&nbsp;&nbsp; <span style='color:#e69138'>– –</span> Pareto front "
                             "&nbsp;&nbsp; <span style='color:#2ca02c'>●</span> with latency")
        self.legend.setObjectName("legendLabel")
        self.legend.setWordWrap(True)
        self.plot.addItem(self.front)
        self.plot.addItem(self.scatter)
        self.plot.addItem(self.dense_mark)
        self.labels = PointLabels(self.plot)
        self.lat_labels = None
        self.scatter.sigClicked.connect(self._clicked)
        self.lat_plot = pg.PlotWidget()
        self.lat_plot.setLabel("bottom", "latency (ms)")
        self.lat_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.lat_plot.setLabel("left", "test accuracy (%)")
        self.lat_plot.showGrid(x=True, y=True, alpha=0.2)
        self.lat_scatter = pg.ScatterPlotItem(size=10, brush=(44, 160, 44, 200), hoverable=True, hoverSize=14,
                                              tip=self._tip)
        self.lat_plot.addItem(self.lat_scatter)
        self.lat_labels = PointLabels(self.lat_plot)
        self.lat_scatter.sigClicked.connect(self._clicked)
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["#", "state", "sparsity", "compression", "accuracy", "latency"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectRows)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(lambda r, c: self.restore_row(r))
        self.table.setToolTip("Every evaluated state. Double-click (or select and Restore) to return to it")
        self.restore_btn = QPushButton("Restore selected state")
        self.restore_btn.setToolTip("Return to that state's weights and plan (the plan change is undoable)")
        self.restore_btn.clicked.connect(lambda: self.restore_row(self.table.currentRow()))
        self.info = QLabel("Evaluate (F5) states as you explore; each becomes a point here.")
        self.info.setWordWrap(True)
        plots = QHBoxLayout()
        plots.addWidget(self.plot, 1)
        plots.addWidget(self.lat_plot, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.info, 1)
        bottom.addWidget(self.restore_btn)
        lay = QVBoxLayout(self)
        lay.addLayout(plots, 3)
        lay.addWidget(self.legend)
        lay.addWidget(self.table, 2)
        lay.addLayout(bottom)
        # what the table and plots show, so an event redraws only what changed: the rows' entries (by identity)
        # with their cells, and what the plots were drawn from
        self._rows: list[tuple[object, list[str]]] = []
        self._plotted: tuple | None = None
        self._front_size = 0
        self._fitted = False      # the columns' widths fit their contents (headers included)
        # the History or the measurements changed (e.g. every slider tick: the undo state): what changed is
        # redrawn if the tab is on show, else once it is shown (after its first paint); drawn when first shown
        # (built after the first frame: the dense baseline may be in the History already)
        self._changed = WhenShown(self, self.update_results)
        self._changed.stale = True
        self.session.results.history_changed.connect(self._changed)   # entries only, not every edit
        self.session.measurements.changed.connect(self._changed)

    def _label_metric(self, metric) -> None:
        """Axis titles and the table header name the dataset's metric (accuracy, or perplexity: lower is better)."""
        if getattr(self, "_metric", None) is metric:
            return
        self._metric = metric
        better = "" if metric.higher_is_better else " (lower is better)"
        self.plot.setTitle(f"{metric.name} vs compression ratio")
        self.lat_plot.setTitle(f"{metric.name} vs measured latency")
        self.plot.setLabel("left", f"test {metric.label}{better}")
        self.lat_plot.setLabel("left", f"test {metric.label}{better}")
        self.table.setHorizontalHeaderItem(4, QTableWidgetItem(metric.name))
        self._fitted = False

    def update_results(self) -> None:
        """Bring the table and plots up to date: new entries are appended, changed rows rewritten, the plots
        redrawn only if their points changed; the whole table only when its entries were replaced (a new model)."""
        self._changed.stale = False
        s = self.session
        hist = s.history if s.loaded_ok else []
        metric = metric_of(s.dataset if s.loaded_ok else None)   # History keeps the dataset's metric per entry
        self._label_metric(metric)
        self._update_table([(e, _cells(e, metric)) for e in hist])
        acc = [e for e in hist if e.accuracy is not None]
        dense_value = metric.value(s.measurements.dense) if s.loaded_ok else None
        points = tuple((e.id, e.compression_ratio, e.accuracy, e.latency_ms, _is_dense(e)) for e in acc)
        plotted = (metric.name, dense_value, s.base_id if s.loaded_ok else None, points)
        if plotted != self._plotted:
            self._plotted = plotted
            self._front_size = self._update_plots(acc, metric, dense_value)
        mem, disk = s.weights.counts if s.loaded_ok else (0, 0)
        kept = (f" Fine-tuned weights kept for returning: {mem} in memory ({format_bytes(s.weights.memory_bytes)})"
                + (f", {disk} on disk ({format_bytes(s.weights.disk_bytes)})" if disk else "") + ".") if mem + disk else ""
        if acc:
            info = (f"{len(hist)} state(s), {self._front_size} on the Pareto front (dashed). "
                    "Double-click a row to return to it." + kept)
            if self.info.text() != info:
                self.info.setText(info)

    def _update_table(self, rows: list[tuple[object, list[str]]]) -> None:
        """Rows whose entry and cells are unchanged stay; the rest are written (appended when new)."""
        same = 0
        while same < min(len(rows), len(self._rows)) and rows[same][0] is self._rows[same][0]:
            same += 1
        dropped = same < len(self._rows)
        if dropped:                          # entries replaced or gone (another model): drop those rows
            self.table.setRowCount(same)
        written = False
        for r, (e, cells) in enumerate(rows):
            if r < same and self._rows[r][1] == cells:
                continue
            if r >= self.table.rowCount():
                self.table.insertRow(r)
            for c, v in enumerate(cells):
                it = QTableWidgetItem(v)
                if c != 1:
                    it.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(r, c, it)
            written = True
        self._rows = rows
        if written or dropped or not self._fitted:
            self.table.resizeColumnsToContents()
            self._fitted = True

    def _update_plots(self, acc: list, metric, dense_value) -> int:
        """Both scatter plots, the dense star and the Pareto front; returns the front's size."""
        s = self.session
        self.scatter.setData([{"pos": (e.compression_ratio, e.accuracy), "data": e.id} for e in acc])
        self.labels.show([(e.compression_ratio, e.accuracy, _point_label(e)) for e in acc])
        dense = [(e.compression_ratio, e.accuracy) for e in acc if _is_dense(e)]
        if not dense and dense_value is not None:
            dense = [(s.totals(Plan()).compression_ratio, dense_value)]   # measured, not a state
        self.dense_mark.setData([x for x, _ in dense], [y for _, y in dense])
        pts = [(e.compression_ratio, e.accuracy) for e in acc]
        front = pareto_front([(x, metric.score(y)) for x, y in pts])   # the front follows the metric's direction
        self.front.setData([pts[i][0] for i in front], [pts[i][1] for i in front])
        lat = [e for e in acc if e.latency_ms is not None]
        self.lat_scatter.setData([{"pos": (e.latency_ms, e.accuracy), "data": e.id} for e in lat])
        self.lat_labels.show([(e.latency_ms, e.accuracy, _point_label(e)) for e in lat])
        _pad_range(self.plot, [p[0] for p in pts], [p[1] for p in pts] + [y for _, y in dense])
        _pad_range(self.lat_plot, [e.latency_ms for e in lat], [e.accuracy for e in lat])
        return len(front)

    def _tip(self, x, y, data) -> str:
        for e in self.session.history:
            if e.id == data:
                return f"#{e.id} {e.label}\n{e.compression_ratio:.2f}×, {self._metric.format(e.accuracy)}"
        return ""

    def _clicked(self, item, points, ev=None) -> None:
        if len(points):
            eid = points[0].data()
            for r, e in enumerate(self.session.history):
                if e.id == eid:
                    self.table.selectRow(r)

    def restore_row(self, r: int) -> None:
        s = self.session
        if not (0 <= r < len(s.history)):
            return
        entry = s.history[r]

        def done(state):
            s.results.restore(entry, state)
            self.ctx.status(f"returned to #{entry.id} {entry.label}", 5000)

        # masks on other weights may need new rankings: computed in the worker, applied here
        self.ctx.runner.run("Restoring state", lambda progress, cancel: s.results.entry_state(entry), on_done=done)
