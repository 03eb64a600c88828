"""The session's parts and their narrow events (issue 20): a view subscribes to the event of what it shows, so a
slider drag does not wake the History view; and a scan on a snapshot gives the result of its snapshot while the
session changes."""
from __future__ import annotations

from explorer.core.session import Session


def test_parts_fire_narrow_events_and_the_session_forwards_them():
    s = Session.open("digits-mlp")
    seen = {"plan": [], "undo": 0, "history": 0, "session_history": 0, "forwarded": []}
    s.editor.changed.connect(lambda names: seen["plan"].append(names))
    s.editor.undo_changed.connect(lambda: seen.__setitem__("undo", seen["undo"] + 1))
    s.results.history_changed.connect(lambda: seen.__setitem__("history", seen["history"] + 1))
    s.history_changed.connect(lambda: seen.__setitem__("session_history", seen["session_history"] + 1))
    s.plan_changed.connect(lambda names: seen["forwarded"].append(names))
    for v in (0.1, 0.2, 0.3):                       # a slider drag: plan edits only
        s.set_layer("fc1", v, coalesce="drag")
    assert seen["plan"] == [["fc1"]] * 3 == seen["forwarded"]
    assert seen["undo"] == 3 and seen["history"] == 0     # the History's entries did not change
    s.results.record("by hand", accuracy=50.0)
    assert seen["history"] == 1
    assert seen["session_history"] == seen["undo"] + seen["history"]   # the broad event is their sum
    s.editor.mark_saved()
    assert seen["history"] == 1 and seen["session_history"] == seen["undo"] + 2


def test_a_scan_on_a_snapshot_is_the_scan_of_that_snapshot_while_the_session_changes():
    from explorer.core.analyse.sensitivity import ScanSpec, scan

    from .test_one_engine import run_while_churning

    quiet = Session.open("digits-mlp")
    quiet.set_uniform(quiet.layer_names, 0.3)
    expect = scan(quiet.snapshot(), ScanSpec([0.5, 0.8]), state=quiet.snapshot().masked_state())
    busy = Session.open("digits-mlp")
    busy.set_uniform(busy.layer_names, 0.3)
    snap = busy.snapshot()
    got = run_while_churning(lambda: scan(snap, ScanSpec([0.5, 0.8]), state=snap.masked_state()), busy)
    assert [(l["name"], l["accuracy"]) for l in got.layers] == [(l["name"], l["accuracy"]) for l in expect.layers]
