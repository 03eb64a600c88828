"""Compress tab (Deep Compression): bits per layer, then weight sharing -> training the shared values ->
Huffman coding of the applied model, in the background. Shows the stages as a waterfall, the selected layer's
weights with its shared values before and after training (the paper's Figure 4), the per-layer table (Table 2),
and exports model.dcz. The quantized weights become the model's weights (through the session)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QSignalBlocker, Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from explorer.core.compress.kmeans import INIT_TIPS, INITS
from explorer.core.compress.quantize import DEFAULT_BITS, DEFAULT_INDEX_BITS, MAX_BITS, QuantSettings, layer_kind
from explorer.core.formats.relindex import MAX_INDEX_BITS
from explorer.core.model.metrics import format_bytes
from explorer.core.train.metric import metric_of

from ..plots.compress_views import CentroidHistogram, ResultTable, WaterfallPlot
from ..window.context import AppContext
from ..window.when_shown import WhenShown

HIST_BINS = 120
BITS_COL, VALUE_COL, IDX_COL = 2, 3, 4


def _spin(lo: int, hi: int, value: int, tip: str) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    s.setToolTip(tip)
    return s


class CompressPanel(QWidget):
    def __init__(self, ctx: AppContext):
        super().__init__()
        self.ctx = ctx
        self.session = s = ctx.session
        self.result = None
        self.hists: dict = {}
        bits_tip = "Bits per shared-weight index: a layer shares 2^b values (the paper: 8 for conv, 5 for fc)"
        idx_tip = ("Bits per relative index (gap to the previous kept weight); longer gaps get filler zeros "
                   "(the paper: 8 for conv, 5 for fc)")
        self.conv_bits = _spin(1, MAX_BITS, DEFAULT_BITS["conv"], bits_tip + " — all conv layers")
        self.linear_bits = _spin(1, MAX_BITS, DEFAULT_BITS["linear"], bits_tip + " — all linear layers")
        self.conv_idx = _spin(1, MAX_INDEX_BITS, DEFAULT_INDEX_BITS["conv"], idx_tip + " — conv layers")
        self.linear_idx = _spin(1, MAX_INDEX_BITS, DEFAULT_INDEX_BITS["linear"], idx_tip + " — linear layers")
        self.conv_bits.valueChanged.connect(lambda v: self._set_kind_bits("conv", v, BITS_COL))
        self.linear_bits.valueChanged.connect(lambda v: self._set_kind_bits("linear", v, BITS_COL))
        self.conv_idx.valueChanged.connect(lambda v: self._set_kind_bits("conv", v, IDX_COL))
        self.linear_idx.valueChanged.connect(lambda v: self._set_kind_bits("linear", v, IDX_COL))
        self.init = QComboBox()
        for i, name in enumerate(INITS):
            self.init.addItem(name)
            self.init.setItemData(i, INIT_TIPS[name], Qt.ToolTipRole)
        self.init.setToolTip("How k-means places the shared values before iterating; linear is the paper's best")
        self.epochs = _spin(0, 1000, 3, "Epochs of training the shared values (0: k-means only). The gradient of a "
                                        "shared value is the sum of its weights' gradients; assignments and zeros "
                                        "stay fixed; the best validation epoch is kept.")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(1e-3)
        self.lr.setToolTip("Adam learning rate for the shared values (and the biases, stored dense)")
        form = QGridLayout()
        for r, (label, a, b) in enumerate((("bits", self.conv_bits, self.linear_bits),
                                           ("index bits", self.conv_idx, self.linear_idx))):
            form.addWidget(QLabel(label), r + 1, 0)
            form.addWidget(a, r + 1, 1)
            form.addWidget(b, r + 1, 2)
        form.addWidget(QLabel("conv"), 0, 1, Qt.AlignHCenter)
        form.addWidget(QLabel("linear"), 0, 2, Qt.AlignHCenter)
        more = QFormLayout()
        more.addRow("k-means init", self.init)
        more.addRow("train epochs", self.epochs)
        more.addRow("learning rate", self.lr)

        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["Layer", "Kept", "Bits", "", "Index"])
        self.table.horizontalHeaderItem(BITS_COL).setToolTip(bits_tip + " (overrides the conv/linear setting)")
        self.table.horizontalHeaderItem(IDX_COL).setToolTip(idx_tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(BITS_COL, QHeaderView.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(IDX_COL, QHeaderView.Fixed)
        self.table.setColumnWidth(IDX_COL, 58)
        self.table.itemSelectionChanged.connect(self._row_selected)
        # three rows at least: at 1024x768 the views scroll rather than squeeze the per-layer settings to one row
        self.table.setMinimumHeight(self.table.horizontalHeader().sizeHint().height()
                                    + 3 * self.table.verticalHeader().defaultSectionSize() + 4)

        self.start_btn = QPushButton("Compress (F9)")
        self.start_btn.setObjectName("primary")
        self.start_btn.setToolTip("Share the applied model's kept weights (k-means per layer), train the shared "
                                  "values, Huffman-code, and measure every stage; the quantized weights become the "
                                  "model's weights")
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(ctx.runner.cancel)
        self.export_btn = QPushButton("Export archive…")
        self.export_btn.setToolTip("Write model.dcz (decoded again and compared before it replaces a file); open "
                                   "it later as a model")
        self.export_btn.setEnabled(False)
        self.export_btn.clicked.connect(lambda: self.export_archive())
        self.status = QLabel("Prune, Apply, then Compress: weight sharing and Huffman coding after pruning.")
        self.status.setWordWrap(True)

        left = QVBoxLayout()
        left.addLayout(form)
        left.addLayout(more)
        left.addWidget(self.table, 1)
        btns = QHBoxLayout()
        btns.addWidget(self.start_btn)
        btns.addWidget(self.cancel_btn)
        left.addLayout(btns)
        left.addWidget(self.export_btn)
        left.addWidget(self.status)
        lw = QWidget()
        lw.setLayout(left)
        self.waterfall = WaterfallPlot()
        self.histogram = CentroidHistogram()
        self.results = ResultTable()
        plots = QSplitter(Qt.Vertical)
        plots.addWidget(self.waterfall)
        hist_box = QWidget()
        hl = QVBoxLayout(hist_box)
        hl.setContentsMargins(0, 0, 0, 0)
        hl.addWidget(self.histogram, 1)
        hl.addWidget(self.histogram.caption)
        plots.addWidget(hist_box)
        top = QSplitter(Qt.Horizontal)
        top.addWidget(lw)
        top.addWidget(plots)
        top.setStretchFactor(1, 1)
        top.setSizes([270, 330])
        split = QSplitter(Qt.Vertical)
        split.addWidget(top)
        split.addWidget(self.results)
        split.setStretchFactor(0, 1)
        split.setSizes([560, 170])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(split)

        s.loaded.connect(self._on_loaded)
        # while another tab is current these only mark the tab for a redraw when it is shown (issue 24)
        self._result_when_shown = WhenShown(self, self._show_result)
        self._layer_when_shown = WhenShown(self, self._show_layer)
        s.weight_state.changed.connect(self._result_when_shown)
        s.measurements.changed.connect(self._result_when_shown)
        s.selection_changed.connect(self._layer_when_shown)
        if s.loaded_ok:
            self._on_loaded()

    # ------------------------------------------------------------------ settings
    def _on_loaded(self) -> None:
        s = self.session
        self.result, self.hists = None, {}
        for r in range(self.table.rowCount()):        # free the old rows' editors (setRowCount alone keeps them)
            for c in (BITS_COL, IDX_COL):
                if self.table.cellWidget(r, c) is not None:
                    self.table.removeCellWidget(r, c)
        self.table.setRowCount(0)
        self.table.setRowCount(len(s.layers))
        for i, layer in enumerate(s.layers):
            kind = layer_kind(layer.kind)
            item = QTableWidgetItem(layer.name)
            item.setData(Qt.UserRole, kind)
            item.setToolTip(f"{layer.kind} {tuple(layer.weight_shape)}: {layer.params:,} weights")
            self.table.setItem(i, 0, item)
            self.table.setItem(i, 1, QTableWidgetItem(""))
            sl = QSlider(Qt.Horizontal)           # a plain slider and its value in the next cell: few widgets a row
            sl.setRange(1, MAX_BITS)
            sl.setPageStep(1)
            sl.setValue((self.conv_bits if kind == "conv" else self.linear_bits).value())
            sl.setToolTip(f"{layer.name}: bits per shared-weight index (2^b shared values)")
            value = QTableWidgetItem(str(sl.value()))
            value.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            self.table.setItem(i, VALUE_COL, value)
            sl.valueChanged.connect(lambda v, it=value: it.setText(str(v)))
            self.table.setCellWidget(i, BITS_COL, sl)
            sp = _spin(1, MAX_INDEX_BITS, (self.conv_idx if kind == "conv" else self.linear_idx).value(),
                       f"{layer.name}: bits per relative index")
            self.table.setCellWidget(i, IDX_COL, sp)
        self._show_result()

    def _set_kind_bits(self, kind: str, value: int, col: int) -> None:
        for i in range(self.table.rowCount()):
            if self.table.item(i, 0).data(Qt.UserRole) == kind:
                w = self.table.cellWidget(i, col)
                with QSignalBlocker(w):
                    w.setValue(value)
                if col == BITS_COL:
                    self.table.item(i, VALUE_COL).setText(str(value))

    def settings(self) -> QuantSettings:
        s = self.session
        rows = range(self.table.rowCount())
        bits = {self.table.item(i, 0).text(): self.table.cellWidget(i, BITS_COL).value() for i in rows}
        idx = {self.table.item(i, 0).text(): self.table.cellWidget(i, IDX_COL).value() for i in rows}
        return QuantSettings.build(s.layers, bits, idx, self.init.currentText(), s.seed)

    def train_config(self):
        from explorer.core.train.quantize import DEFAULT_CONFIG

        if self.epochs.value() == 0:
            return None
        from dataclasses import replace
        return replace(DEFAULT_CONFIG, epochs=self.epochs.value(), lr=self.lr.value(), seed=self.session.seed)

    # ------------------------------------------------------------------ the job
    def start(self) -> None:
        s, ctx = self.session, self.ctx
        if not s.loaded_ok:
            return
        try:
            settings, qcfg = self.settings(), self.train_config()
            if qcfg is not None:
                qcfg.validated()
        except Exception as e:
            ctx.report_error(e)
            return
        if qcfg is not None and not ctx.require_labels("Training the shared values"):
            return
        snap = s.snapshot()         # the job's frozen input: it never reads the live session
        plan = snap.plan
        dense_m = s.measurements.dense
        from explorer.core.flows.compress import archive_meta
        meta = archive_meta(s)

        def work(progress, cancel):
            from explorer.core.compress.accounting import state_bytes
            from explorer.core.compress.flow import compress_state
            from explorer.core.train.evaluate import evaluate

            state = snap.masked_state()
            ds = snap.dataset
            metric = metric_of(ds)        # accuracy, or perplexity / mean squared error
            dense = metric.value(dense_m)
            if dense is None and ds.has_labels and ds.size("test"):
                dense = metric.value(evaluate(snap.job_model(snap.original), ds, "test", cancel=cancel))
            result = compress_state(snap.model_copy(state), ds, state, settings, meta, qcfg,
                                    {"dense": dense}, state_bytes(snap.original), progress, cancel,
                                    device=snap.device)
            hists = {}
            for n in result.quants:
                w = state[f"{n}.weight"].reshape(-1).numpy()
                kept = w[w != 0]
                hists[n] = np.histogram(kept, bins=HIST_BINS) if kept.size else None
            return result, hists

        def done(out):
            self._running(False)
            self.result, self.hists = out
            s.results.adopt_compression(self.result, plan)
            h = self.result.stage("huffman")
            metric = metric_of(s.dataset)
            acc = h.get(metric.name)
            self.status.setText(f"model.dcz: {format_bytes(h['size_bytes'])}, {h['ratio']:.1f}× smaller than dense"
                                + (f"; test {metric.name} {metric.format(acc)}" if acc is not None else "")
                                + ". The quantized weights are now the model's (Reset returns to dense).")

        def failed(e):
            self._running(False)
            self.status.setText(f"failed: {e}")
            ctx.report_error(e)

        def cancelled():
            self._running(False)
            self.status.setText("cancelled: the model is as it was")

        def on_progress(p):
            if p.message:
                self.status.setText(p.message)

        if ctx.start_job("Compressing", work, on_done=done, on_error=failed, on_cancel=cancelled,
                         on_progress=on_progress):
            self._running(True)
            self.status.setText("clustering, training the shared values, coding…")

    def _running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)

    def export_archive(self, path: str | None = None) -> None:
        if self.result is None:
            return
        if path is None:
            from PySide6.QtWidgets import QFileDialog
            path, _ = QFileDialog.getSaveFileName(self, "Export compressed archive", "model.dcz",
                                                  "Deep Compression archive (*.dcz)")
            if not path:
                return
            if not path.endswith(".dcz"):
                path += ".dcz"
        result = self.result

        def work(progress, cancel):
            from explorer.core.compress.dcz import write_archive
            return write_archive(path, result.archive, result.state)

        self.ctx.start_job("Exporting archive", work,
                           on_done=lambda p: self.ctx.status(f"wrote {Path(p).name} ({result.archive.size:,} bytes)"))

    # ------------------------------------------------------------------ showing
    def _fresh(self) -> bool:
        m = self.session.measurements.compression
        return self.result is not None and m is not None and m.value is self.result and self.session.is_fresh(m)

    def _show_result(self) -> None:
        s = self.session
        if not s.loaded_ok:
            return
        r = self.result
        for i in range(self.table.rowCount()):
            n = self.table.item(i, 0).text()
            row = next((x for x in r.layers if x["name"] == n), None) if r else None
            self.table.item(i, 1).setText(f"{row['kept']:.1%}" if row else "")
        self.waterfall.show_stages(r.stages if r else None, stale=r is not None and not self._fresh())
        self.results.show_result(r.layers if r else None, r.stages if r else None)
        self.export_btn.setEnabled(r is not None)
        self._show_layer()

    def _show_layer(self) -> None:
        s = self.session
        name = s.selected if s.loaded_ok else None
        r = self.result
        q = r.quants.get(name) if r and name else None
        self.histogram.show_layer(name, self.hists.get(name), q, len(r.history) if r else 0, r.best_epoch if r else 0)

    def _row_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows and self.session.loaded_ok:
            self.session.select(self.table.item(rows[0].row(), 0).text())
