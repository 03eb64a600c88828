"""Drawing that waits for its widget to be seen: a hidden tab does no drawing work (issue 24).

``redraw = WhenShown(widget, draw)``: calling ``redraw()`` draws at once while ``widget`` is visible; while it
is hidden (another tab is current) it only remembers that the picture is out of date, and ``draw`` runs once
when the widget is next shown, before that first paint. A slider drag or a job's progress then costs the hidden
views nothing, however many times they are told.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QWidget


class WhenShown(QObject):
    def __init__(self, widget: QWidget, draw: Callable[[], None]):
        super().__init__(widget)
        self.widget = widget
        self.draw = draw
        self.stale = False        # told to redraw while hidden: draws when next shown
        widget.installEventFilter(self)

    def __call__(self, *_args) -> None:
        if self.widget.isVisible():
            self.stale = False
            self.draw()
        else:
            self.stale = True

    def eventFilter(self, obj, e) -> bool:       # noqa: N802 (Qt's name)
        if obj is self.widget and e.type() == QEvent.Show and self.stale:
            self.stale = False
            self.draw()
        return False
