"""Latency tab ▸ Speed map and the layer table's Break-even column (issue 22); File ▸ Export ▸ Sparse runtime."""
from __future__ import annotations

import pytest
import torch

from explorer.core.session import Session
from tests.gui_helpers import open_window, wait_jobs


@pytest.fixture
def win(qtbot, tmp_path):
    with open_window(qtbot, tmp_path, Session.open("digits-mlp")) as w:
        w.finish_start()
        yield w


def test_speed_map_fills_plot_and_break_even_column(win, qtbot, monkeypatch):
    from explorer.gui.plots import speed_map_view

    monkeypatch.setattr(speed_map_view, "SPEED_RUNS", 1)
    s = win.session
    s.set_layer("fc1", sparsity=0.9)
    s.select("fc1")
    col = win.table.column_index("Break-even")
    assert win.table.item(0, col).text() == "—"
    view = win.latency_panel.speed_map
    assert "not measured" in view.title.text()
    assert view.measure(all_layers=True)
    wait_jobs(qtbot, win)
    for r in range(3):
        text = win.table.item(r, col).text()
        assert text.startswith("sparse wins above ") or text == "dense wins to 99 %", text
    x, y = view.curves["csr"].getData()
    assert list(x) == pytest.approx([50, 60, 70, 80, 90, 95, 98, 99]) and len(y) == 8
    assert len(view.curves["channel"].getData()[0]) == 8
    assert len(view.curves["2:4"].getData()[0] or []) == 0       # no GPU kernel measured on a CPU
    assert view.now.value() == pytest.approx(90.0)
    assert "fc1 (batch 1)" in view.title.text() and "90.0% sparsity" in view.note.text()
    got = win.ctx.speed_results.get("fc1")
    assert got is not None and [k.kernel for k in got.kernels] == ["csr", "channel"]
    win.load_model("digits-cnn")       # another model: its layers are not measured
    qtbot.waitUntil(lambda: win.session.model_spec == "digits-cnn", timeout=60_000)
    wait_jobs(qtbot, win)
    assert win.ctx.speed_results.get("fc1") is None
    assert {win.table.item(r, col).text() for r in range(win.table.rowCount())} == {"—"}


def test_export_sparse_runtime_from_the_window(win, qtbot, tmp_path):
    s = win.session
    s.set_uniform(s.layer_names, 0.95, "element", "l1")
    path = tmp_path / "rt.ts"
    win.exports.sparse_runtime(str(path))
    wait_jobs(qtbot, win)
    assert path.is_file()
    m = s.model_copy(s.masked_state(s.plan))
    x = s.dataset.example_input(4)
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), m(x), rtol=1e-5, atol=1e-5)


def test_hidden_speed_map_redraws_when_shown_not_on_every_plan_change(win, qtbot):
    """Issue 24 (GUI stall): a slider drag changes the plan many times a second; the speed map page, while
    hidden, only marks itself stale and redraws when it is shown."""
    view = win.latency_panel.speed_map
    s = win.session
    s.select("fc1")
    assert not view.isVisible()
    calls = []
    original = view.redraw
    view.redraw = lambda: (calls.append(1), original())
    s.set_layer("fc1", sparsity=0.7)
    s.set_layer("fc1", sparsity=0.8)
    assert calls == []
    win.tabs.setCurrentWidget(win.latency_panel)
    win.latency_panel.parts.setCurrentWidget(view)
    qtbot.waitUntil(view.isVisible, timeout=5000)
    assert calls == [1] and view.now.value() == pytest.approx(80.0)
    s.set_layer("fc1", sparsity=0.9)                 # shown: it follows at once
    assert calls == [1, 1] and view.now.value() == pytest.approx(90.0)
