"""Child process of the start-up and big-model benchmarks (not part of the package): runs one variant and
writes what it saw as one JSON object to the file OUT.

    python benchmarks/_probe.py OUT T0 MODE floor
    python benchmarks/_probe.py OUT T0 MODE app REPO [pruning-explorer arguments...]

T0 is the parent's ``time.time()`` just before it started this process, so every time reported here is
measured from process start (interpreter start-up included). MODE says when to stop:

- ``frame``: at the first frame -- the first paint pass of the main window after ``show()``: an event filter
  sees the window's first ``QEvent.Paint`` and a zero-delay timer fires once Qt has finished that paint pass
  (the window's children included). That moment is ``first_frame_s``.
- ``layer``: when the weight view first shows a layer (``window.weight_view.view`` is set; polled every 10 ms
  after the first frame): ``first_layer_s``.
- ``idle``: after the first layer, once the window's job runner has been idle for 0.5 s (background work
  such as channel-group analysis or indexing is done): ``idle_s``.

Both variants import PySide6.QtWidgets first (to install the probe on ``QMainWindow.show``), so the floor and
the app pay that import alike. ``floor`` is a bare ``QMainWindow`` (1440x900, one label) in a process that has
imported torch: the floor any window of this app stands on. ``app`` runs ``pruning-explorer`` (``explorer.cli
.main``) from REPO, unchanged; the process ends with ``os._exit`` as soon as the probe has its numbers, so peak
RSS (measured by the parent with ``os.wait4``) is the peak up to that moment.
"""
from __future__ import annotations

import json
import os
import sys
import time

OUT, T0, MODE, VARIANT = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEvent, QObject, QTimer  # noqa: E402
from PySide6.QtWidgets import QMainWindow  # noqa: E402

RESULT: dict = {"variant": VARIANT, "mode": MODE}


def _finish() -> None:
    RESULT["modules"] = sorted(m for m in sys.modules if "." not in m)
    with open(OUT, "w") as f:
        json.dump(RESULT, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class _Probe(QObject):
    def __init__(self, win):
        super().__init__(win)
        self.win = win
        self.painted = False
        self.idle_since = None

    def eventFilter(self, obj, event):   # noqa: N802 (Qt's name)
        if not self.painted and event.type() == QEvent.Paint:
            self.painted = True
            QTimer.singleShot(0, self._first_frame)
        return False

    def _first_frame(self) -> None:
        RESULT["first_frame_s"] = time.time() - T0
        if MODE == "frame":
            _finish()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._poll)
        self.timer.start(10)

    def _poll(self) -> None:
        wv = getattr(self.win, "weight_view", None)
        if "first_layer_s" not in RESULT and wv is not None and getattr(wv, "view", None) is not None:
            RESULT["first_layer_s"] = time.time() - T0
            RESULT["first_layer"] = wv.view.layer.name
            if MODE == "layer":
                _finish()
        if "first_layer_s" in RESULT and MODE == "idle":
            runner = getattr(self.win, "runner", None)
            busy = runner is not None and (runner.busy or runner.queue)
            now = time.time()
            if busy:
                self.idle_since = None
            elif self.idle_since is None:
                self.idle_since = now
            elif now - self.idle_since >= 0.5:
                RESULT["idle_s"] = self.idle_since - T0
                _finish()


_show = QMainWindow.show


def _probed_show(self):
    if not hasattr(self, "_probe"):
        self._probe = _Probe(self)
        self.installEventFilter(self._probe)
    return _show(self)


QMainWindow.show = _probed_show

if VARIANT == "floor":
    import torch  # noqa: E402,F401
    from PySide6.QtWidgets import QApplication, QLabel  # noqa: E402

    app = QApplication(sys.argv[:1])
    win = QMainWindow()
    win.setCentralWidget(QLabel("floor"))
    win.resize(1440, 900)
    win.show()
    app.exec()
else:
    repo = sys.argv[5]
    sys.path.insert(0, repo)
    os.chdir(repo)
    from explorer.cli import main  # noqa: E402

    rc = main(sys.argv[6:])
    RESULT["exit"] = rc
    _finish()
