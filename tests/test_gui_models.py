"""The window with a language model (perplexity wherever quality shows), the safetensors/ONNX exports of the
Export menu, and the Latency tab's onnxruntime timing."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")
pytest.importorskip("transformers")

from PySide6.QtCore import QSettings  # noqa: E402

from explorer.core.session import Session  # noqa: E402
from tests import tiny_models as tiny  # noqa: E402

from .gui_helpers import open_window  # noqa: E402
from .gui_helpers import wait_jobs as _wait_jobs  # noqa: E402


def wait_jobs(qtbot, win, timeout=300_000):   # a language model's jobs are slower
    _wait_jobs(qtbot, win, timeout)


@pytest.fixture
def lm_win(qtbot, tmp_path):
    folder, text = tiny.gpt2_folder(tmp_path / "gpt2"), tiny.write_text(tmp_path / "t.txt")
    s = Session.open(f"hf:{folder}", f"text:{text}")
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    settings.setValue("latency/onnx", "true")
    settings.setValue("latency/runs", 5)
    with open_window(qtbot, tmp_path, s, settings=settings) as w:
        yield w


def test_language_model_shows_perplexity_everywhere(lm_win, qtbot):
    w, s = lm_win, lm_win.session
    s.set_uniform(s.layer_names, 0.5, "2:4")
    w.measure.evaluate()
    wait_jobs(qtbot, w)
    card = w.dashboard.cards["accuracy"]
    assert card.title.text() == "Perplexity (test)"
    ppl = s.measurements.current.value.perplexity
    assert ppl > 1 and card.value.text() == f"{ppl:.2f}" and "%" not in card.value.text()
    assert s.history[-1].accuracy == pytest.approx(ppl)        # History keeps the dataset's metric
    w.history_panel.update_results()
    assert "perplexity" in w.history_panel.table.horizontalHeaderItem(4).text()
    assert w.history_panel.table.item(len(s.history) - 1, 4).text() == f"{ppl:.2f}"   # after the dense row


def test_export_menu_writes_safetensors_and_a_checked_onnx(lm_win, qtbot, tmp_path):
    pytest.importorskip("onnxruntime")
    from safetensors.torch import load_file

    w, s = lm_win, lm_win.session
    s.set_uniform(s.layer_names, 0.5, "element")
    w.deploy_exports.safetensors(str(tmp_path / "m.safetensors"))
    wait_jobs(qtbot, w)
    w.deploy_exports.onnx(str(tmp_path / "m.onnx"))
    wait_jobs(qtbot, w)
    st = load_file(str(tmp_path / "m.safetensors"))
    ref = s.masked_state()
    assert set(st) == set(ref) and all(torch.equal(st[k], ref[k]) for k in ref)
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_latency_tab_times_onnxruntime_next_to_pytorch(lm_win, qtbot):
    pytest.importorskip("onnxruntime")
    w, s = lm_win, lm_win.session
    s.set_uniform(s.layer_names, 0.5, "element")
    w.measure.measure_latency()
    wait_jobs(qtbot, w)
    L = s.measurements.latency.value
    assert set(L.onnx) == {"dense", "masked"} and all(v.median_ms > 0 and v.runs == 5 for v in L.onnx.values())
    w.latency_panel.update_results()
    names = [w.latency_panel.table.item(r, 0).text() for r in range(w.latency_panel.table.rowCount())]
    assert names[:2] == ["dense", "masked"] and "dense · ORT" in names and "masked · ORT" in names
