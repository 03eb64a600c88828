"""Guard against a Qt binding that loses references to None/True (issue 16).

PySide6-Essentials / shiboken6 6.12.0 on CPython 3.11 drops one reference to ``None`` for every Qt method
that returns nothing and one reference to ``True`` for every ``Signal.emit()``.  The interpreter starts
with about 161,000 references to ``None``, so after a few hundred window actions the count reaches zero
and the process aborts with ``Fatal Python error: none_dealloc``.  pyproject pins ``<6.12``; this test
fails on any binding that brings the bug back (a refcount that drifts by about one per call).
"""
from __future__ import annotations

import sys

import pytest

CALLS = 4000

# Python >= 3.12 makes None/True immortal: their refcount is a fixed huge number and cannot run out.
IMMORTAL = sys.version_info >= (3, 12)


def _drift(obj, fn) -> int:
    before = sys.getrefcount(obj)
    for _ in range(CALLS):
        fn()
    return sys.getrefcount(obj) - before


@pytest.fixture(scope="module")
def qapp():
    from PySide6.QtWidgets import QApplication
    return QApplication.instance() or QApplication([])


@pytest.mark.skipif(IMMORTAL, reason="None and True are immortal on this Python")
def test_void_methods_keep_references_to_none(qapp):
    from PySide6.QtWidgets import QLabel

    label = QLabel()
    calls = [lambda: label.setText("x"), lambda: label.setEnabled(True), lambda: label.setMaximumWidth(100)]
    for call in calls:
        call()  # first call may cache method wrappers
        drift = _drift(None, call)
        assert abs(drift) < CALLS // 10, (
            f"sys.getrefcount(None) moved by {drift} over {CALLS} void Qt calls: this Qt binding "
            "loses a reference to None per call and will abort the interpreter (see pyproject pin)")
    label.deleteLater()


@pytest.mark.skipif(IMMORTAL, reason="None and True are immortal on this Python")
def test_signal_emit_keeps_references_to_true_and_none(qapp):
    from PySide6.QtCore import QObject, Signal

    class Emitter(QObject):
        fired = Signal(int)

    seen = []
    em = Emitter()
    em.fired.connect(seen.append)
    em.fired.emit(0)
    seen.clear()
    for obj in (True, None):
        drift = _drift(obj, lambda: em.fired.emit(1))
        seen.clear()
        assert abs(drift) < CALLS // 10, (
            f"sys.getrefcount({obj!r}) moved by {drift} over {CALLS} Signal.emit calls: this Qt binding "
            "loses references and will abort the interpreter")

