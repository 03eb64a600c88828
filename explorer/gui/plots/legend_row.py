"""A row of legend entries that wraps between entries, never inside one.

A legend such as "■ pruned  ■ − ■ + (scale at right)  click a row: …" in one word-wrapped label breaks at any
space, so a narrow pane shows "■ −" on one line and "+ (scale at right)" on the next. ``LegendRow`` keeps each
entry whole (one unwrapped label each) and moves whole entries to the next line when the row is too narrow: a
flow layout with height-for-width, so the pane gives it exactly the lines it needs.
"""
from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QLabel, QLayout, QSizePolicy, QWidget


class FlowLayout(QLayout):
    """Items left to right, wrapping to a new line when the next one does not fit."""

    def __init__(self, parent=None, hspacing: int = 14, vspacing: int = 2):
        super().__init__(parent)
        self._items = []
        self._h, self._v = hspacing, vspacing
        self._height = 0            # the height its lines took at the width it was last laid out at
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item) -> None:          # noqa: N802 (Qt's name)
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, i: int):                 # noqa: N802
        return self._items[i] if 0 <= i < len(self._items) else None

    def takeAt(self, i: int):                 # noqa: N802
        return self._items.pop(i) if 0 <= i < len(self._items) else None

    def expandingDirections(self):            # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:      # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:   # noqa: N802
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:    # noqa: N802
        super().setGeometry(rect)
        height = self._arrange(rect, move=True)
        if height != self._height:  # more (or fewer) lines than before: the parents' minimum heights follow
            self._height = height
            self.invalidate()

    def sizeHint(self) -> QSize:              # noqa: N802
        items = [i for i in self._items if not i.isEmpty()]
        w = sum(i.sizeHint().width() for i in items) + self._h * max(len(items) - 1, 0)
        h = max((i.sizeHint().height() for i in items), default=0)
        return QSize(w, h)

    def minimumSize(self) -> QSize:           # noqa: N802
        """The lines it took at its last width (one line before it is laid out), so that the layouts above it
        leave it that room even where they do not ask for height-for-width (a splitter, a scroll area)."""
        items = [i for i in self._items if not i.isEmpty()]
        one_line = max((i.sizeHint().height() for i in items), default=0)
        return QSize(min(max((i.minimumSize().width() for i in items), default=0), 80), max(one_line, self._height))

    def _arrange(self, rect: QRect, move: bool) -> int:
        x, y, line = rect.x(), rect.y(), 0
        for item in self._items:
            if item.isEmpty():
                continue
            hint = item.sizeHint()
            if x > rect.x() and x + hint.width() > rect.right() + 1:
                x, y, line = rect.x(), y + line + self._v, 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), QSize(min(hint.width(), rect.width()), hint.height())))
            x += hint.width() + self._h
            line = max(line, hint.height())
        return y + line - rect.y()


class LegendRow(QWidget):
    """Legend entries (rich text each) that wrap as whole entries; ``labels`` gives the entry widgets."""

    def __init__(self, entries: list[str], object_name: str = "legendLabel", parent=None):
        super().__init__(parent)
        self.flow = FlowLayout(self)
        self.labels: list[QLabel] = []
        for text in entries:
            lab = QLabel(text)
            lab.setObjectName(object_name)
            lab.setTextFormat(Qt.RichText)
            self.flow.addWidget(lab)
            self.labels.append(lab)
        sp = QSizePolicy(QSizePolicy.Preferred, QSizePolicy.Preferred)
        sp.setHeightForWidth(True)
        self.setSizePolicy(sp)

    def setToolTip(self, text: str) -> None:       # noqa: N802
        super().setToolTip(text)
        for lab in self.labels:
            lab.setToolTip(text)
