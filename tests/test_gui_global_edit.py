"""Issue 25: a global-scope edit on a big model computes its threshold in a worker job on a snapshot, never on the
GUI thread; a newer edit makes an older result stale (discarded), another model too. Issue 20: the window's views
subscribe to the session's parts (editor, weight state, results) and are redrawn as before."""
from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from explorer.core.prune.scope import global_sparsities  # noqa: E402
from explorer.core.session import Session  # noqa: E402
from explorer.gui.actions import global_edit  # noqa: E402

from .gui_helpers import open_window, wait_jobs  # noqa: E402


@pytest.fixture
def win(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(global_edit, "SYNC_GLOBAL_LIMIT", 0)     # digits-cnn stands in for a big model
    with open_window(qtbot, tmp_path, Session.open("digits-cnn")) as w:
        wait_jobs(qtbot, w)
        yield w


def _expected(s, sparsity, gran="element", crit="l1", cap=0.9):
    return global_sparsities(s, list(s.layer_names), sparsity, gran, crit, cap)


def test_global_edit_runs_as_a_job_and_applies_through_the_session(win, qtbot):
    s, ge = win.session, win.global_edit
    edits = []
    s.editor.changed.connect(edits.append)
    ge.request("all", 0.6, "element", "l1", "global", 0.9)
    # nothing computed on the GUI thread: the plan is unchanged until the job's result comes back
    assert s.plan.active() == {} and ge.running == 1
    assert win.runner.current is not None and win.runner.current.title.startswith("Global threshold")  # busy
    qtbot.waitUntil(lambda: ge.running == 0, timeout=60_000)
    want = _expected(s, 0.6)
    assert {n: s.plan.get(n).sparsity for n in s.layer_names} == pytest.approx(want)
    assert s.plan.scope == "global" and s.plan.target_sparsity == 0.6
    assert len(edits) == 1 and s.editor.can_undo
    s.undo()
    assert s.plan.active() == {}


def test_a_newer_edit_discards_the_stale_result(win, qtbot):
    s, ge = win.session, win.global_edit
    edits = []
    s.editor.changed.connect(edits.append)
    ge.request("all", 0.3, "element", "l1", "global", 0.9)
    ge.request("all", 0.7, "element", "l1", "global", 0.9)
    qtbot.waitUntil(lambda: ge.running == 0, timeout=60_000)
    assert len(edits) == 1                              # only the newest edit reached the plan
    assert s.plan.target_sparsity == 0.7
    assert {n: s.plan.get(n).sparsity for n in s.layer_names} == pytest.approx(_expected(s, 0.7))
    # a local edit after a global request also makes the pending global result stale
    ge.request("all", 0.5, "kernel", "l1", "global", 0.9)
    ge.request("all", 0.2, "element", "l1", "local", 0.9)
    qtbot.waitUntil(lambda: ge.running == 0, timeout=60_000)
    assert {s.plan.get(n).sparsity for n in s.layer_names} == {0.2} and s.plan.scope == "local"


def test_a_hand_edit_meanwhile_wins(win, qtbot):
    s, ge = win.session, win.global_edit
    ge.request("all", 0.6, "element", "l1", "global", 0.9)
    s.set_layer("backbone.conv1", sparsity=0.25)
    qtbot.waitUntil(lambda: ge.running == 0, timeout=60_000)
    assert s.plan.active().keys() == {"backbone.conv1"} and s.plan.get("backbone.conv1").sparsity == 0.25
    assert s.plan.scope == "local"


def test_a_result_for_another_model_is_dropped(win, qtbot):
    s, ge = win.session, win.global_edit
    ge.request("all", 0.6, "element", "l1", "global", 0.9)
    s.load("digits-mlp")
    qtbot.waitUntil(lambda: ge.running == 0, timeout=60_000)
    wait_jobs(qtbot, win)
    assert "mlp" in s.model_spec
    assert s.plan.active() == {}


def test_new_kept_weights_meanwhile_recompute_on_them(win, qtbot):
    s, ge = win.session, win.global_edit
    ge.request("all", 0.6, "element", "l1", "global", 0.9)
    state = {k: v * 2 if k.endswith("conv1.weight") else v for k, v in s.base_state().items()}
    s.set_base(state, "scaled")                          # the views are renewed before the job's result is back
    qtbot.waitUntil(lambda: ge.running == 0, timeout=60_000)
    assert {n: s.plan.get(n).sparsity for n in s.layer_names} == pytest.approx(_expected(s, 0.6))


def test_panels_follow_the_parts_events(win, qtbot):
    """Undo/redo and the 'modified' marker follow editor events; the weight view and table follow plan edits."""
    s = win.session
    assert not win.act_undo.isEnabled()
    s.set_layer("backbone.conv1", sparsity=0.5)
    assert win.act_undo.isEnabled() and not win.act_redo.isEnabled()     # editor.undo_changed, at once
    assert win.windowTitle().endswith("*")
    s.editor.mark_saved()
    assert not win.windowTitle().endswith("*")                           # editor.saved_changed
    s.undo()
    assert win.act_redo.isEnabled()
    s.redo()
    s.apply()
    assert "not applied" not in win.pending_label.text() and not win.act_apply.isEnabled()
