"""Start the window: ``pruning-explorer gui`` (and ``--screenshot`` for docs and tests)."""
from __future__ import annotations

import os
import sys

from explorer import RESOURCES


def make_app(plots: bool = True):
    """The QApplication with the app's style; ``plots=False`` leaves pyqtgraph for later (it is imported and
    configured when the first plot is built: the window's first frame does not need it)."""
    from PySide6.QtWidgets import QApplication

    if plots:
        from ..plots.plots import pyqtgraph
        pyqtgraph()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Pruning Explorer")
    app.setOrganizationName("PruningExplorer")
    qss = RESOURCES / "style.qss"
    if qss.exists():
        app.setStyleSheet(qss.read_text())
    return app


def wait_idle(app, window, timeout_s: float = 600.0) -> None:
    """Process events until the window's job queue is empty."""
    import time

    t0 = time.monotonic()
    while (window.runner.busy or window.runner.queue) and time.monotonic() - t0 < timeout_s:
        app.processEvents()
        time.sleep(0.01)
    for _ in range(5):
        app.processEvents()
        time.sleep(0.02)


def parse_size(text: str) -> tuple[int, int]:
    """'1440x900' -> (1440, 900); anything else (or outside 320x240..8192x8192) is a clear error."""
    from explorer.core.errors import ExplorerError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ExplorerError(f"--size {text} is not WIDTHxHEIGHT in pixels, e.g. 1440x900.") from None
    if not (320 <= w <= 8192 and 240 <= h <= 8192):
        raise ExplorerError(f"--size {text} is outside 320x240 to 8192x8192 pixels.")
    return w, h


def open_lesson(win, args) -> None:
    """``--lesson NAME [--step N]``: a wrong name or step is a clear CLI error before the window shows."""
    from explorer.core.errors import ExplorerError
    from explorer.core.lessons.lesson import load_lesson

    def refuse(e):
        win.close_now()
        raise e

    if not getattr(args, "lesson", None):
        refuse(ExplorerError("--step needs --lesson NAME.", "For example: gui --lesson magnitude --step 2"))
    try:
        lesson = load_lesson(args.lesson)
    except ExplorerError as e:
        refuse(e)
    n = len(lesson.steps)
    step = 1 if args.step is None else args.step
    if not 1 <= step <= n:
        refuse(ExplorerError(f"--step {step} is outside 1-{n}: lesson '{lesson.name}' has {n} steps."))
    win.classroom.open(str(lesson.path), step - 1)


def run_gui(args) -> int:
    screenshot = getattr(args, "screenshot", None)
    if screenshot and not os.environ.get("QT_QPA_PLATFORM") and not os.environ.get("DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    if not screenshot:
        from .platform_check import check_platform
        check_platform()
    from PySide6.QtCore import QSize

    from explorer.core.model.loading import parse_input_shape, resolve
    from explorer.core.session import Session

    from . import screen_fit
    from .main_window import MainWindow

    size = parse_size(args.size) if args.size else None
    if screenshot:   # a folder, or a path below a file, is a clear error before anything opens
        from explorer.core.fileio import out_path
        screenshot = out_path(screenshot, "screenshot")
    app = make_app(plots=False)
    # load before showing: a bad --model on the command line is a clear CLI error, not an empty window. The
    # channel-group analysis, the plots, the panels and the first ranking come after the first frame
    # (MainWindow(deferred=True), see startup.py)
    session = Session()
    session.apply_load(resolve(args.model, args.dataset, weights=args.weights, arch=args.arch, trust=args.trust,
                               input_shape=parse_input_shape(args.input_shape), defer_groups=True))
    win = MainWindow(session, deferred=True)
    if getattr(args, "presentation", False):
        win.classroom.presentation.set_on(True)
    if getattr(args, "lesson", None) or getattr(args, "step", None) is not None:
        open_lesson(win, args)
    if getattr(args, "recipe", None):
        win.open_recipe(args.recipe)
    if getattr(args, "layer", None):
        session.select(args.layer)
    if getattr(args, "sparsity", None) is not None:
        name = session.selected
        session.set_layer(name, sparsity=args.sparsity, granularity=getattr(args, "granularity", None))
    if getattr(args, "tab", None):
        names = [win.tabs.tabText(i).lower() for i in range(win.tabs.count())]
        match = [i for i, n in enumerate(names) if n.startswith(args.tab.lower())]
        if not match:
            win.close_now()
            from explorer.core.errors import ExplorerError
            raise ExplorerError(f"There is no tab '{args.tab}'.", f"Use one of: {', '.join(names)}.")
        win.tabs.setCurrentIndex(match[0])
    # within the screen's available area, at the size the user last gave it; --size and --screenshot are exact
    exact = QSize(*size) if size else QSize(screen_fit.DEFAULT) if screenshot else None
    win.screen_fit = screen_fit.ScreenFit(win, win.settings, exact=exact)
    win.screen_fit.place()
    win.show()
    if getattr(args, "detail", False):
        win.weight_view.detail_btn.setChecked(True)
    if screenshot:
        app.processEvents()
        win.finish_start()
        wait_idle(app, win)
        win.split_views()
        win.redraw_all(now=True)
        wait_idle(app, win)
        app.processEvents()
        pix = win.grab()
        saved = pix.save(str(screenshot))
        # close the window on both paths: one left open when Python exits is torn down in no fixed order and
        # crashed (a segfault after the error, 6 runs in 10)
        win.close_now()
        app.processEvents()
        if not saved:
            print(f"error: could not write {screenshot} (a folder that is not writable, a full disk, or a file "
                  "type that is not an image: use .png or .jpg)", file=sys.stderr)
            return 2
        print(f"saved {screenshot}", file=sys.stderr)
        return 0
    return app.exec()
