"""The cyclic garbage collector runs in the GUI thread only, while a job's thread runs.

Python's cyclic GC runs in whichever thread happens to allocate when a threshold is crossed. If that is a job's
worker thread and the garbage holds a Qt widget (a window or menu in a reference cycle), the widget is destroyed
outside the GUI thread: Qt forbids that, and PySide6 can deadlock there (seen: a worker deep-copying a model
collected a closed window's QMenu and waited forever for the GIL). So while any job runs, automatic collection
is off and a GUI-thread timer collects instead, by the same generation thresholds (as pyqtgraph's
GarbageCollector does); when the last job ends, automatic collection comes back as it was.
"""
from __future__ import annotations

import gc

from PySide6.QtCore import QTimer

INTERVAL_MS = 250

_depth = 0
_was_enabled = True
_timer: QTimer | None = None


def _collect() -> None:
    """What automatic collection would have done by now, in the GUI thread."""
    t0, t1, t2 = gc.get_threshold()
    c0, c1, c2 = gc.get_count()
    if c0 > t0:
        gc.collect(2 if (c1 > t1 and c2 > t2) else 1 if c1 > t1 else 0)


def job_started() -> None:
    """Called in the GUI thread before a job's thread starts."""
    global _depth, _was_enabled, _timer
    if _depth == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
        if _timer is None:
            _timer = QTimer()
            _timer.setInterval(INTERVAL_MS)
            _timer.timeout.connect(_collect)
        _timer.start()
    _depth += 1


def job_ended() -> None:
    """Called in the GUI thread once a job's thread has finished."""
    global _depth
    if _depth == 0:
        return
    _depth -= 1
    if _depth == 0:
        if _timer is not None:
            _timer.stop()
        if _was_enabled:
            gc.enable()
        _collect()


def active() -> bool:
    return _depth > 0
