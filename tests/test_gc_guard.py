"""While a job's thread runs, the cyclic GC runs only in the GUI thread (a worker that collected a closed
window's widgets deadlocked in PySide6's destructor)."""
from __future__ import annotations

import gc
import threading
import weakref

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QMenu, QWidget  # noqa: E402

from explorer.gui.window import gc_guard  # noqa: E402
from explorer.gui.window.jobs import JobRunner  # noqa: E402


def test_no_collection_in_the_worker_and_widgets_die_in_the_gui_thread(qtbot):
    runner = JobRunner()
    seen = {}
    destroyed_in = []
    release = threading.Event()

    # a closed window in a reference cycle: only the cyclic GC can free it
    w = QWidget()
    QMenu(w)
    w.cycle = w
    w.destroyed.connect(lambda *_: destroyed_in.append(threading.current_thread() is threading.main_thread()))
    ref = weakref.ref(w)
    del w

    def work(progress, cancel):
        seen["enabled_in_worker"] = gc.isenabled()
        junk = []
        for i in range(50_000):          # crosses the generation-0 threshold many times
            a, b = [], []
            a.append(b)
            b.append(a)
            junk.append(a) if i % 1000 == 0 else None
        release.wait(5)
        return len(junk)

    assert gc.isenabled()
    runner.run("allocating", work, on_done=lambda r: seen.setdefault("result", r))
    assert gc_guard.active() and not gc.isenabled()
    release.set()
    qtbot.waitUntil(lambda: "result" in seen, timeout=20_000)
    qtbot.waitUntil(lambda: ref() is None, timeout=5_000)    # collected by the GUI thread's timer or at the end
    assert seen["enabled_in_worker"] is False
    assert not gc_guard.active() and gc.isenabled()
    assert destroyed_in and all(destroyed_in)
