"""The model's blocks and how much each matters (``core/analyse/depth.py``): what ``prune --granularity block``
drops first. Shown by the allocation box's Blocks… button after a job measured them."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from explorer.core.train.metric import METRICS

INFLUENCE_TIP = ("Block Influence (ShortGPT): 1 − the mean cosine similarity of the block's input and output on the "
                 "calibration samples; the lowest is dropped first.")


class BlocksDialog(QDialog):
    def __init__(self, analysis, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Blocks: influence and metric when skipped")
        m = METRICS.get(analysis.metric)
        order = {p: i + 1 for i, p in enumerate(analysis.order())}
        cols = ("Block", "Influence", f"{analysis.metric.capitalize()} when skipped", "Drop order")
        self.table = QTableWidget(len(analysis.blocks), len(cols))
        self.table.setHorizontalHeaderLabels(cols)
        self.table.horizontalHeaderItem(1).setToolTip(INFLUENCE_TIP)
        self.table.horizontalHeaderItem(2).setToolTip(f"The {analysis.split} split's {analysis.metric} with this one "
                                                      "block replaced by the identity")
        self.table.horizontalHeaderItem(3).setToolTip("The order in which prune --granularity block drops them")
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        for r, b in enumerate(analysis.blocks):
            vals = (b.path, "—" if b.influence is None else f"{b.influence:.4f}",
                    "—" if b.metric_when_skipped is None else (m.format(b.metric_when_skipped) if m else
                                                               f"{b.metric_when_skipped:.4g}"),
                    str(order.get(b.path, "kept")))
            for c, v in enumerate(vals):
                it = QTableWidgetItem(v)
                if c:
                    it.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                if not b.skippable:
                    it.setToolTip(f"cannot be skipped: {b.why}")
                self.table.setItem(r, c, it)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        dense = "n/a" if analysis.dense_metric is None else (m.format(analysis.dense_metric) if m else
                                                              f"{analysis.dense_metric:.4g}")
        lay = QVBoxLayout(self)
        note = QLabel(f"Dense {analysis.metric} ({analysis.split} split): {dense}. prune --granularity block "
                      "--sparsity S drops floor(S·n + 0.5) of the n skippable blocks in this order.")
        note.setWordWrap(True)
        lay.addWidget(note)
        lay.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.resize(520, min(640, 140 + 30 * len(analysis.blocks)))
