"""Set many layers at once (uniform or one global threshold) and see every layer's sparsity as bars."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from explorer.core.prune.criteria import CRITERIA

from ..plots.legend_row import LegendRow
from ..plots.plots import set_ticks
from .layer_table import GRANULARITY_CHOICES, SparsityEditor, criterion_tips, granularity_tips, make_combo


class GlobalPanel(QWidget):
    """Emits ``requested(names_mode, sparsity, granularity, criterion, scope, cap)`` on Set."""

    requested = Signal(str, float, str, str, str, float)

    def __init__(self, parent=None, lazy: bool = False):
        super().__init__(parent)
        box = self.box = QGroupBox("Many layers at once")
        self.editor = SparsityEditor()
        self.editor.set_sparsity(0.5)
        self.gran = make_combo(GRANULARITY_CHOICES, granularity_tips())
        self.crit = make_combo(list(CRITERIA), criterion_tips(), 84)
        self.scope = make_combo(("local", "global"), {
            "local": "Uniform: every chosen layer gets this sparsity",
            "global": "Global: one threshold on comparable scores (mean |w| per group) across the chosen layers; "
                      "sensitive layers keep more, robust ones lose more",
        }, 80)
        self.scope.setToolTip("Scope: uniform per-layer sparsity, or one global threshold")
        self.cap = QDoubleSpinBox()
        self.cap.setRange(0.0, 100.0)
        self.cap.setValue(95.0)
        self.cap.setSuffix(" %")
        self.cap.setDecimals(0)
        self.cap.setToolTip("Global scope: no layer is pruned beyond this cap, so none is emptied")
        self.cap_label = QLabel("cap")
        self.only_selected = QCheckBox("selected rows only")
        self.only_selected.setToolTip("Apply to the rows selected in the layer table (Ctrl/Shift-click) instead of "
                                      "all layers")
        self.set_btn = QPushButton("Set layers")
        self.set_btn.setToolTip("Write this sparsity/granularity/criterion into the plan of the chosen layers "
                                "(undoable; layers the granularity does not fit stay dense)")
        self.set_btn.clicked.connect(self._emit)
        self.scope.currentTextChanged.connect(self._scope_changed)
        self._scope_changed("local")

        grid = QGridLayout(box)
        grid.setContentsMargins(8, 6, 8, 6)
        grid.addWidget(QLabel("sparsity %"), 0, 0)
        grid.addWidget(self.editor, 0, 1, 1, 5)
        grid.addWidget(self.gran, 1, 0, 1, 2)
        grid.addWidget(self.crit, 1, 2)
        grid.addWidget(self.scope, 1, 3)
        grid.addWidget(self.cap_label, 1, 4)
        grid.addWidget(self.cap, 1, 5)
        grid.addWidget(self.only_selected, 2, 0, 1, 3)
        grid.addWidget(self.set_btn, 2, 3, 1, 3)

        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(0, 0, 0, 0)
        self._lay.addWidget(box)
        self.bars = None
        self._last_plan = None
        self._x_range: tuple[float, float] | None = None
        if not lazy:
            self.build_plots()

    def build_plots(self) -> None:
        """Create the bar chart (imports pyqtgraph); once. A lazy panel draws the last plan it was shown then."""
        if self.bars is not None:
            return
        from ..plots.plots import headroom, pyqtgraph
        pg = pyqtgraph()
        self.bars = pg.PlotWidget()
        headroom(self.bars)
        self.bars.setMenuEnabled(False)
        self.bars.setMouseEnabled(False, False)
        self.bars.setLabel("left", "sparsity")
        self.bars.setYRange(0, 1, padding=0.02)
        self.bars.setMinimumHeight(90)      # 1024x768 with the lesson bar open still fits
        self.bars.setToolTip("Per-layer sparsity of the plan; orange = not applied yet")
        self.bar_item = pg.BarGraphItem(x=[], height=[], width=0.7, brush=(66, 133, 244))
        self.bars.addItem(self.bar_item)
        self.legend = LegendRow(["<span style='color:#4285f4'>■</span> applied",
                                 "<span style='color:#e69138'>■</span> planned, not applied yet (Apply: Ctrl+Enter)",
                                 "darker = the selected layer"])
        self._lay.addWidget(self.bars, 1)
        self._lay.addWidget(self.legend)
        if self._last_plan is not None:
            self.show_plan(*self._last_plan)

    def _scope_changed(self, scope: str) -> None:
        is_global = scope == "global"
        self.cap.setEnabled(is_global)
        self.cap_label.setEnabled(is_global)

    def _emit(self) -> None:
        self.requested.emit("selected" if self.only_selected.isChecked() else "all", self.editor.sparsity(),
                            self.gran.currentText(), self.crit.currentText(), self.scope.currentText(),
                            self.cap.value() / 100.0)

    def show_plan(self, names: list[str], sparsities: list[float], pending: list[bool], selected: str | None) -> None:
        self._last_plan = (names, sparsities, pending, selected)
        if self.bars is None:
            return
        from ..plots.plots import pyqtgraph
        pg = pyqtgraph()
        x = np.arange(len(names))
        brushes = [pg.mkBrush(230, 145, 56) if p else pg.mkBrush(66, 133, 244) for p in pending]
        if selected in names:
            brushes[names.index(selected)] = pg.mkBrush(25, 70, 160) if not pending[names.index(selected)] \
                else pg.mkBrush(190, 100, 20)
        self.bar_item.setOpts(x=x, height=np.asarray(sparsities, float), width=0.7, brushes=brushes)
        ax = self.bars.getAxis("bottom")
        width = max(200, self.bars.width() - 60)
        longest = max((len(n) for n in names), default=1)
        char = max(7, self.bars.fontMetrics().averageCharWidth())   # 7 px at 10 pt; more in presentation mode
        step = max(1, -(-len(names) * (longest * char + 12) // width))
        set_ticks(ax, [[(i, names[i]) for i in range(0, len(names), step)]])
        x_range = (-0.6, max(len(names) - 0.4, 0.4))
        if self._x_range != x_range:
            self.bars.setXRange(*x_range, padding=0)
            self._x_range = x_range
