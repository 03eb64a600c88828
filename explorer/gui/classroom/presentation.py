"""Presentation mode (View ▸ Presentation, Ctrl+Shift+P, ``gui --presentation``): for a projector.

Fonts 1.5× (the style sheet's sizes scaled), plot lines twice as thick with larger axis text, and the advanced
controls hidden (the table's detail columns, the many-layers box, the dataset and reconstruct controls, two of
the dashboard's cards), so the window fits 1024×768 with nothing collapsed or cut. The tab bar moves to a row of
its own across the window (in both modes), where every tab fits. Everything comes back when the mode is switched
off.
"""
from __future__ import annotations

import re
import weakref

from PySide6.QtCore import QEvent, QObject, QSignalBlocker, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QApplication, QTabBar

from explorer import RESOURCES

SCALE = 1.5
LINE_SCALE = 2.0
BASE_PT = 10.0
TABLE_HIDDEN = ("Type", "Shape", "Params", "MACs", "Criterion", "Nonzero", "Break-even")
CARDS_HIDDEN = ("params", "size", "macs")
RESTYLE_MS = 400
# secondary views hidden in presentation mode, so the main chart of each tab gets the room: (panel, widget)
ADVANCED = (("finetune_panel", "loss_chart"), ("finetune_panel", "schedule_chart"), ("sensitivity_panel", "heat"),
            ("sensitivity_panel", "prediction"), ("compress_panel", "results"), ("compress_panel", "table"),
            ("compare_panel", "table"), ("latency_panel", "table"))


def scaled_style(qss: str, factor: float = SCALE) -> str:
    """The style sheet with every point size (and the default size) times ``factor``."""
    out = re.sub(r"(\d+(?:\.\d+)?)pt", lambda m: f"{float(m.group(1)) * factor:g}pt", qss)
    return out + f"\nQWidget {{ font-size: {BASE_PT * factor:g}pt; }}\n"


