"""Issue 20, "redraw what changed": the window asks the session once per layer and redraw whether a ranking is
cached, the History tab updates only the rows that changed (and nothing while hidden), the layer table checks
each granularity/criterion choice of a row once, and a drag's plan events reach the table coalesced."""
from __future__ import annotations

import sys
from collections import Counter

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from explorer.core.prune.criteria import CRITERIA  # noqa: E402
from explorer.core.session import Session  # noqa: E402
from explorer.gui.panels.layer_table import GRANULARITY_CHOICES  # noqa: E402

from .gui_helpers import open_window, wait_jobs  # noqa: E402

LAYER = "backbone.conv1"


@pytest.fixture
def win(qtbot, tmp_path):
    with open_window(qtbot, tmp_path, Session.open("digits-cnn")) as w:
        wait_jobs(qtbot, w)
        yield w


def spy(monkeypatch, obj, names, counts: Counter, tag: str = ""):
    """Count calls of ``obj``'s methods ``names`` (made through Python) into ``counts``."""
    for n in names:
        real = getattr(obj, n)

        def wrapper(*a, _real=real, _key=tag + n, **kw):
            counts[_key] += 1
            return _real(*a, **kw)
        monkeypatch.setattr(obj, n, wrapper)


def drag(qtbot, win, ticks: int, start: float = 10.0) -> None:
    """``ticks`` slider steps on one row, with the event loop running between them (as a mouse drag)."""
    slider = win.table.editor(LAYER)[0]
    for i in range(ticks):
        slider.setValue(start + (i % 40) + 0.5)
        qtbot.wait(1)
    qtbot.wait(60)      # the last throttled redraw


def test_history_tab_redraws_only_what_changed(win, qtbot, monkeypatch):
    s, hp = win.session, win.history_panel
    for i in range(5):
        s.set_layer("classifier", sparsity=0.1 * (i + 1))
        s.results.record(f"state {i}", accuracy=90.0 + i, plan=s.plan)
    events = Counter()
    s.history_changed.connect(lambda: events.update(["history_changed"]))
    calls = Counter()
    spy(monkeypatch, hp.table, ["setItem", "insertRow", "setRowCount", "resizeColumnsToContents"], calls)
    spy(monkeypatch, hp.scatter, ["setData"], calls, "scatter.")
    assert not hp.isVisible()

    drag(qtbot, win, 50)                          # History hidden: nothing drawn, however many events
    assert events["history_changed"] >= 50
    assert sum(calls.values()) == 0, calls

    win.tabs.setCurrentWidget(hp)                 # shown: it catches up once (after its first paint)
    rows = len(s.history)
    qtbot.waitUntil(lambda: hp.table.rowCount() == rows, timeout=2000)
    assert hp.table.rowCount() == rows and hp.table.item(rows - 1, 1).text() == "state 4"
    assert calls["setItem"] == 6 * rows and calls["scatter.setData"] == 1

    calls.clear()
    events.clear()
    drag(qtbot, win, 50, start=50.0)              # shown, and the entries do not change: nothing redrawn
    assert events["history_changed"] >= 50
    assert sum(calls.values()) == 0, calls

    s.set_layer("classifier", sparsity=0.9)       # a new evaluated state: one row appended
    s.results.record("state new", accuracy=80.0, plan=s.plan)
    assert hp.table.rowCount() == rows + 1 and hp.table.item(rows, 1).text() == "state new"
    assert calls["insertRow"] == 1 and calls["setItem"] == 6 and calls["setRowCount"] == 0
    assert calls["scatter.setData"] == 1

    calls.clear()                                 # an entry measured again: its row is rewritten, no other
    s.results.record("state new", accuracy=81.5, plan=s.plan)
    assert hp.table.item(rows, 4).text() == "81.50%"
    assert calls["insertRow"] == 0 and calls["setItem"] == 6 and calls["scatter.setData"] == 1

    calls.clear()                                 # another model: a new History, the table starts over
    win.load_model("digits-mlp")
    wait_jobs(qtbot, win)
    assert win.session.model_name == "digits-mlp"
    assert hp.table.rowCount() == len(s.history) < rows
    assert calls["setRowCount"] >= 1


def test_one_cache_check_per_layer_per_redraw(win, qtbot, monkeypatch):
    s = win.session
    s.set_uniform(s.layer_names, 0.5)
    s.select(LAYER)              # (choosing a layer asks once for it: not a redraw)
    qtbot.wait(60)
    asked = Counter()
    real = s.masks.needs_build

    def needs_build(name, lp):
        asked[name] += 1
        return real(name, lp)
    monkeypatch.setattr(s.masks, "needs_build", needs_build)

    win.redraw_all(now=True)                      # every row, the weight view, the dashboard
    assert asked == Counter({n: 1 for n in s.layer_names}), asked
    asked.clear()
    drag(qtbot, win, 5)                           # a drag: one row changes; each redraw still asks once a layer
    redraws = max(asked.values())
    assert redraws >= 1 and set(asked.values()) == {redraws} and set(asked) == set(s.layer_names), asked
    assert win.table.item(1, 8).text() != "…" and "Indexing" not in win.weight_view.title.text()


def test_layer_table_checks_each_choice_of_a_row_once(win, qtbot, monkeypatch):
    s, table = win.session, win.table
    checks = Counter()
    real = s.check_layer_plan

    def check_layer_plan(name, lp):
        if sys._getframe(1).f_locals.get("self") is table:     # asked by the table (not by the session's edits)
            checks[(name, lp.granularity.name, lp.criterion.name)] += 1
        return real(name, lp)
    monkeypatch.setattr(s, "check_layer_plan", check_layer_plan)
    entries = len(GRANULARITY_CHOICES) + len(CRITERIA)

    s.set_layer(LAYER, criterion="l2")
    qtbot.wait(60)
    # the granularities with l2, the criteria with the row's granularity: their common entry is asked once
    assert 0 < sum(checks.values()) <= entries - 1 and max(checks.values()) == 1, checks
    checks.clear()
    s.set_layer(LAYER, criterion="l1")            # back: every answer is known
    qtbot.wait(60)
    drag(qtbot, win, 20)                          # sparsity edits change no choice
    assert sum(checks.values()) == 0, checks
    assert s.plan.get(LAYER).criterion == "l1"

    table.rebuild()                               # a new model's rows: asked again, once per choice
    assert max(checks.values()) == 1 and sum(checks.values()) <= len(s.layer_names) * (entries - 1), checks


def test_plan_events_reach_the_table_coalesced(win, qtbot, monkeypatch):
    s = win.session
    calls = Counter()
    spy(monkeypatch, win.table, ["refresh"], calls)
    for i in range(50):                           # 50 plan events before the event loop runs
        s.set_layer(LAYER, sparsity=0.01 * (i + 1), coalesce=("test", LAYER))
    qtbot.wait(80)
    assert 1 <= calls["refresh"] <= 2, calls
    assert win.table.editor(LAYER)[0].sparsity() == pytest.approx(0.5)
