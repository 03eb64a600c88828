"""The Compress tab's views: the stages as a waterfall, a layer's weights with its shared values (the paper's
Figure 4), and the per-layer table with the paper's Table 2 columns. Plot items are made once and updated."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLabel, QTableWidget, QTableWidgetItem

from explorer.core.compress.accounting import rate, table2

STAGE_LABELS = ("dense", "pruned", "quantized", "Huffman")
STAGE_TIPS = {
    "dense": "Every weight as fp32",
    "pruned": "Only the kept weights, as fp32 values with relative indices (the gap to the previous kept weight)",
    "quantized": "Weight sharing: each kept weight is a b-bit index into its layer's shared values (k-means)",
    "huffman": "The shared-value indices and the gaps Huffman-coded: the bytes of model.dcz",
}
BAR = (70, 130, 200)
SAVED = (70, 130, 200, 60)


def short_bytes(n: float) -> str:
    """1,234,567 -> '1.18 MiB'; three significant digits."""
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            v = n / div
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:.0f} {unit}"
    return f"{int(n)} B"


class WaterfallPlot(pg.PlotWidget):
    """Bytes of every stage on a log axis; the pale part of each bar is what that stage saved."""

    def __init__(self, parent=None):
        super().__init__(parent, title="Stages")
        self.setMouseEnabled(False, False)
        self.hideButtons()
        self.setMenuEnabled(False)
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.6, brush=pg.mkBrush(*BAR))
        self.saved = pg.BarGraphItem(x=[], height=[], width=0.6, brush=pg.mkBrush(*SAVED), pen=pg.mkPen(None))
        self.addItem(self.saved)
        self.addItem(self.bars)
        self.labels = [pg.TextItem("", anchor=(0.5, 0.0), color=(20, 20, 20), fill=pg.mkBrush(255, 255, 255, 200))
                       for _ in STAGE_LABELS]
        for t in self.labels:
            self.addItem(t)
        self.getAxis("bottom").setTicks([list(enumerate(STAGE_LABELS))])
        self.getAxis("left").setLabel("bytes")
        self.getAxis("left").enableAutoSIPrefix(False)
        self.setToolTip("dense → pruned → quantized → Huffman: each stage's size in bytes (log scale), its "
                        "compression ratio, and the test accuracy measured after it; the pale part of a bar is "
                        "what the stage saved. (stale): the model changed since it was compressed.")
        self.show_stages(None)

    def show_stages(self, stages: list[dict] | None, stale: bool = False) -> None:
        if not stages:
            self.bars.setOpts(x=[], height=[], y0=[])
            self.saved.setOpts(x=[], height=[], y0=[])
            for t in self.labels:
                t.setText("")
            self.labels[1].setText("bytes, ratio and accuracy\nof every stage appear here\nafter Compress (F9)")
            self.labels[1].setPos(1.5, 0.6)
            self.getAxis("left").setTicks([[]])
            self.setYRange(0, 1, padding=0)
            self.setXRange(-0.6, len(STAGE_LABELS) - 0.4, padding=0)
            self.setTitle("Stages")
            return
        logs = [math.log10(max(1, s["size_bytes"])) for s in stages]
        base = math.floor(min(logs)) - 0.6
        top = max(logs) + 0.1
        x = np.arange(len(stages))
        self.bars.setOpts(x=x, height=np.array(logs) - base, y0=np.full(len(stages), base))
        prev = [logs[0]] + logs[:-1]
        self.saved.setOpts(x=x, height=np.maximum(0, np.array(prev) - logs), y0=np.array(logs))
        for t, s, y in zip(self.labels, stages, logs):
            acc = s["accuracy"]
            other = s.get("mse", s.get("perplexity"))       # a regression's or language model's value
            t.setText(f"{short_bytes(s['size_bytes'])}\n{s['ratio']:.1f}×\n"
                      + (f"{acc:.1f}%" if acc is not None else "—" if other is None else f"{other:.3g}"))
            t.setPos(stages.index(s), y)
        marks = [m * 1024 ** u for u in range(4) for m in (1, 10, 100)]
        ticks = [(math.log10(v), short_bytes(v)) for v in marks if base <= math.log10(v) <= top]
        self.getAxis("left").setTicks([ticks])
        self.setYRange(base, top, padding=0)
        self.setXRange(-0.6, len(stages) - 0.4, padding=0)
        self.setTitle("Stages (stale)" if stale else "Stages")


def _vlines(xs: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.repeat(np.asarray(xs, dtype=np.float64), 2)
    y = np.tile([0.0, height], len(xs))
    return x, y


class CentroidHistogram(pg.PlotWidget):
    """A layer's kept weights (before sharing) with its shared values: after k-means and after training."""

    def __init__(self, parent=None):
        super().__init__(parent, title="Shared values")
        self.setMenuEnabled(False)
        self.hideButtons()
        self.hist = pg.PlotDataItem([], [], stepMode="center", fillLevel=0, brush=(150, 150, 150, 110),
                                    pen=pg.mkPen((120, 120, 120)))
        self.before = pg.PlotDataItem([], [], connect="pairs", pen=pg.mkPen((60, 110, 220), width=1,
                                                                            style=Qt.DashLine))
        self.after = pg.PlotDataItem([], [], connect="pairs", pen=pg.mkPen((215, 60, 40), width=1.5))
        for it in (self.hist, self.before, self.after):
            self.addItem(it)
        self.getAxis("bottom").setLabel("weight")
        self.getAxis("bottom").enableAutoSIPrefix(False)
        self.getAxis("left").enableAutoSIPrefix(False)
        self.setToolTip("Histogram of the layer's kept weights with its shared values (k-means centroids) before "
                        "(dashed) and after (solid) training them, like Deep Compression's Figure 4. Pruned "
                        "weights stay exactly 0 and are not a cluster.")
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setToolTip(self.toolTip())

    def show_layer(self, name: str | None, hist: tuple | None, quant, epochs: int = 0, best_epoch: int = 0) -> None:
        """``epochs`` the shared values were trained for, and the epoch kept (0: the k-means values won on val)."""
        if name is None or hist is None or quant is None:
            for it in (self.hist, self.before, self.after):
                it.setData([], [])
            self.setTitle("Shared values")
            self.caption.setText(f"{name or 'The selected layer'}: run Compress to see its shared values.")
            return
        counts, edges = hist
        self.hist.setData(edges, counts)
        h = float(counts.max()) if len(counts) else 1.0
        trained = not np.array_equal(quant.initial, quant.centroids)
        self.before.setData(*_vlines(quant.initial, h * 1.05))
        self.after.setData(*(_vlines(quant.centroids, h * 1.05) if trained else ([], [])))
        self.setTitle(f"{name}: {len(quant.centroids)} shared values")
        self.caption.setText(f"<b>{name}</b>: {quant.kept:,} kept weights (<span style='color:#888'>grey</span>), "
                             f"{len(quant.centroids)} shared values in {quant.bits} bits: "
                             f"<span style='color:#3c6edc'>after k-means (dashed)</span>"
                             + (f", <span style='color:#d73c28'>after training (solid, epoch {best_epoch} of "
                                f"{epochs} kept)</span>" if trained else
                                "; not trained" if not epochs else
                                f"; training ({epochs} epochs) did not beat them on validation, so they stay"))


