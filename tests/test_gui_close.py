"""Closing the window while a job runs, or while something is about to start one (issue 24): the job is cancelled
and waited for until its worker has sent its last signal, nothing starts afterwards, and the process exits without
a traceback ("Signal source has been deleted" came from an Evaluate that a lesson's timer started while
``gui --screenshot`` closed the window)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from explorer.core.session import Session  # noqa: E402

from .gui_helpers import open_window  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_no_job_starts_after_the_window_closed(qtbot, tmp_path):
    ran = threading.Event()
    with open_window(qtbot, tmp_path, Session.open("digits-mlp")) as w:
        w.close()
        job = w.runner.run("late", lambda p, c: ran.set(), on_done=lambda _: ran.set(), on_cancel=ran.set)
        qtbot.wait(200)
        assert not w.runner.busy and not w.runner.queue
        assert job.token.cancelled
        assert not ran.is_set()      # neither the function nor a handler ran


def test_close_waits_for_the_workers_last_signal(qtbot, tmp_path):
    """A job that notices the cancel only after a while, and sends progress meanwhile: close() returns once the
    worker has finished (not only its function), and the runner is left with nothing running."""
    with open_window(qtbot, tmp_path, Session.open("digits-mlp")) as w:
        started = threading.Event()

        def slow(progress, cancel):
            started.set()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.4:          # deaf to the cancel for 0.4 s, still reporting
                from explorer.core.jobs import Progress
                progress(Progress(None, "busy"))
                time.sleep(0.02)
            cancel.check()

        cancelled = []
        w.runner.run("slow", slow, on_cancel=lambda: cancelled.append(True))
        qtbot.waitUntil(started.is_set, timeout=5000)
        token = w.runner.current.token
        w.close()
        assert token.cancelled
        assert not w.runner.working
        assert w.runner.wait(0)                  # the worker's run (its last signal included) is over
        qtbot.waitUntil(lambda: not w.runner.busy, timeout=5000)
        assert cancelled == [True]               # the cancelled job's handler still ran, on the GUI thread


SCRIPT = textwrap.dedent("""
    import os, sys, time
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtCore import QTimer
    from explorer.core.jobs import Progress
    from explorer.core.session import Session
    from explorer.gui.window.app import make_app
    from explorer.gui.window.main_window import MainWindow

    def slow(progress, cancel):          # an Evaluate on a slow model: progress for a while
        for _ in range(20):
            time.sleep(0.02)
            progress(Progress(None, "evaluating"))
        return None

    app = make_app()
    win = MainWindow(Session.open("digits-mlp"))
    win.show()
    app.processEvents()
    # what a lesson's auto-measure timer did while the screenshot path closed the window: start a job
    QTimer.singleShot(0, lambda: win.runner.run("Evaluating", slow))
    win.runner.run("Evaluating", slow)   # and one already running when it closes
    time.sleep(0.05)
    win.close_now()
    app.processEvents()
    time.sleep(0.1)
    print("closed", win.runner.busy, flush=True)
""")


def test_closing_during_a_job_exits_without_a_traceback():
    env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen")
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "closed" in r.stdout
    assert "Signal source has been deleted" not in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
