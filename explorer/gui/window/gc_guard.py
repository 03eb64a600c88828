"""Who may run Python's cyclic garbage collector, and when: one switch for the whole app.

Two holders turn automatic collection off:

- a running job: the cyclic GC runs in whichever thread happens to allocate when a threshold is crossed. If that
  is a job's worker thread and the garbage holds a Qt widget (a window or menu in a reference cycle), the widget
  is destroyed outside the GUI thread: Qt forbids that, and PySide6 can deadlock there (seen: a worker
  deep-copying a model collected a closed window's QMenu and waited forever for the GIL). While a job runs, a
  GUI-thread timer collects instead, by the same generation thresholds (as pyqtgraph's GarbageCollector does);
- the start-up (``gui/window/startup.py``): importing torch and building the window allocate hundreds of thousands of
  long-lived objects, and every full collection on the way scans them all again (about 0.1 s each, 0.3 s of a
  1.3 s start here). It is released after the first frame.

When the last holder lets go, automatic collection comes back as it was before the first took it.

Once the window has started, what exists then (torch, Qt and pyqtgraph, the window, the open model: ~460,000
objects) is frozen (``gc.freeze``): a full collection, which the timer above runs in the GUI thread, scans only what
came later (0 ms instead of 220-330 ms each, the longest GUI-thread stall there was during a job, issue 24).
Opening another model collects the old one's cycles once (unfreeze, full collection, freeze again).
"""
from __future__ import annotations

import gc

INTERVAL_MS = 250
JOB = "job"
START = "start-up"

_holds: dict[str, int] = {}
_was_enabled = True
_timer = None


def _collect() -> None:
    """What automatic collection would have done by now, in the GUI thread."""
    t0, t1, t2 = gc.get_threshold()
    c0, c1, c2 = gc.get_count()
    if c0 > t0:
        gc.collect(2 if (c1 > t1 and c2 > t2) else 1 if c1 > t1 else 0)


def hold(reason: str) -> None:
    """Automatic collection off until :func:`release` (``reason`` ``JOB``: collect on a GUI-thread timer meanwhile).
    Called in the GUI thread."""
    global _was_enabled, _timer
    if not _holds:
        _was_enabled = gc.isenabled()
        gc.disable()
    _holds[reason] = _holds.get(reason, 0) + 1
    if reason == JOB and _holds[JOB] == 1:
        if _timer is None:
            from PySide6.QtCore import QTimer

            _timer = QTimer()
            _timer.setInterval(INTERVAL_MS)
            _timer.timeout.connect(_collect)
        _timer.start()


def release(reason: str) -> None:
    """Undo one :func:`hold` of ``reason`` (a release without a hold does nothing)."""
    if not _holds.get(reason):
        return
    _holds[reason] -= 1
    if not _holds[reason]:
        del _holds[reason]
        if reason == JOB and _timer is not None:
            _timer.stop()
    if not _holds:
        if _was_enabled:
            gc.enable()
        _collect()


def job_started() -> None:
    hold(JOB)


def job_ended() -> None:
    release(JOB)


def active() -> bool:
    """Is a job holding the collector?"""
    return bool(_holds.get(JOB))


def freeze_long_lived() -> None:
    """Keep what exists now out of every later collection (the start-up's imports, window and model)."""
    gc.freeze()


def collect_frozen() -> None:
    """Another model opened: free the frozen objects' cycles once, and freeze what is left (only after
    :func:`freeze_long_lived`; a window that never froze leaves the collector alone)."""
    if gc.get_freeze_count():
        gc.unfreeze()
        gc.collect()
        gc.freeze()
