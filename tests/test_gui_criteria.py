"""The window's side of issue 12: the Criteria tab, Reconstruct on Apply, predicted curves in the Sensitivity tab,
and the layer table's criterion/granularity choices; and of sparsegpt (issue 23): the slider previews it, Apply runs
the real sweep in a job and the session adopts the swept weights, whose zeros are then exactly the plan's masks."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from explorer.core.prune.criteria import CRITERIA  # noqa: E402
from explorer.core.session import Session  # noqa: E402

from .gui_helpers import open_window, wait_jobs  # noqa: E402
from .helpers import bits  # noqa: E402


@pytest.fixture
def win(qtbot, tmp_path):
    s = Session.open("digits-cnn")
    s.set_calibration_samples(32)
    with open_window(qtbot, tmp_path, s) as w:
        yield w


def test_criteria_tab_draws_one_shot_and_finetuned_curves(win, qtbot, tmp_path):
    p = win.compare_panel
    for name, box in p.boxes.items():
        box.setChecked(name in ("l1", "wanda"))
    p.sparsities.setText("0.5,0.9")
    p.epochs.setValue(1)
    win.tabs.setCurrentWidget(p)
    p.start()
    assert win.runner.busy
    wait_jobs(qtbot, win)
    assert win.last_error is None and p.result is not None
    assert set(p._curves) == {("l1", False), ("l1", True), ("wanda", False), ("wanda", True)}
    assert p._curves[("l1", False)].opts["pen"].style() == Qt.DashLine
    assert p._curves[("l1", True)].opts["pen"].style() == Qt.SolidLine
    xs, ys = p._curves[("wanda", False)].getData()
    assert list(xs) == [0.5, 0.9] and list(ys) == p.result.criteria[1]["accuracy"]
    assert p.table.rowCount() == 2 and p.table.columnCount() == 4 and p.table.item(0, 0).text() != "…"
    assert "best one-shot on val" in p.status.text()
    p.save(str(tmp_path / "c.json"))
    assert json.loads((tmp_path / "c.json").read_text())["split"] == "val"
    assert not win.session.plan.active()          # comparing changes nothing


def test_calibration_samples_box_is_the_sessions(win, qtbot):
    p = win.compare_panel
    assert p.samples.value() == 32
    p.samples.setValue(20)
    p._samples_edited()
    assert win.session.calibration_samples == 20


def test_reconstruct_on_apply_keeps_the_mask_and_adopts_the_weights(win, qtbot):
    s = win.session
    s.set_uniform(s.layer_names, 0.8, "element", "l1")
    masks, _ = s.materialize()
    masked = s.masked_state()
    win.reconstruct.box.setChecked(True)
    assert win.reconstruct.action.isChecked()
    win.apply_plan()
    wait_jobs(qtbot, win)
    assert win.last_error is None
    assert s.base_label.startswith("reconstructed") and not s.pending
    state = s.module.state_dict()
    for n, m in masks.items():
        w = state[n]
        assert torch.equal(bits(w[~m]), torch.zeros_like(bits(w[~m]))) and int((w[m] == 0).sum()) == 0
    assert not torch.equal(state["backbone.conv2.weight"], masked["backbone.conv2.weight"])
    assert s.totals().sparsity == pytest.approx(0.8, abs=1e-3)          # the same mask after re-ranking
    assert s.measurements.current is not None and s.measurements.current.value.accuracy > 90   # evaluated after
    # Reset to dense returns to the loaded weights
    win.reconstruct.box.setChecked(False)
    win.reset()
    assert s.base_label == "loaded weights"


def test_reconstruct_cancel_leaves_the_session(win, qtbot):
    s = win.session
    s.set_uniform(s.layer_names, 0.8, "element", "l1")
    win.reconstruct.box.setChecked(True)
    win.apply_plan()
    win.runner.cancel()
    wait_jobs(qtbot, win)
    assert s.base_label == "loaded weights"


def test_sensitivity_scan_draws_predicted_then_measured_loss_curves(win, qtbot):
    p = win.sensitivity_panel
    (_, ymin_max) = p.prediction.plot.getViewBox().viewRange()
    assert ymin_max == pytest.approx([-4, 0])   # empty: decades 10^-4..1, not pyqtgraph's crowded 1..10
    p.sparsities.setText("0.5,0.8")
    win.tabs.setCurrentWidget(p)
    p.start_scan()
    wait_jobs(qtbot, win)
    pred = p.prediction
    names = win.session.layer_names
    assert set(pred.predicted) == set(names) and set(pred.measured_curves) == set(names)
    assert set(pred.errors) == set(names) and "prediction error" in pred.label.text()
    c = pred.predicted["classifier"]          # (getData is in log10 units on the log axis)
    assert list(c.xData) == [0.5, 0.8] and all(y > 0 for y in c.yData)
    # the measurement replaced the prediction: the predicted curve is only a faint dotted line now
    assert pred.predicted["classifier"].opts["pen"].style() == Qt.DotLine
    p.start_prediction()
    wait_jobs(qtbot, win)
    assert set(pred.predicted) == set(names) and pred.prediction is not None
    assert "the loss on 128 of 180 val samples (96 with the highest loss" in pred.label.text()   # its split, said


def test_layer_table_offers_only_fitting_criteria(win, qtbot):
    t = win.table
    name = "backbone.conv1"
    _, gc, cc = t.editor(name)
    items = {cc.itemText(i): cc.model().item(i) for i in range(cc.count())}
    assert not items["bn-scale"].isEnabled() and not items["apoz"].isEnabled() and items["hessian"].isEnabled()
    assert "channel granularity only" in items["bn-scale"].toolTip()
    win.session.set_layer(name, granularity="channel", sparsity=0.5)
    qtbot.wait(60)
    assert items["bn-scale"].isEnabled() and items["apoz"].isEnabled()
    win.session.set_layer(name, criterion="bn-scale")
    qtbot.wait(60)
    grans = {gc.itemText(i): gc.model().item(i) for i in range(gc.count())}
    assert grans["channel"].isEnabled() and not grans["element"].isEnabled()


def test_data_criterion_ranks_in_a_worker(win, qtbot):
    s = win.session
    s.set_layer("backbone.conv2", sparsity=0.7, criterion="hessian")
    qtbot.waitUntil(lambda: not s.needs_build("backbone.conv2"), timeout=60_000)
    wait_jobs(qtbot, win)
    assert win.last_error is None
    assert win.table.item(2, 8).text() != "…"
    assert s.layer_counts("backbone.conv2").sparsity == pytest.approx(0.7, abs=1e-3)


def test_scan_skips_the_prediction_when_the_fisher_would_be_slow(win, qtbot, monkeypatch):
    import explorer.gui.panels.sensitivity_panel as sp

    monkeypatch.setattr(sp, "AUTO_PREDICT_MACS", 0)
    p = win.sensitivity_panel
    p.sparsities.setText("0.5,0.8")
    p.start_scan()
    wait_jobs(qtbot, win)
    assert not p.prediction.predicted and set(p.prediction.measured_curves) == set(win.session.layer_names)
    assert "Predict draws" in p.prediction.label.text()


def test_channel_only_criteria_bring_their_granularity_along(win, qtbot):
    """Picking bn-scale on an element row switches the row to channel (one edit); leaving channel falls back to
    l1; a layer that can't be channel-pruned refuses in the status bar, with no error dialog."""
    s, t = win.session, win.table
    t._criterion_edited("backbone.conv1", "bn-scale")
    lp = s.plan.get("backbone.conv1")
    assert (lp.granularity.name, lp.criterion.name) == ("channel", "bn-scale")
    t._granularity_edited("backbone.conv1", "element")
    lp = s.plan.get("backbone.conv1")
    assert (lp.granularity.name, lp.criterion.name) == ("element", "l1")
    out = [l.name for l in s.layers if l.is_output][0]
    before = s.plan.get(out)
    t._criterion_edited(out, "apoz")
    assert s.plan.get(out) == before and win.last_error is None
    assert "needs channel granularity" in win.job_bar.text.text()


def test_apply_runs_the_sweep_and_adopts_its_weights(win, qtbot):
    s = win.session
    assert "preview" in CRITERIA["sparsegpt"].tooltip
    s.set_uniform(s.layer_names, 0.7, "element", "sparsegpt")
    preview = s.masked_state()
    win.apply_plan()
    assert win.runner.busy                      # the sweep runs in a worker job, not on the GUI thread
    wait_jobs(qtbot, win)
    assert win.last_error is None
    assert s.base_label.startswith("sparsegpt") and not s.pending
    masks, _ = s.materialize()
    state = s.module.state_dict()
    for n, m in masks.items():
        w = state[n]
        assert torch.equal(bits(w[~m]), torch.zeros_like(bits(w[~m]))) and int((w[m] == 0).sum()) == 0
    assert not torch.equal(state["backbone.conv2.weight"], preview["backbone.conv2.weight"])   # updated, not masked
    assert s.totals().sparsity == pytest.approx(0.7, abs=1e-3)
    assert s.measurements.current is not None     # evaluated after, like reconstruction
