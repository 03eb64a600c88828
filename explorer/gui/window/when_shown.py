"""Drawing that waits for its widget to be seen: a hidden tab does no drawing work (issue 24).

``redraw = WhenShown(widget, draw)``: calling ``redraw()`` draws at once while ``widget`` is visible; while it
is hidden (another tab is current) it only remembers that the picture is out of date. When the widget is shown
again, its first paint shows what it drew last, and ``draw`` runs ``CATCH_UP_MS`` later: a tab switch (whose
paint is the costliest step there is: Qt paints a shown QGraphicsView twice) and the catching up are two steps,
not one. A slider drag or a job's progress costs the hidden views nothing, however often they are told.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QWidget

CATCH_UP_MS = 30     # after a show, the owed redraw waits this long: the show's own paint comes first


class WhenShown(QObject):
    def __init__(self, widget: QWidget, draw: Callable[[], None]):
        super().__init__(widget)
        self.widget = widget
        self.draw = draw
        self.stale = False        # told to redraw while hidden: draws in the turn after its first paint on show
        widget.installEventFilter(self)

    def __call__(self, *_args) -> None:
        if self.widget.isVisible():
            self.stale = False
            self.draw()
        else:
            self.stale = True

    def catch_up(self) -> None:
        """Draw now if a redraw is owed (and forget it)."""
        if self.stale and self.widget.isVisible():
            self.stale = False
            self.draw()

    def eventFilter(self, obj, e) -> bool:       # noqa: N802 (Qt's name)
        if obj is self.widget and self.stale and e.type() == QEvent.Show:
            # the paint the show posted runs in the next turn; the draw a little later, in a turn of its own
            QTimer.singleShot(CATCH_UP_MS, self.widget, self.catch_up)   # (self is callable: not the context)
        return False
