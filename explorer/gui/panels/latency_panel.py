"""Latency tab: dense vs masked vs compacted (and optionally onnxruntime), speedup next to MAC ratio, and why
they differ."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from explorer.core.model.metrics import format_count

from ..plots.speed_map_view import SpeedMapView
from ..window.context import AppContext
from ..window.when_shown import WhenShown


def explain(speed_masked: float, mac_masked: float, speed_compact: float | None, mac_compact: float | None) -> str:
    """One or two sentences on why measured speedups differ from MAC ratios."""
    out = []
    if mac_masked > 1.05:
        noise = "" if abs(speed_masked - 1) < 0.15 else \
            " -- a difference this size is measurement noise; re-measure with more runs"
        out.append(f"Unstructured zeros are still multiplied on dense hardware: the masked model does the dense "
                   f"amount of work, so it runs at {speed_masked:.2f}× the dense speed{noise}, although "
                   f"{mac_masked:.1f}× fewer MACs involve a nonzero weight.")
    if speed_compact is not None and mac_compact:
        r = speed_compact / mac_compact
        if r < 0.8:
            why = "memory traffic and fixed per-layer costs keep it below the MAC ratio"
        elif r > 1.2:
            why = "above the MAC ratio: the smaller tensors fit the caches better and per-call overheads shrink"
        else:
            why = "close to the MAC ratio"
        out.append(f"Channel pruning removes whole filters: compacted, the network is a smaller dense one and runs "
                   f"{speed_compact:.2f}× faster for real for {mac_compact:.2f}× fewer MACs ({why}).")
    return " ".join(out)


PLOT_MIN_H = 140


class LatencyPanel(QWidget):
    """``measure`` starts a latency job (Run ▸ Measure latency)."""

    def __init__(self, ctx: AppContext, measure):
        super().__init__()
        self.ctx = ctx
        settings = ctx.settings
        self.session = ctx.session
        self.table = QTableWidget(3, 5)
        self.table.setHorizontalHeaderLabels(["model", "median ms", "p10–p90 ms", "speedup", "MAC ratio"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        for i, w in enumerate((105, 85, 140, 80, 80)):
            self.table.setColumnWidth(i, w)
        self.plot = pg.PlotWidget()
        self.plot.setMinimumHeight(PLOT_MIN_H)     # never squeezed to a sliver: the views scroll instead
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(False, False)
        self.plot.setLabel("left", "speedup vs dense (×)")
        self.plot.addLegend(offset=(10, 10))
        self.bar_lat = pg.BarGraphItem(x=[], height=[], width=0.35, brush=(66, 133, 244), name="measured speedup")
        self.bar_mac = pg.BarGraphItem(x=[], height=[], width=0.35, brush=(180, 180, 190), name="MAC ratio")
        self.plot.addItem(self.bar_mac)
        self.plot.addItem(self.bar_lat)
        self.explain = QLabel("Measure latency (F6) to compare the dense, masked and compacted networks.")
        self.explain.setWordWrap(True)
        self.explain.setObjectName("viewTitle")
        self.batch = QSpinBox()
        self.batch.setRange(1, 1024)
        self.batch.setValue(int(settings.value("latency/batch", 1)))
        self.batch.setToolTip("Batch size of the timed input (the same input for every model)")
        self.runs = QSpinBox()
        self.runs.setRange(3, 1000)
        self.runs.setValue(int(settings.value("latency/runs", 30)))
        self.runs.setToolTip("Timed runs after 5 warm-up runs; the median is reported")
        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setValue(int(settings.value("latency/threads", 0)))
        self.threads.setSpecialValueText("default")
        self.threads.setToolTip("torch threads during timing (fixed for all models); 0 = torch's default")
        for sb, key in ((self.batch, "batch"), (self.runs, "runs"), (self.threads, "threads")):
            sb.valueChanged.connect(lambda v, k=key: settings.setValue(f"latency/{k}", v))
        self.onnx = QCheckBox("also onnxruntime")
        self.onnx.setChecked(str(settings.value("latency/onnx", "false")).lower() == "true")
        self.onnx.setToolTip("Also time the dense and the pruned model exported to ONNX and run by onnxruntime "
                             "(the runtime many deploy with), interleaved with PyTorch on the same input and threads "
                             "(needs the onnx extra)")
        self.onnx.toggled.connect(lambda on: settings.setValue("latency/onnx", "true" if on else "false"))
        self.btn = QPushButton("Measure (F6)")
        self.btn.setObjectName("primary")
        self.btn.clicked.connect(measure)
        # the settings in two rows (not four): at 1024x768 with the lesson bar open the chart keeps its height
        top = QGridLayout()
        for col, (text, w) in enumerate((("batch", self.batch), ("timed runs", self.runs))):
            top.addWidget(QLabel(text), 0, 2 * col)
            top.addWidget(w, 0, 2 * col + 1)
        top.addWidget(QLabel("threads"), 1, 0)
        top.addWidget(self.threads, 1, 1)
        top.addWidget(self.onnx, 1, 2, 1, 2)
        top.setColumnStretch(4, 1)
        top.addWidget(self.btn, 0, 5, 2, 1, Qt.AlignBottom)
        compare = QWidget()
        cl = QVBoxLayout(compare)
        cl.setContentsMargins(0, 0, 0, 0)
        cl.addWidget(self.table)
        cl.addWidget(self.explain)
        cl.addWidget(self.plot, 1)
        self.speed_map = SpeedMapView(ctx, lambda: (self.batch.value(), self.threads.value() or None))
        # the whole model's comparison and the selected layer's speed map as two pages: the tab needs the taller
        # of the two, not both stacked (which pushed the window past a 1024x768 screen)
        self.parts = QTabWidget()
        self.parts.setDocumentMode(True)
        self.parts.addTab(compare, "Whole model")
        self.parts.addTab(self.speed_map, "Speed map (selected layer)")
        self.parts.setTabToolTip(1, "Where sparse kernels beat dense on this machine: the selected layer timed dense "
                                    "vs CSR vs fewer channels across sparsities")
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.parts, 1)
        self.session.measurements.changed.connect(WhenShown(self, self.update_results))   # hidden: when shown
        self._fit_table()

    def _fit_table(self) -> None:
        """The table as tall as its rows (no empty space under them; the chart gets it)."""
        t = self.table
        h = t.horizontalHeader().sizeHint().height() + 2 * t.frameWidth() \
            + sum(t.rowHeight(r) for r in range(t.rowCount()))
        if t.horizontalScrollBar().isVisible():
            h += t.horizontalScrollBar().sizeHint().height()
        t.setFixedHeight(h)

    def update_results(self) -> None:
        s = self.session
        m = s.measurements.latency if s.loaded_ok else None
        if m is None:
            self.table.clearContents()
            self.table.setRowCount(3)
            self._fit_table()
            self.bar_lat.setOpts(x=[], height=[])
            self.bar_mac.setOpts(x=[], height=[])
            return
        L, fresh = m.value, s.is_fresh(m)
        rows = [("dense", L.dense, L.dense_macs), ("masked", L.masked, L.masked_macs)]
        if L.compact is not None:
            rows.append(("compacted", L.compact, L.compact_macs))
        macs_of = {"dense": L.dense_macs, "masked": L.masked_macs, "compact": L.compact_macs}
        torch_rows = len(rows)
        for k, lat in (getattr(L, "onnx", None) or {}).items():     # onnxruntime, next to PyTorch
            rows.append((f"{'compacted' if k == 'compact' else k} · ORT", lat, macs_of.get(k)))
        self.table.setRowCount(len(rows))
        self._fit_table()
        d = L.dense.median_ms
        speeds, macr = [], []
        for r, (name, lat, macs) in enumerate(rows):
            sp = d / lat.median_ms if lat.median_ms else 0.0
            mr = L.dense_macs / macs if macs else 0.0
            speeds.append(sp)
            macr.append(mr)
            vals = [name + (" (stale)" if not fresh and name != "dense" else ""), f"{lat.median_ms:.3f}",
                    f"{lat.p10_ms:.3f}–{lat.p90_ms:.3f}", f"{sp:.2f}×", f"{mr:.2f}×"]
            for c, v in enumerate(vals):
                it = QTableWidgetItem(v)
                if c:
                    it.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                if c == 4:
                    it.setToolTip(f"{format_count(macs)} MACs with a nonzero weight")
                self.table.setItem(r, c, it)
        x = np.arange(len(rows))
        self.bar_mac.setOpts(x=x - 0.18, height=macr, width=0.35)
        self.bar_lat.setOpts(x=x + 0.18, height=speeds, width=0.35)
        self.plot.getAxis("bottom").setTicks([[(i, rows[i][0]) for i in range(len(rows))]])
        texts = [f"Batch {L.batch}, {L.dense.runs} timed runs (interleaved), {L.dense.threads} thread(s).",
                 explain(speeds[1], macr[1], speeds[2] if torch_rows > 2 else None,
                         macr[2] if torch_rows > 2 else None)]
        if len(rows) > torch_rows:
            texts.append("· ORT rows: the same models exported to ONNX and run by onnxruntime (speedup vs PyTorch's "
                         "dense model).")
        self.explain.setText(" ".join(texts))
