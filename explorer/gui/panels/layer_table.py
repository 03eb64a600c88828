"""The layer table: every prunable layer with its sparsity slider, granularity and criterion."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtGui import QColor, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QComboBox, QHeaderView, QTableWidget, QTableWidgetItem
from superqt import QLabeledDoubleSlider

from explorer.core.errors import PlanError
from explorer.core.model.metrics import format_count
from explorer.core.prune.criteria import CRITERIA, get_criterion
from explorer.core.prune.granularity import get_granularity
from explorer.core.prune.plan import LayerPlan

from .layer_stats import ALPHA_TIP, OUTLIERS_TIP

GRANULARITY_CHOICES = ("element", "2:4", "4:8", "vector", "kernel", "channel")
SPARSITY_DECIMALS = 4   # 0.1 % steps of the slider, as a fraction

COLUMNS = ("Layer", "Type", "Shape", "Params", "MACs", "Sparsity %", "Granularity", "Criterion", "Nonzero",
           "Break-even", "Outliers", "Alpha")
COLUMN_WIDTHS = (90, 62, 96, 62, 62, 160, 90, 86, 64, 150, 64, 52)
STAT_COLUMNS = {"Outliers": 10, "Alpha": 11}
COL_TIPS = {
    "Layer": "Module name; ⇄ marks layers whose output channels are coupled (a residual add or a depthwise conv): "
             "under channel granularity they share one channel choice.",
    "Params": "Weights of this layer (the prunable parameters)",
    "MACs": "Multiply-accumulates per input sample at the model's input size",
    "Sparsity %": "Percentage of this layer's weights to remove (drag, or type a value)",
    "Granularity": "Which weights go together: element, n:m pattern, kernel row (vector), kernel, or whole channel",
    "Criterion": "How importance is scored: L1 / L2 magnitude, random, Taylor, Hessian (OBD), Wanda, BN scale or "
                 "APoZ (the last two for channels only)",
    "Nonzero": "Weights left nonzero under the current plan",
    "Break-even": "The sparsity above which a sparse kernel (CSR) runs this layer faster than dense on this machine "
                  "(Latency tab ▸ Speed map measures it)",
    "Outliers": OUTLIERS_TIP + " Sensitivity tab ▸ allocation box ▸ Diagnose computes it.",
    "Alpha": ALPHA_TIP + " Sensitivity tab ▸ allocation box ▸ Diagnose computes it.",
}


class SparsityEditor(QLabeledDoubleSlider):
    """superqt's labelled slider in percent (0.0-100.0, the label is editable); ``edited(sparsity, final)`` gives
    the sparsity as a fraction, final when the slider is released or a value is typed."""

    edited = Signal(float, bool)

    def __init__(self, parent=None):
        super().__init__(Qt.Horizontal, parent)
        self.setRange(0.0, 100.0)
        self.setDecimals(1)
        self.setSingleStep(0.1)
        self.setPageStep(5.0)
        self.setMinimumWidth(120)
        self.setToolTip(COL_TIPS["Sparsity %"])
        self.valueChanged.connect(lambda _: self.edited.emit(self.sparsity(), not self.isSliderDown()))
        self.sliderReleased.connect(lambda: self.edited.emit(self.sparsity(), True))

    def sparsity(self) -> float:
        return round(self.value() / 100.0, SPARSITY_DECIMALS)

    def set_sparsity(self, s: float) -> None:
        with QSignalBlocker(self):
            self.setValue(s * 100.0)


def make_combo(items, tips: dict[str, str] | None = None, width: int = 96) -> QComboBox:
    c = QComboBox()
    for it in items:
        c.addItem(it)
        if tips and it in tips:
            c.setItemData(c.count() - 1, tips[it], Qt.ToolTipRole)
    c.setMinimumWidth(width)
    return c


def granularity_tips() -> dict[str, str]:
    return {g: get_granularity(g).tooltip for g in GRANULARITY_CHOICES}


def criterion_tips() -> dict[str, str]:
    return {n: c.tooltip for n, c in CRITERIA.items()}


class LayerTable(QTableWidget):
    """Rows = prunable layers. Edits go straight to the session; redraws follow its events."""

    def __init__(self, session, report_error: Callable[[Exception], None], parent=None,
                 status: Callable[[str, int], None] | None = None, speed=None, stats=None):
        super().__init__(0, len(COLUMNS), parent)
        self.session = session
        self.stats = stats          # LayerStats (layer_stats.py): the Outliers and Alpha columns
        if stats is not None:
            stats.changed.connect(self.show_layer_stats)
        self.speed = speed          # SpeedResults (speed_results.py): the Break-even column
        if speed is not None:
            speed.changed.connect(lambda names: self.show_break_even(names or None))
        self.report_error = report_error
        self.status = status or (lambda text, ms=0: None)
        self._rows: dict[str, int] = {}
        self._editors: dict[str, tuple[SparsityEditor, QComboBox, QComboBox]] = {}
        self._choices: dict[str, tuple] = {}     # row -> (granularity, criterion) its combos' choices reflect
        self._fit: dict[tuple, str | None] = {}   # (row, granularity, criterion, dataset) -> why not (None: fits)
        self.setHorizontalHeaderLabels(COLUMNS)
        for i, c in enumerate(COLUMNS):
            if c in COL_TIPS:
                self.horizontalHeaderItem(i).setToolTip(COL_TIPS[c])
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(30)
        self.setAlternatingRowColors(True)
        h = self.horizontalHeader()
        h.setSectionResizeMode(QHeaderView.Interactive)
        h.setStretchLastSection(True)   # the slider keeps its width; spare room goes to the last column
        for i, w in enumerate(COLUMN_WIDTHS):
            self.setColumnWidth(i, w)
        self.itemSelectionChanged.connect(self._selection_changed)

    # ------------------------------------------------------------------ build
    def rebuild(self) -> None:
        s = self.session
        with QSignalBlocker(self):
            for r in range(self.rowCount()):          # free the old rows' editors (clearContents keeps them)
                for c in range(self.columnCount()):
                    if self.cellWidget(r, c) is not None:
                        self.removeCellWidget(r, c)
            self.setRowCount(0)
            self.setRowCount(len(s.layers))
            self._rows.clear()
            self._editors.clear()
            self._choices.clear()
            self._fit.clear()          # a new model, or its channel groups arrived
            gtips, ctips = granularity_tips(), criterion_tips()
            for r, l in enumerate(s.layers):
                self._rows[l.name] = r
                linked = s.groups_ready and len(s.linked_layers(l.name)) > 1   # known once analysed
                name = QTableWidgetItem(("⇄ " if linked else "") + l.name)
                tip = f"{l.name}: {l.kind}, weight {tuple(l.weight_shape)}, output {tuple(l.output_shape)}"
                if linked:
                    tip += "\nchannel-coupled with: " + ", ".join(n for n in s.linked_layers(l.name) if n != l.name)
                if l.is_output:
                    tip += "\nthe network's output layer: its output channels (classes) are never removed"
                name.setToolTip(tip)
                self.setItem(r, 0, name)
                self.setItem(r, 1, QTableWidgetItem(l.kind))
                self.setItem(r, 2, QTableWidgetItem("×".join(map(str, l.weight_shape))))
                for col, val in ((3, l.params), (4, l.macs)):
                    it = QTableWidgetItem(format_count(val))
                    it.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                    it.setToolTip(f"{val:,}")
                    self.setItem(r, col, it)
                nz = QTableWidgetItem("")
                nz.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.setItem(r, 8, nz)
                self.setItem(r, 9, QTableWidgetItem(""))
                for col in STAT_COLUMNS.values():
                    it = QTableWidgetItem("")
                    it.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                    self.setItem(r, col, it)
                ed = SparsityEditor()
                ed.edited.connect(lambda v, final, n=l.name: self._sparsity_edited(n, v, final))
                gc = make_combo(GRANULARITY_CHOICES, gtips)
                model: QStandardItemModel = gc.model()
                for i, g in enumerate(GRANULARITY_CHOICES):
                    item = model.item(i)
                    if g == "channel" and not s.groups_ready:
                        continue          # checked when the channel groups arrive (the table is rebuilt then)
                    why = self._why_not(l.name, LayerPlan(0.0, g, "l1"))
                    if why is not None:
                        item.setEnabled(False)
                        item.setToolTip(why)
                gc.setToolTip(COL_TIPS["Granularity"])
                gc.currentTextChanged.connect(lambda g, n=l.name: self._granularity_edited(n, g))
                cc = make_combo(list(CRITERIA), ctips, 84)
                cc.setToolTip(COL_TIPS["Criterion"])
                cc.currentTextChanged.connect(lambda c, n=l.name: self._criterion_edited(n, c))
                self.setCellWidget(r, 5, ed)
                self.setCellWidget(r, 6, gc)
                self.setCellWidget(r, 7, cc)
                self._editors[l.name] = (ed, gc, cc)
            self.fit_columns()
            # every row visible up to six, however much room the panels below want
            self.setMinimumHeight(self.horizontalHeader().sizeHint().height() + 30 * min(len(s.layers), 6)
                                  + self.horizontalScrollBar().sizeHint().height() + 6)
            self.refresh()
            self.show_break_even()
            self.show_layer_stats()
            if s.selected in self._rows:
                self.selectRow(self._rows[s.selected])

    # ------------------------------------------------------------------ refresh
    def refresh(self, names: list[str] | None = None, uncached: set[str] | None = None) -> None:
        """Redraw rows (default all). ``uncached``: the layers whose ranking is not built yet, when the caller
        knows (the window's redraw asks the session once and passes it on); None: ask per row."""
        s = self.session
        for name in names or list(self._rows):
            r = self._rows.get(name)
            if r is None:
                continue
            lp = s.plan.get(name)
            ed, gc, cc = self._editors[name]
            ed.set_sparsity(lp.sparsity)
            with QSignalBlocker(gc):
                if gc.findText(lp.granularity) < 0:
                    gc.addItem(lp.granularity)
                gc.setCurrentText(lp.granularity)
            with QSignalBlocker(cc):
                if cc.findText(lp.criterion) < 0:     # 'manual' appears once a row is pruned by hand
                    cc.addItem(lp.criterion)
                    cc.setItemData(cc.count() - 1, lp.criterion.tooltip, Qt.ToolTipRole)
                cc.setCurrentText(lp.criterion)
            self._update_choices(name, lp)
            item = self.item(r, 8)
            if lp.is_dense or not (name in uncached if uncached is not None else s.needs_build(name, lp)):
                c = s.layer_counts(name, lp)
                item.setText(format_count(c.nonzero))
                item.setToolTip(f"{c.nonzero:,} of {c.params:,} weights nonzero ({c.sparsity:.2%} sparse)")
                item.setForeground(QColor(30, 30, 30))
            else:
                item.setText("…")
                item.setToolTip("indexing this layer's weights")
            pending = lp != s.applied_plan.get(name)
            self.item(r, 0).setForeground(QColor(170, 90, 0) if pending else QColor(20, 20, 20))

    def show_break_even(self, names: list[str] | None = None) -> None:
        """The Break-even column from the measured speed maps ('—' until measured); the column shows once a layer
        has been measured (a column of dashes would only push the table wider than its pane)."""
        measured = False
        for name in names or list(self._rows):
            r = self._rows.get(name)
            if r is None or self.item(r, 9) is None:
                continue
            text, tip = self.speed.break_even_text(name) if self.speed is not None else ("—", "")
            self.item(r, 9).setText(text)
            self.item(r, 9).setToolTip(tip)
            measured = measured or text != "—"
        if measured or names is None:
            self.setColumnHidden(9, not any(self.item(r, 9) is not None and self.item(r, 9).text() != "—"
                                            for r in self._rows.values()))

    def show_layer_stats(self) -> None:
        """The Outliers and Alpha columns from the window's LayerStats; each column shows once it has values."""
        outliers, alpha = self.stats.for_session(self.session) if self.stats is not None else ({}, {})
        m = self.stats.m if self.stats is not None else None
        for name, r in self._rows.items():
            o, a = self.item(r, STAT_COLUMNS["Outliers"]), self.item(r, STAT_COLUMNS["Alpha"])
            if o is None or a is None:
                continue
            v = outliers.get(name)
            o.setText("" if v is None else f"{v:.2%}")
            o.setToolTip("" if v is None else f"{v:.4%} of |w|·‖x‖ above {m:g} × the layer's mean")
            v = alpha.get(name)
            a.setText("" if name not in alpha else ("—" if v is None else f"{v:.2f}"))
            a.setToolTip("" if name not in alpha else ("too few singular values to fit a tail" if v is None
                                                       else f"alpha = {v:.4f}"))
        self.setColumnHidden(STAT_COLUMNS["Outliers"], not outliers)
        self.setColumnHidden(STAT_COLUMNS["Alpha"], not alpha)

    def _update_choices(self, name: str, lp: LayerPlan) -> None:
        """Grey out the granularities that do not fit the row's criterion and the criteria that do not fit its
        granularity (bn-scale and apoz score channels; hessian needs labels), with the reason as tooltip."""
        key = (lp.granularity.name, lp.criterion.name, self.session.dataset.spec)
        if self._choices.get(name) == key:
            return
        self._choices[name] = key
        _, gc, cc = self._editors[name]
        for combo, tips, plan_of in ((gc, granularity_tips(), lambda g: LayerPlan(0.0, g, lp.criterion)),
                                     (cc, criterion_tips(), lambda c: LayerPlan(0.0, lp.granularity, c))):
            model: QStandardItemModel = combo.model()
            for i in range(combo.count()):
                text = combo.itemText(i)
                plan = plan_of(text)
                if not self.session.groups_ready and str(plan.granularity) == "channel":
                    continue      # the channel groups are still being analysed (rebuilt when they arrive)
                why = self._why_not(name, plan)
                item = model.item(i)
                if item is not None:
                    item.setEnabled(why is None)
                    item.setToolTip(tips.get(text, "") if why is None else why)

    def _why_not(self, name: str, lp: LayerPlan) -> str | None:
        """Why ``lp``'s granularity and criterion do not fit the layer (None: they fit). The session checks each
        combination once per model and dataset: a row's combos share the answers, and switching back is free."""
        key = (name, lp.granularity.name, lp.criterion.name, self.session.dataset.spec)
        if key not in self._fit:
            try:
                self.session.check_layer_plan(name, lp)
                self._fit[key] = None
            except PlanError as e:
                self._fit[key] = e.message
        return self._fit[key]

    def column_index(self, name: str) -> int | None:
        return COLUMNS.index(name) if name in COLUMNS else None

    def fit_columns(self) -> None:
        """Widths from the current font: every header and value readable (names, shapes), the slider usable."""
        fm = self.fontMetrics()
        hf = self.horizontalHeader().fontMetrics()
        scale = max(1.0, fm.height() / 17.0)     # 17 px: the line height of the normal 10 pt font
        s = self.session
        texts = {0: [("⇄ " if s.groups_ready and len(s.linked_layers(l.name)) > 1 else "") + l.name for l in s.layers]
                 if s.loaded_ok else [],
                 2: ["×".join(map(str, l.weight_shape)) for l in s.layers] if s.loaded_ok else []}
        for i, name in enumerate(COLUMNS):
            w = max(int(COLUMN_WIDTHS[i] * scale), hf.horizontalAdvance(name) + 26)
            if texts.get(i):
                w = max(w, max(fm.horizontalAdvance(t) for t in texts[i]) + 18)
            self.setColumnWidth(i, min(w, 320))

    def preferred_width(self) -> int:
        return sum(self.columnWidth(i) for i in range(self.columnCount()) if not self.isColumnHidden(i)) + 24

    def select_layer(self, name: str) -> None:
        r = self._rows.get(name)
        if r is not None and self.currentRow() != r:
            with QSignalBlocker(self):
                self.selectRow(r)
            self.scrollToItem(self.item(r, 0))

    def editor(self, name: str) -> tuple[SparsityEditor, QComboBox, QComboBox]:
        """The sparsity slider, granularity and criterion boxes of a layer's row."""
        return self._editors[name]

    def selected_layers(self) -> list[str]:
        rows = sorted({i.row() for i in self.selectedIndexes()})
        names = list(self._rows)
        return [names[r] for r in rows if r < len(names)]

    # ------------------------------------------------------------------ edits -> session
    def _selection_changed(self) -> None:
        rows = self.selectionModel().selectedRows()
        if rows:
            names = list(self._rows)
            r = self.currentRow() if self.currentRow() >= 0 else rows[0].row()
            if 0 <= r < len(names):
                self.session.select(names[r])

    def _sparsity_edited(self, name: str, s: float, final: bool) -> None:
        try:
            self.session.set_layer(name, sparsity=s, coalesce=("sparsity", name))
        except Exception as e:
            self.report_error(e)
            self.refresh([name])
        if final:
            self.session.editor.end_edit()
        if self.session.selected != name:
            self.session.select(name)

    def _granularity_edited(self, name: str, g: str) -> None:
        kw = {}
        crit = self.session.plan.get(name).criterion
        if g != "channel" and crit.channel_only:   # bn-scale/apoz score whole channels: the row falls back to l1
            kw["criterion"] = "l1"
            self.status(f"{name}: {crit.name} scores whole channels only, so {g} granularity ranks by l1", 6000)
        try:
            self.session.set_layer(name, granularity=g, **kw)
        except Exception as e:
            self.report_error(e)
            self.refresh([name])

    def _criterion_edited(self, name: str, c: str) -> None:
        kw: dict = {}
        try:
            if c == "manual":      # by hand, starting from what the row prunes now
                g = self.session.plan.get(name).granularity.name
                self.session.editor.set_manual(name, self.session.editor.manual_units(name, g), g)
                return
            if get_criterion(c).channel_only and self.session.plan.get(name).granularity.name != "channel":
                kw["granularity"] = "channel"    # what the criterion scores; refused below if the layer can't
            self.session.set_layer(name, criterion=c, **kw)
            if kw:
                self.status(f"{name}: {c} scores whole output channels, so the row switched to channel granularity",
                            6000)
        except PlanError as e:
            if kw:       # e.g. the output layer keeps all its channels: say so where the user looks, no dialog
                self.status(f"{name}: {c} needs channel granularity, which this layer does not allow "
                            f"({e.message})", 8000)
            else:
                self.report_error(e)
            self.refresh([name])
        except Exception as e:
            self.report_error(e)
            self.refresh([name])
