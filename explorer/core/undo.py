"""Undo/redo of edits. A step is an :class:`Edit`: the plan and the applied plan before it, so undoing an
Apply un-applies it. A slider drag is one step: edits with the same ``coalesce`` key merge until
:meth:`UndoStack.end_edit` (slider released)."""
from __future__ import annotations

from typing import NamedTuple

from .prune.plan import Plan

UNDO_LIMIT = 200


class Edit(NamedTuple):
    plan: Plan
    applied: Plan


class UndoStack:
    def __init__(self, limit: int = UNDO_LIMIT):
        self.limit = limit
        self._undo: list[Edit] = []
        self._redo: list[Edit] = []
        self._coalesce: object = None

    def push(self, current: Edit, coalesce: object = None) -> None:
        """Remember ``current`` before it is replaced (unless this edit continues a coalesced one)."""
        if coalesce is not None and coalesce == self._coalesce:
            return
        self._undo.append(current)
        del self._undo[:-self.limit]
        self._redo.clear()
        self._coalesce = coalesce

    def end_edit(self) -> None:
        self._coalesce = None

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
        self._coalesce = None

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self, current: Edit) -> Edit | None:
        return self._step(self._undo, self._redo, current)

    def redo(self, current: Edit) -> Edit | None:
        return self._step(self._redo, self._undo, current)

    def _step(self, source: list[Edit], target: list[Edit], current: Edit) -> Edit | None:
        if not source:
            return None
        target.append(current)
        self._coalesce = None
        return source.pop()

    @property
    def depth(self) -> int:
        """How many steps Undo can go back."""
        return len(self._undo)
