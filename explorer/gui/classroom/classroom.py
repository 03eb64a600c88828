"""The classroom features of the window: lessons (the lesson bar and the Lessons menu), presentation mode, and
pruning by hand from the heatmap. Built once by the window, which hands over its views."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QMenu, QScrollArea, QSizePolicy

from explorer.core.lessons.lesson import lesson_names, load_lesson

from .lesson_panel import LessonHooks, LessonPanel
from .presentation import Presentation


class Classroom:
    def __init__(self, win):
        self.win = win
        ctx = win.ctx
        self.presentation = Presentation(win)
        self.panel = LessonPanel(ctx, LessonHooks(show_tab=self.show_tab, set_detail=self.set_detail,
                                                  targets=self.target, evaluate=win.measure.evaluate,
                                                  scan=lambda: self._panel("sensitivity_panel").start_scan(),
                                                  compress=lambda: self._panel("compress_panel").start()))
        # the views scroll when the window is shorter (or narrower) than a view needs, instead of squeezing it
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        win.main_split.replaceWidget(win.main_split.indexOf(win.tabs), self.scroll)
        self.scroll.setWidget(win.tabs)
        # the layer table's side scrolls too (vertically): with the lesson bar open at 1024x768 its boxes would
        # otherwise be squeezed over each other
        self.left_pane = win.main_split.widget(0)
        self.left_scroll = _FitScroll()
        self.left_scroll.setFrameShape(QFrame.NoFrame)
        self.left_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        win.main_split.replaceWidget(0, self.left_scroll)
        self.left_scroll.setWidget(self.left_pane)
        win.tabs.currentChanged.connect(self._size_to_current)
        win.tabs.currentChanged.connect(lambda _: self.place_lesson())
        self._size_to_current()
        lay = win.centralWidget().layout()
        row = QHBoxLayout()
        row.setContentsMargins(4, 2, 4, 0)
        row.addStretch(1)
        row.addWidget(self.presentation.tab_bar)
        lay.insertLayout(1, row)
        lay.addWidget(self.panel)
        self.act_presentation = ctx.action("&Presentation mode", lambda checked: self.presentation.set_on(checked),
                                           "Ctrl+Shift+P", "Fonts ×1.5, thicker lines, advanced controls hidden: "
                                           "for a projector (fits 1024×768)", win.view_menu)
        self.act_presentation.setCheckable(True)
        self.act_presentation.toggled.connect(lambda _: self.place_lesson())
        self.presentation.action = self.act_presentation     # kept checked while the mode is on
        self.panel.visibility_changed = self.place_lesson
        m = self.menu = QMenu("&Lessons", win)
        win.menuBar().insertMenu(win.view_menu.menuAction(), m)
        for name in lesson_names():
            try:
                title = load_lesson(name).title
            except Exception:
                title = name
            ctx.action(title, lambda _=False, n=name: self.open(n), None, f"Lesson '{name}'", m)
        m.addSeparator()
        ctx.action("Open lesson &file…", self.open_dialog, None, "Open a lesson .json of your own", m)
        self.act_resume = ctx.action("&Resume lesson", self.resume, None,
                                     "Back to the lesson and step where you left", m)
        m.addSeparator()
        ctx.action("&Next step", self.panel.next, "Alt+Right", "The lesson's next step", m)
        ctx.action("&Previous step", self.panel.back, "Alt+Left", "The lesson's previous step", m)
        ctx.action("&Leave lesson", self.panel.leave, None, "Close the lesson bar (Resume comes back)", m)
        win.weight_view.clicked.connect(self.heatmap_clicked)

    def _size_to_current(self, *_) -> None:
        """The views' area is as big as the view on show needs (a tab widget otherwise asks for its biggest)."""
        tabs = self.win.tabs
        for i in range(tabs.count()):
            page = tabs.widget(i)
            policy = QSizePolicy.Preferred if page is tabs.currentWidget() else QSizePolicy.Ignored
            page.setSizePolicy(policy, policy)
        tabs.updateGeometry()

    def place_lesson(self) -> None:
        """The lesson bar sits under the window's views; in presentation mode beside the Weights tab it takes the
        place of the per-layer bar chart under the table, so the heatmap and histogram keep their height."""
        w = self.win
        left = self.left_pane.layout()
        beside = self.presentation.on and w.tabs.currentWidget() is w.weight_view and self.panel.lesson is not None
        target = left if beside else w.centralWidget().layout()
        if target.indexOf(self.panel) < 0:
            target.addWidget(self.panel)
            self.panel.setVisible(self.panel.lesson is not None)
        w.global_panel.setVisible(not beside)

    def _panel(self, attr: str):
        self.win.finish_start()      # the tab panels are built after the first frame
        return getattr(self.win, attr)

    # ------------------------------------------------------------------ lessons
    def open(self, name_or_path: str, step: int = 0) -> bool:
        self.win.finish_start()      # a lesson shows plots and tabs: build them now if the window deferred them
        return self.panel.open(name_or_path, step)

    def open_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog
        path, _ = QFileDialog.getOpenFileName(self.win, "Open lesson", "", "Lessons (*.json);;All files (*)")
        if path:
            self.open(path)

    def resume(self) -> None:
        st = self.win.settings
        path = st.value("lesson/path", "")
        if not path or not Path(path).exists():
            self.win.status("no lesson to resume: open one from the Lessons menu", 4000)
            return
        self.open(path, int(st.value("lesson/step", 0)))

    def show_tab(self, name: str) -> None:
        tabs = self.win.tabs
        for i in range(tabs.count()):
            if tabs.tabText(i).lower() == name:
                tabs.setCurrentIndex(i)
                return

    def set_detail(self, on: bool) -> None:
        self.win.weight_view.detail_btn.setChecked(on)

    def target(self, name: str):
        w = self.win
        w.finish_start()
        cards = {"accuracy-card": "accuracy", "latency-card": "latency", "size-card": "size",
                 "compression-card": "ratio", "macs-card": "macs"}
        if name in cards:
            return w.dashboard.cards[cards[name]]
        return {"heatmap": w.weight_view.heat, "histogram": w.weight_view.hist, "layer-table": w.table,
                "many-layers": w.global_panel.bars, "dashboard": w.dashboard,
                "tab": w.tabs.currentWidget()}.get(name)

    # ------------------------------------------------------------------ pruning by hand
    def heatmap_clicked(self, row: int, col: int, detail: bool) -> None:
        """A click on the heatmap: the row's channel (normal view), or the kernel / weight under it (Detail)."""
        s = self.win.session
        name = s.selected
        if not name:
            return
        layer = s.layer(name)
        shape = tuple(layer.weight_shape)
        try:
            if not detail:
                gran, unit = "channel", row
            else:
                rest = np.unravel_index(col, shape[1:]) if len(shape) > 2 else (col,)
                if len(shape) > 2 and s.plan.get(name).granularity.name == "kernel":
                    gran, unit = "kernel", (row, int(rest[0]))
                else:
                    gran, unit = "element", (row, *(int(i) for i in rest))
            pruned = s.editor.toggle_manual(name, unit, gran)
        except Exception as e:
            self.win.report_error(e)
            return
        what = {"channel": "channel", "kernel": "kernel", "element": "weight"}[gran]
        self.win.status(f"{name}: {what} {unit} {'pruned' if pruned else 'restored'} by hand (Ctrl+Z undoes)", 4000)


