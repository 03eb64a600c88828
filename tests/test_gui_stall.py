"""Issue 24, "no GUI-thread stall over 30 ms while a job runs": what the window no longer does on the GUI thread.
A hidden tab does no drawing work (it draws once, when shown); a slider tick keeps the plots' axes (pyqtgraph
regenerates an axis's tick text whenever its label or ticks are set, even to the same value); the end of a
fine-tune leaves the redraws of the views to later event-loop turns. Timings live in benchmarks/bench_gui_stall.py."""
from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QApplication  # noqa: E402

from explorer.core.session import Session  # noqa: E402

from .gui_helpers import open_window, wait_jobs  # noqa: E402


@pytest.fixture
def win(qtbot, tmp_path):
    with open_window(qtbot, tmp_path, Session.open("digits-cnn")) as w:
        wait_jobs(qtbot, w)
        yield w


def test_hidden_finetune_charts_draw_when_shown(win, qtbot):
    s, p = win.session, win.finetune_panel
    s.set_uniform(s.layer_names, 0.8)
    p.epochs.setValue(2)
    win.tabs.setCurrentWidget(win.weight_view)
    p.start()
    wait_jobs(qtbot, win, 180_000)
    assert len(p.history) == 2                                 # the records arrived ...
    assert p.run_chart.current.epochs == 2
    assert len(p.acc_curve.getData()[0] or []) == 0            # ... but nothing was drawn while hidden
    assert p.run_chart.redraw.stale and p.loss_chart.redraw.stale and p.schedule_chart.redraw.stale
    win.tabs.setCurrentWidget(p)        # its first paint shows the old picture; the catch-up comes after it
    qtbot.waitUntil(lambda: not (p.run_chart.redraw.stale or p.loss_chart.redraw.stale
                                 or p.schedule_chart.redraw.stale), timeout=2000)
    xs, ys = p.acc_curve.getData()
    assert list(xs) == [x for x, _ in p.run_chart.current.acc] and len(xs) >= 2
    assert list(p.loss_chart.curve.getData()[1]) == [loss for _, loss in p.run_chart.current.loss]
    assert [len(c.getData()[0]) for c in p.schedule_chart.curves.values()] == [1]    # the finished run's point
    assert not p.run_chart.redraw.stale


def test_hidden_compress_tab_redraws_when_shown(win, qtbot):
    p = win.compress_panel
    win.tabs.setCurrentWidget(win.weight_view)
    calls = []
    real = p._result_when_shown.draw
    p._result_when_shown.draw = lambda: (calls.append(1), real())
    win.session.set_uniform(win.session.layer_names, 0.5)
    win.session.apply()                       # the kept weights change: weight_state.changed
    QApplication.processEvents()
    assert calls == [] and p._result_when_shown.stale
    win.tabs.setCurrentWidget(p)
    assert calls == []                        # the tab's first paint comes first ...
    qtbot.waitUntil(lambda: calls == [1], timeout=2000)     # ... then the catch-up
    assert not p._result_when_shown.stale
    win.session.apply()
    QApplication.processEvents()
    assert len(calls) >= 1                    # shown: at once


def test_slider_ticks_keep_the_axes_pictures(win, qtbot):
    """After the first paint, dragging the selected layer's slider redraws the heatmap, histogram and bars
    without throwing away the axes' cached pictures (their ranges, labels and ticks stay the same)."""
    s, wv = win.session, win.weight_view
    name = s.layer_names[1]
    s.select(name)
    s.set_layer(name, sparsity=0.3)
    win.redraw_all(now=True)
    qtbot.wait(50)
    axes = {"heat bottom": wv.heat.getAxis("bottom"), "heat left": wv.heat.getAxis("left"),
            "hist bottom": wv.hist.getAxis("bottom"), "hist left": wv.hist.getAxis("left"),
            "bars bottom": win.global_panel.bars.getAxis("bottom")}
    before = {k: ax.picture for k, ax in axes.items()}
    assert all(p is not None for p in before.values()), before      # painted once
    drawn = wv.kept_curve.getData()[1].copy()
    for i in range(5):
        s.set_layer(name, sparsity=0.4 + 0.1 * i)
        win.redraw_all(now=True)
        qtbot.wait(20)
    assert (wv.kept_curve.getData()[1] != drawn).any()             # the histogram did change
    assert {k: ax.picture for k, ax in axes.items()} == before      # the same QPicture objects: not regenerated


def test_progress_bar_does_not_paint_synchronously(win, qtbot, monkeypatch):
    """A job's progress changes the status bar's percentage without painting the window there and then (a
    QProgressBar repaints at once on a new percentage, and that synchronous paint took the plots' along)."""
    from PySide6.QtCore import QEvent, QObject

    from explorer.core.jobs import Progress
    from explorer.gui.window.jobs import Job

    bar = win.job_bar.progress
    bar.show()
    painted = []

    class Count(QObject):
        def eventFilter(self, obj, e):       # noqa: N802
            if e.type() == QEvent.Paint:
                painted.append(1)
            return False
    counter = Count()
    bar.installEventFilter(counter)
    qtbot.wait(50)
    during = []
    real = bar.setValue

    def set_value(v):
        n = len(painted)
        real(v)
        during.append(len(painted) - n)
    monkeypatch.setattr(bar, "setValue", set_value)
    job = Job("test", lambda p, c: None)
    for f in (0.25, 0.5, 0.75):
        win.runner.job_progress.emit(job, Progress(f, "working"))
        qtbot.waitUntil(lambda f=f: bar.value() == int(f * 1000), timeout=2000)
    assert during and sum(during) == 0, during          # no paint inside setValue
    qtbot.waitUntil(lambda: len(painted) > 0, timeout=2000)    # painted later, with the window
    bar.removeEventFilter(counter)


