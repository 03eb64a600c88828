"""The Fine-tune tab's charts (issue 15): epoch-0 point, the dip after each pruning step, the sparsity trace with
markers, the dense reference on the validation split, earlier runs kept for comparison, accuracy vs sparsity."""
from __future__ import annotations

import pytest

from explorer.core.session import Session
from explorer.core.train.evaluate import evaluate
from explorer.core.train.finetune import EpochRecord
from explorer.gui.plots.finetune_chart import RunTrace
from tests.gui_helpers import open_window, wait_jobs


def rec(epoch, step, val, sparsity, before, step_sparsity=None, pruned=None, updates=0):
    return EpochRecord(epoch=epoch, step=step, train_loss=0.1, val_accuracy=val, val_loss=0.1, sparsity=sparsity,
                       lr=0.01, seconds=0.1, sparsity_before=before, step_sparsity=step_sparsity,
                       pruned_accuracy=pruned, mask_updates=updates)


def test_iterative_trace_has_a_dip_and_a_marker_at_each_step():
    t = RunTrace("iterative", "iterative", start_sparsity=0.0)
    t.add(rec(1, 1, 97.0, 0.5, 0.0, 0.5, 80.0, 1))
    t.add(rec(2, 1, 98.0, 0.5, 0.5))
    t.add(rec(3, 2, 96.0, 0.8, 0.5, 0.8, 60.0, 1))
    t.add(rec(4, 2, 97.5, 0.8, 0.8))
    assert t.acc == [(0.0, 80.0), (1.0, 97.0), (2.0, 98.0), (2.0, 60.0), (3.0, 96.0), (4.0, 97.5)]
    assert t.markers == [(0.0, 50.0), (2.0, 80.0)]
    # the sparsity jumps at the step (vertical), then stays while training
    assert t.sparsity == [(0.0, 0.0), (0.0, 50.0), (1.0, 50.0), (2.0, 50.0), (2.0, 80.0), (3.0, 80.0), (4.0, 80.0)]


def test_agp_trace_rises_within_epochs():
    t = RunTrace("agp", "agp", start_sparsity=0.0)
    t.add(rec(1, 1, 95.0, 0.6, 0.0, 0.0, 98.0, 5))
    t.add(rec(2, 1, 97.0, 0.8, 0.6, None, None, 1))
    t.add(rec(3, 1, 98.0, 0.8, 0.8))
    assert t.acc[0] == (0.0, 98.0)                        # epoch 0: the start model, before training
    assert t.markers == [(1.0, 60.0), (2.0, 80.0)]          # masks changed during epochs 1 and 2
    assert t.sparsity == [(0.0, 0.0), (1.0, 60.0), (2.0, 80.0), (3.0, 80.0)]


@pytest.fixture
def win(qtbot, tmp_path):
    with open_window(qtbot, tmp_path, Session.open("digits-mlp")) as w:
        yield w


def test_runs_compare_on_one_chart(win, qtbot):
    s, p = win.session, win.finetune_panel
    assert (p.optimizer.currentText(), p.lr.value()) == ("adam", 0.01)      # the small MLP's defaults
    s.set_uniform(s.layer_names, 0.8)
    p.schedule.setCurrentText("iterative")
    p.steps.setValue(2)
    p.epochs.setValue(1)
    win.tabs.setCurrentWidget(p)          # the charts draw while their tab shows (hidden: once shown)
    p.start()
    wait_jobs(qtbot, win)
    chart = p.run_chart
    dense_val = evaluate(s.model_copy(s.original_state()), s.dataset, "val").accuracy
    assert chart.dense_line.isVisible() and chart.dense_line.value() == pytest.approx(dense_val)
    first = chart.current
    xs = [x for x, _ in first.acc]
    assert xs[0] == 0.0 and xs.count(1.0) == 2          # epoch 0, and the dip after step 2 at x = 1
    assert len(first.markers) == 2 and first.markers[-1][1] == pytest.approx(80.0, abs=0.1)
    assert p.acc_curve.getData()[0][0] == 0.0
    assert len(p.schedule_chart.points["iterative"]) == 1
    # a second run (AGP, from the fine-tuned 80 %) keeps the first one dimmed, with a legend
    s.set_uniform(s.layer_names, 0.9)
    p.schedule.setCurrentText("agp")
    p.epochs.setValue(2)
    p.start()
    wait_jobs(qtbot, win)
    assert chart.kept == [first] and chart.current.schedule == "agp"
    labels = [item[1].text for item in chart.legend.items]
    assert any(t.startswith("iterative") for t in labels) and any("(now)" in t for t in labels)
    assert set(p.schedule_chart.points) == {"iterative", "agp"}
    ticks = chart.getPlotItem().getAxis("bottom")._tickSpacing
    assert ticks is not None and ticks[0][0] == 1                 # integer epoch ticks
    p.clear_btn.click()
    assert chart.kept == [] and chart.current is None and p.schedule_chart.points == {}


def test_an_epoch_updates_the_run_in_progress_without_rebuilding_the_chart(qtbot):
    """Issue 24 (GUI stall): a new epoch of the running run sets the data of its two curves (the same items); only
    a new pruning step (a marker) rebuilds the chart. What is drawn equals a full redraw."""
    from explorer.gui.plots.finetune_chart import RunChart

    chart = RunChart()
    qtbot.addWidget(chart)
    chart.show()                          # (a hidden chart only marks itself: test_gui_stall.py)
    chart.start_run(RunTrace("iterative", "iterative"), 98.0)
    chart.add_record(rec(1, 1, 97.0, 0.5, 0.0, 0.5, 80.0, 1))        # a step: rebuilt
    items = list(chart._items)
    curve = chart.current_curve
    chart.add_record(rec(2, 1, 98.0, 0.5, 0.5))                      # an epoch: same items, new point
    assert chart._items == items and chart.current_curve is curve
    assert list(zip(*curve.getData())) == chart.current.acc
    assert chart.getPlotItem().viewRange()[0] == pytest.approx([-0.3, 2.3])
    shown = [list(zip(*it.getData())) for it, _ in chart._items if hasattr(it, "getData")]
    chart._draw()                         # everything rebuilt
    assert [list(zip(*it.getData())) for it, _ in chart._items if hasattr(it, "getData")] == shown
    chart.add_record(rec(3, 2, 96.0, 0.8, 0.5, 0.8, 60.0, 1))        # the next step: rebuilt, with its marker
    assert chart.current_curve is not curve and len(chart.current.markers) == 2
