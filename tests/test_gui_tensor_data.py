"""The window on your own data: the dataset box offers tensors:…, a regression model is evaluated by its mean
squared error, the dashboard and History name that metric (lower is better), and a lesson's values use it."""
from __future__ import annotations

import numpy as np
import torch

from explorer.core.session import Session
from tests import tensor_models as tm
from tests.gui_helpers import open_window, wait_jobs


def test_window_measures_a_regression_model_on_tensors(qtbot, tmp_path):
    from explorer.core.lessons.values import formatted
    from explorer.gui.actions.model_actions import DATASET_CHOICES

    assert "tensors:…" in DATASET_CHOICES
    x, y, r = tm.tabular(300)
    net = tm.train(tm.RegressionHead(), x[:240], r[:240], steps=150)
    torch.save(net.state_dict(), tmp_path / "reg.pt")
    np.savez(tmp_path / "cls.npz", x=x.numpy(), y=y.numpy())
    np.savez(tmp_path / "reg.npz", x=x.numpy(), y=r.numpy())
    s = Session.open(str(tmp_path / "reg.pt"), f"tensors:{tmp_path / 'reg.npz'}",
                     arch="tests.tensor_models:RegressionHead", trust=True)
    with open_window(qtbot, tmp_path, s) as win:
        wait_jobs(qtbot, win)
        win.set_dataset(f"tensors:{tmp_path / 'cls.npz'}")      # integer labels: the 2-output head cannot score 4
        wait_jobs(qtbot, win)
        assert s.dataset.spec == f"tensors:{tmp_path / 'reg.npz'}" and "outputs 2 classes" in win.last_error[1]
        s.set_uniform(s.layer_names, 0.7)
        win.measure.evaluate()
        wait_jobs(qtbot, win)
        cur = s.measurements.current.value
        assert cur.accuracy is None and cur.mse is not None and s.measurements.dense.mse < cur.mse
        assert s.history and s.history[-1].accuracy == cur.mse                 # History keeps the metric
        win.tabs.setCurrentWidget(win.history_panel)      # the History tab draws itself once it is on show
        qtbot.waitUntil(lambda: "mean squared error" in win.history_panel.plot.getAxis("left").labelText,
                        timeout=2000)
        left = win.history_panel.plot.getAxis("left").labelText
        assert "mean squared error" in left and "lower is better" in left
        assert formatted(s, "accuracy") == f"{cur.mse:.3g}"                     # no percent sign
        assert float(formatted(s, "accuracy_drop")) > 0                        # % more error
