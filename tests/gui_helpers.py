"""What the window tests share: open a real MainWindow on a session, wait for its jobs, close it."""
from __future__ import annotations

from contextlib import contextmanager


def wait_jobs(qtbot, win, timeout=120_000):
    """Until the window's job runner is idle (and its completion handlers ran)."""
    qtbot.waitUntil(lambda: not win.runner.busy and not win.runner.queue, timeout=timeout)
    qtbot.wait(30)


@contextmanager
def open_window(qtbot, tmp_path, session, size=(1440, 900), settings=None):
    """A shown MainWindow on ``session`` with settings in ``tmp_path``; its jobs are cancelled afterwards."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from explorer.gui.window.app import make_app
    from explorer.gui.window.main_window import MainWindow

    app = QApplication.instance()
    if app is None or not app.styleSheet():
        make_app()        # once per process: each call re-applies the style sheet, re-polishing every live widget
    if settings is None:
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    w = MainWindow(session, settings=settings)
    w.ask_before_closing = False
    qtbot.addWidget(w)
    if size is not None:
        w.resize(*size)
    w.show()
    qtbot.waitExposed(w)
    try:
        yield w
    finally:
        w.runner.cancel()
        w.runner.wait(10000)
