"""The Compress tab: bits per layer, the job, what it shows, the dashboard's stage labels, export and cancel."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")


from explorer.core.formats.dcz import load_dcz  # noqa: E402
from explorer.core.session import Session  # noqa: E402

from .gui_helpers import open_window, wait_jobs  # noqa: E402
from .helpers import assert_bit_identical  # noqa: E402


@pytest.fixture
def win(qtbot, tmp_path):
    with open_window(qtbot, tmp_path, Session.open("digits-mlp")) as w:
        yield w


def test_compress_tab_runs_and_shows_the_stages(win, qtbot, tmp_path):
    s, p = win.session, win.compress_panel
    s.set_uniform(s.layer_names, 0.9)
    win.apply_plan()
    p.linear_bits.setValue(4)
    assert [p.table.cellWidget(i, 2).value() for i in range(3)] == [4, 4, 4]
    p.table.cellWidget(2, 2).setValue(2)                       # per-layer override
    p.linear_idx.setValue(6)
    st = p.settings()
    assert st.bits == {"fc1": 4, "fc2": 4, "fc3": 2} and set(st.index_bits.values()) == {6}
    p.epochs.setValue(1)
    assert win.dashboard.cards["size"].title.text().endswith("pruned")
    win.tabs.setCurrentWidget(p)
    p.start()
    wait_jobs(qtbot, win)
    assert win.last_error is None and p.result is not None
    r = p.result
    assert [x["name"] for x in r.stages] == ["dense", "pruned", "quantized", "huffman"]
    for n, b in st.bits.items():                                # the model now holds the shared weights
        w = s.module.state_dict()[f"{n}.weight"]
        assert len(torch.unique(w[w != 0])) <= 2 ** b
    assert_bit_identical(s.module.state_dict(), r.state)
    h = r.stage("huffman")
    assert "Huffman" in win.dashboard.cards["size"].title.text()
    assert win.dashboard.cards["ratio"].value.text() == f"{h['ratio']:.1f}×"
    assert s.measurements.current.value.accuracy == h["accuracy"]
    assert p.results.rowCount() == 4 and p.waterfall.labels[3].toPlainText().startswith(f"{h['size_bytes'] / 1024:.3g}")
    s.select("fc2")
    x, y = p.histogram.hist.getData()
    assert x is not None and len(x) == 121 and y.sum() == r.quants["fc2"].kept
    assert len(p.histogram.before.getData()[0]) == 2 * len(r.quants["fc2"].initial)
    # export: decoded again and compared before the rename; the file holds the model's weights
    out = tmp_path / "m.dcz"
    p.export_archive(str(out))
    wait_jobs(qtbot, win)
    assert_bit_identical(load_dcz(out), s.module.state_dict())
    # an edit makes the result stale: the cards go back to the pruned stage
    s.set_layer("fc1", sparsity=0.5)
    win.apply_plan()
    qtbot.wait(60)
    assert win.dashboard.cards["size"].title.text().endswith("pruned")
    assert "stale" in p.waterfall.plotItem.titleLabel.text


def test_compress_cancel_leaves_the_model(win, qtbot):
    s, p = win.session, win.compress_panel
    s.set_uniform(s.layer_names, 0.8)
    win.apply_plan()
    before = {k: v.clone() for k, v in s.module.state_dict().items()}
    p.epochs.setValue(200)
    p.start()
    qtbot.waitUntil(lambda: win.runner.busy, timeout=5000)
    qtbot.wait(300)
    win.runner.cancel()
    wait_jobs(qtbot, win)
    assert p.result is None and "cancelled" in p.status.text()
    assert_bit_identical(s.module.state_dict(), before)
    assert np.isfinite(float(s.module.state_dict()["fc1.weight"].sum()))