class Presentation:
    """Switches the window in and out of presentation mode (the window's views are its to change)."""

    def __init__(self, win):
        self.win = win
        self.on = False
        self.action = None               # View ▸ Presentation mode (made by the classroom), checked while on
        self.tab_bar = QTabBar()         # the views' tab bar, in a row of its own: every tab fits at 1024 px
        self.tab_bar.setObjectName("viewTabs")
        self.tab_bar.setExpanding(False)
        self.tab_bar.setUsesScrollButtons(False)
        self.tab_bar.currentChanged.connect(lambda i: self.win.tabs.setCurrentIndex(i) if i >= 0 else None)
        win.tabs.currentChanged.connect(self._sync_tab)
        win.tabs.currentChanged.connect(lambda _: self._left_pane())
        win.tabs.tabBar().hide()
        win.tabs.setDocumentMode(True)
        self.fill_tab_bar()
        self._pens: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        self._timer = QTimer(win)
        self._timer.setInterval(RESTYLE_MS)
        self._timer.timeout.connect(self.restyle_plots)
        self._sizes = None
        self._tick = QFont()
        self._tick.setPointSizeF(BASE_PT * SCALE * 0.85)
        # a resized window (e.g. moved to the projector) splits table and views again, instead of the splitter
        # squeezing the layer table to nothing
        self._resplit = QTimer(win)
        self._resplit.setSingleShot(True)
        self._resplit.setInterval(0)
        self._resplit.timeout.connect(lambda: self._split() if self.on else None)
        self._resize_watch = _ResizeWatch(win, self._resplit.start)

    # ------------------------------------------------------------------ switching
    def toggle(self) -> None:
        self.set_on(not self.on)

    def set_on(self, on: bool) -> None:
        if on == self.on:
            return
        self.on = on
        w = self.win
        size = w.size() if w.isVisible() and not (w.isMaximized() or w.isFullScreen()) else None
        w.finish_start()         # the plots and panels it restyles (built after the first frame otherwise)
        qss = (RESOURCES / "style.qss").read_text() if (RESOURCES / "style.qss").exists() else ""
        w.setStyleSheet(scaled_style(qss) if on else "")
        for name in TABLE_HIDDEN:
            col = w.table.column_index(name)
            if col is not None:
                w.table.setColumnHidden(col, on)
        for key, card in w.dashboard.cards.items():
            card.setVisible(not on or key not in CARDS_HIDDEN)
            card.sub.setVisible(not on)      # the numbers stay; their fine print goes
        w.global_panel.box.setVisible(not on)
        w.totals_label.setVisible(not on)
        for panel, name in ADVANCED:
            widget = getattr(getattr(w, panel, None), name, None)
            if widget is not None:
                widget.setVisible(not on)
        history = getattr(getattr(w, "history_panel", None), "table", None)
        if history is not None:
            history.resizeColumnsToContents()
        if on and w.weight_view.detail_btn.isChecked():
            w.weight_view.redraw(auto_range=True)
        self._left_pane()
        w.weight_view.heat_hint.setVisible(not on)
        w.weight_view.split.setSizes([560, 440] if on else [620, 300])
        for widget in (w.reconstruct.box, w.dataset_combo, w.dataset_label, w.pending_label):
            self._toolbar_widget_visible(widget, not on)
        if on:
            self._sizes = w.main_split.sizes()
        w.table.fit_columns()
        if on:
            self._timer.start()
            self.restyle_plots()
            QTimer.singleShot(0, self._split)
        else:
            self._timer.stop()
            self.restore_plots()
            if self._sizes:
                w.main_split.setSizes(self._sizes)
        if size is not None:
            # the 1.5x style grows the window's minimum for a moment (before the advanced controls are hidden),
            # and Qt grows the window with it: give it its size back (1024x768 stays 1024x768)
            self._keep_size(size)
            QTimer.singleShot(0, lambda: self._keep_size(size))
        if self.action is not None:
            with QSignalBlocker(self.action):
                self.action.setChecked(on)
        w.status("presentation mode (Ctrl+Shift+P leaves it)" if on
                 else "presentation mode off", 4000)

    def _keep_size(self, size) -> None:
        w = self.win
        now = w.size()
        if w.isMaximized() or w.isFullScreen() or now == size or now.width() < size.width() \
                or now.height() < size.height():
            return           # only undo Qt's growth; a size someone chose since stays
        QApplication.sendPostedEvents(None, QEvent.LayoutRequest)     # the minimum size of the new layout
        if w.minimumSizeHint().height() <= size.height() and w.minimumSizeHint().width() <= size.width():
            w.resize(size)

    def _toolbar_widget_visible(self, widget, visible: bool) -> None:
        tb = self.win.toolbar
        for a in tb.actions():
            if tb.widgetForAction(a) is widget:
                a.setVisible(visible)

    def fill_tab_bar(self) -> None:
        tabs = self.win.tabs
        with QSignalBlocker(self.tab_bar):
            while self.tab_bar.count():
                self.tab_bar.removeTab(0)
            for i in range(tabs.count()):
                self.tab_bar.addTab(tabs.tabText(i))
                self.tab_bar.setTabToolTip(i, tabs.tabToolTip(i))
            self.tab_bar.setCurrentIndex(tabs.currentIndex())

    def _sync_tab(self, i: int) -> None:
        if self.tab_bar.currentIndex() != i:
            with QSignalBlocker(self.tab_bar):
                self.tab_bar.setCurrentIndex(i)

    def _left_pane(self) -> None:
        """In presentation mode the layer table stands beside the Weights tab; every other view takes the whole
        width, so its plots and controls stay readable at 1.5× on a 1024-pixel projector."""
        left = self.win.main_split.widget(0)
        left.setVisible(not self.on or self.win.tabs.currentWidget() is self.win.weight_view)

    def _split(self) -> None:
        w = self.win.main_split.width()
        left = min(self.win.table.preferred_width(), int(w * 0.6))
        self.win.main_split.setSizes([left, max(w - left, 200)])

    # ------------------------------------------------------------------ plots
    def _plots(self):
        pg = _pg()
        return self.win.findChildren(pg.PlotWidget)

    def restyle_plots(self) -> None:
        """Thicker lines and larger axis text on every plot; items redrawn since the last pass get them too."""
        if not self.on:
            return
        tick = self._tick
        pg = _pg()
        for pw in self._plots():
            pi = pw.getPlotItem()
            for side in ("left", "bottom", "right"):
                ax = pi.getAxis(side) if side in pi.axes else None
                if ax is None:
                    continue
                if ax.style.get("tickFont") is not tick:
                    ax.setStyle(tickFont=tick)
                if ax.label.font().pointSizeF() != tick.pointSizeF():
                    ax.label.setFont(tick)
            for item in pi.items:
                pen = item.opts.get("pen") if isinstance(item, pg.PlotDataItem) else \
                    (item.pen if isinstance(item, pg.InfiniteLine) else None)
                if pen is None:
                    continue
                pen = pg.mkPen(pen)
                mine = self._pens.get(item)
                if mine is not None and mine[1] == pen:
                    continue      # already thick
                base = pen
                thick = pg.mkPen(base)
                thick.setWidthF(max(base.widthF(), 1.0) * LINE_SCALE)
                item.setPen(thick)
                self._pens[item] = (base, pg.mkPen(thick))

    def restore_plots(self) -> None:
        normal = QFont()
        normal.setPointSizeF(BASE_PT * 0.85)
        for pw in self._plots():
            pi = pw.getPlotItem()
            for side in ("left", "bottom", "right"):
                if side in pi.axes:
                    pi.getAxis(side).setStyle(tickFont=None)
                    pi.getAxis(side).label.setFont(normal)
        for item, (base, _) in list(self._pens.items()):
            try:
                item.setPen(base)
            except RuntimeError:   # the item is gone
                pass
        self._pens.clear()


class _ResizeWatch(QObject):
    """Calls ``on_resize`` whenever the watched widget is resized."""

    def __init__(self, widget, on_resize):
        super().__init__(widget)
        self._on_resize = on_resize
        widget.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:   # noqa: N802 (Qt's name)
        if event.type() == QEvent.Resize:
            self._on_resize()
        return False


def _pg():
    """pyqtgraph, imported on first use (the first frame does without it: gui/window/startup.py)."""
    from ..plots.plots import pyqtgraph
    return pyqtgraph()
