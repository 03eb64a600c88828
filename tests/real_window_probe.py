"""Run by test_gui_real_screen.py in a subprocess on an X display: opens the window the way ``pruning-explorer gui``
does, once per set of arguments (one JSON list per line of argv[1]), and prints one JSON line per window: its frame,
the screen's available area, and where the lesson bar's Next button and the dashboard are on the screen."""
from __future__ import annotations

import json
import sys
import time

from PySide6.QtCore import QPoint, QRect, QTimer
from PySide6.QtWidgets import QApplication

from explorer.cli.parser import build_parser
from explorer.gui.window.app import make_app, run_gui, wait_idle


def _rect(r: QRect) -> list[int]:
    return [r.x(), r.y(), r.width(), r.height()]


def _shown(w) -> dict | None:
    """Where a widget is on the screen, and whether all of it is visible (not cut by a parent or scrolled away)."""
    if w is None or not w.isVisible():
        return None
    return {"rect": _rect(QRect(w.mapToGlobal(QPoint(0, 0)), w.size())),
            "whole": w.visibleRegion().boundingRect() == w.rect()}


def _report(app, win) -> None:
    # the window manager frames the window, then ScreenFit fits it to the real frame (timers up to 600 ms)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.5:
        app.processEvents()
        time.sleep(0.05)
    wait_idle(app, win, 120)
    panel = win.classroom.panel
    out = {"frame": _rect(win.frameGeometry()), "available": _rect(win.screen().availableGeometry()),
           "next": _shown(panel.next_btn) if panel.lesson is not None else None,
           "dashboard": _shown(win.dashboard), "page": _shown(win.tabs.currentWidget()),
           "tab": win.tabs.tabText(win.tabs.currentIndex())}
    print(json.dumps(out), flush=True)
    win._force_close = True
    win.close()
    app.quit()


def main() -> None:
    app = make_app(plots=False)
    for line in sys.argv[1].splitlines():
        def poll():
            win = next((w for w in QApplication.topLevelWidgets()
                        if type(w).__name__ == "MainWindow" and w.isVisible()), None)
            if win is None:
                QTimer.singleShot(100, poll)
            else:
                _report(app, win)
        QTimer.singleShot(0, poll)
        run_gui(build_parser().parse_args(["gui", *json.loads(line)]))


if __name__ == "__main__":
    main()
