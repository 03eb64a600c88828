"""The window's side of sparsegpt (issue 23): the slider previews it, Apply runs the real sweep in a job and the
session adopts the swept weights, whose zeros are then exactly the plan's masks."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

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