COLUMNS = ("Layer", "Weights", "Kept", "Weight bits\nP+Q / +H", "Index bits\nP+Q / +H", "Rate\nP+Q / +H",
           "Bytes\nquantized", "Bytes\nHuffman")
TIPS = {
    "Kept": "Share of the layer's weights left nonzero by pruning",
    "Weight bits\nP+Q / +H": "Bits per stored shared-value index: fixed (pruning + quantization), and the average "
                            "after Huffman coding",
    "Index bits\nP+Q / +H": "Bits per relative index (gap to the previous kept weight): fixed, and the average after "
                           "Huffman coding",
    "Rate\nP+Q / +H": "The layer's stored bytes over its dense fp32 bytes, without and with Huffman coding",
    "Bytes\nquantized": "Bytes of the layer's record in the archive before Huffman coding (codebook included)",
    "Bytes\nHuffman": "Bytes of the layer's record in model.dcz (codebook and code tables included)",
}


class ResultTable(QTableWidget):
    """The paper's Table 2 for the current result, with a total line."""

    def __init__(self, parent=None):
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        for i, c in enumerate(COLUMNS):
            if c in TIPS:
                self.horizontalHeaderItem(i).setToolTip(TIPS[c])
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.NoSelection)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)

    def show_result(self, rows: list[dict] | None, stages: list[dict] | None) -> None:
        if not rows:
            self.setRowCount(0)
            return
        t = table2(rows, stages)[1:]
        self.setRowCount(len(t))
        for i, r in enumerate(t):
            extra = ([f"{rows[i]['size_bytes_quantized']:,}", f"{rows[i]['size_bytes_huffman']:,}"] if i < len(rows)
                     else [f"{stages[2]['size_bytes']:,}", f"{stages[3]['size_bytes']:,}"])
            for j, text in enumerate(r + extra):
                it = QTableWidgetItem(text)
                it.setTextAlignment((Qt.AlignLeft if j == 0 else Qt.AlignRight) | Qt.AlignVCenter)
                if i == len(rows):
                    f = it.font()
                    f.setBold(True)
                    it.setFont(f)
                    if j == len(r) - 1 + 0:
                        it.setToolTip("The whole model (biases, headers and all) over its dense fp32 size")
                elif j == 5:
                    it.setToolTip(f"{rate(rows[i], 'quantized'):.4%} / {rate(rows[i], 'huffman'):.4%}")
                self.setItem(i, j, it)