def test_a_whole_redraw_is_spread_over_event_loop_turns(win, qtbot, monkeypatch):
    """New kept weights (what a job's end brings) make every ranking stale: the throttled redraw builds them a few
    per event-loop turn (here one: no time budget) and draws the weight view in a turn after the rows."""
    import time

    import explorer.gui.window.main_window as mw
    monkeypatch.setattr(mw, "BUILD_BUDGET_S", 0.0)
    s = win.session
    s.set_uniform(s.layer_names, 0.5)
    win.redraw_all(now=True)
    qtbot.wait(50)
    old_view = win.weight_view.view
    s.results.adopt({k: v * 1.5 for k, v in s.module.state_dict().items()}, s.plan, "scaled")   # as a fine-tune's end
    first = len(s.masks.uncached(s.plan))
    assert first >= 3
    counts, views = [], []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5 and (not counts or counts[-1] or win.weight_view.view is old_view):
        QApplication.processEvents()
        counts.append(len(s.masks.uncached(s.plan)))
        views.append(win.weight_view.view is not old_view)
        time.sleep(0.003)
    assert counts[-1] == 0 and views[-1]
    steps = [a - b for a, b in zip([first] + counts, counts)]
    assert max(steps) == 1, counts                       # one ranking per turn
    assert views.index(True) > counts.index(0), (counts, views)   # the weight view after the last ranking's turn


def test_hidden_sensitivity_tab_draws_scan_points_when_shown(win, qtbot, monkeypatch):
    """A scan's points that arrive while another tab is current wait; the curves appear when the tab is shown."""
    import time

    import explorer.gui.panels.sensitivity_panel as sp
    from explorer.core.analyse.sensitivity import ScanPoint
    from explorer.core.jobs import Progress

    def fake_scan(snap, spec, progress, cancel, **kw):      # three points, then runs until cancelled
        for i, layer in enumerate(snap.layer_names[:3]):
            pt = ScanPoint(layer, 0, spec.sparsities[0], 90.0 - i, loss=0.3, dense_loss=0.1)
            progress(Progress(None, "point", pt))
        while True:
            cancel.check()
            time.sleep(0.01)
    monkeypatch.setattr(sp, "scan", fake_scan)
    monkeypatch.setattr(sp, "AUTO_PREDICT_MACS", 0)      # no prediction first
    p = win.sensitivity_panel
    p.sparsities.setText("0.5,0.8")
    win.tabs.setCurrentWidget(win.weight_view)
    p.start_scan()
    qtbot.waitUntil(lambda: len(p._points) == 3, timeout=20_000)
    assert p._curves == {} and not p.prediction.measured_curves       # nothing drawn while hidden
    win.tabs.setCurrentWidget(p)
    qtbot.waitUntil(lambda: len(p._curves) == 3, timeout=2000)
    assert p._points == []
    assert list(p._curves[win.session.layer_names[0]].getData()[1]) == [90.0]
    win.runner.cancel()
    wait_jobs(qtbot, win)


def test_a_scan_finished_while_hidden_draws_its_curves_when_shown(win, qtbot):
    p = win.sensitivity_panel
    p.sparsities.setText("0.5,0.8")
    win.tabs.setCurrentWidget(win.weight_view)
    p.start_scan()
    wait_jobs(qtbot, win)
    assert p.result is not None and p.heat.rowCount() == len(win.session.layer_names)   # the table: at once
    assert p._curves == {}                                                              # the plot: not yet
    win.tabs.setCurrentWidget(p)
    qtbot.waitUntil(lambda: set(p._curves) == set(win.session.layer_names), timeout=2000)
    first = p.result.layers[0]
    assert list(p._curves[first["name"]].getData()[1]) == [a for a in first["accuracy"] if a is not None]


def test_long_lived_objects_are_frozen_after_the_start_and_a_new_model_frees_the_old(qtbot, tmp_path):
    """A full collection (run in the GUI thread while a job runs) scanned ~460,000 start-up objects: 220-330 ms.
    After the deferred start they are frozen; opening another model collects the frozen objects' cycles once."""
    import gc
    import weakref

    from explorer.gui.window import gc_guard

    class Node:
        pass
    try:
        with open_window(qtbot, tmp_path, Session.open("digits-mlp")) as w:
            a, b = Node(), Node()
            a.other, b.other = b, a               # a cycle that only the collector can free
            alive = weakref.ref(a)
            del a, b
            gc_guard.freeze_long_lived()          # (what startup.finish does once the window is filled in)
            assert gc.get_freeze_count() > 0
            gc.collect()
            assert alive() is not None            # frozen: out of the collector's view
            w.load_model("digits-cnn")
            wait_jobs(qtbot, w)
            assert alive() is None                # another model: the frozen cycles were collected once
            assert gc.get_freeze_count() > 0      # ... and what is left frozen again
    finally:
        gc.unfreeze()