class _FitScroll(QScrollArea):
    """Scrolls its widget vertically only when the widget's minimum height does not fit; otherwise the widget fills
    the view exactly (QScrollArea's own resizing uses the layout's height-for-width, i.e. preferred heights)."""

    def __init__(self):
        super().__init__()
        self.setWidgetResizable(False)

    def _fit(self) -> None:
        w = self.widget()
        if w is not None:
            vp = self.viewport()
            w.resize(vp.width(), max(vp.height(), self._needed(w, vp.width())))

    @staticmethod
    def _needed(w, width: int) -> int:
        """The widget's minimum height, with its word-wrapped labels at the lines they need at this width (a
        layout's minimum counts them as one line)."""
        h = w.minimumSizeHint().height()
        lay = w.layout()
        for i in range(lay.count() if lay is not None else 0):
            item = lay.itemAt(i)
            child = item.widget()
            if isinstance(child, QLabel) and child.isVisible() and child.wordWrap():
                h += max(0, child.heightForWidth(width) - item.minimumSize().height())
        return h

    def resizeEvent(self, e) -> None:      # noqa: N802 (Qt's name)
        super().resizeEvent(e)
        self._fit()

    def setWidget(self, w) -> None:        # noqa: N802
        super().setWidget(w)
        w.installEventFilter(self)
        self._fit()

    def eventFilter(self, obj, e) -> bool:  # noqa: N802
        if obj is self.widget() and e.type() == QEvent.LayoutRequest:
            self._fit()
        return False

    def minimumSizeHint(self):             # noqa: N802
        hint = super().minimumSizeHint()
        w = self.widget()
        if w is not None:
            hint.setWidth(max(hint.width(), w.minimumSizeHint().width()))
        return hint
