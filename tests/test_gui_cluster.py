"""The window's side of issue 13: the device chooser, Export ▸ Fine-tune job for a cluster, File ▸ Import result."""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")


from explorer.cli import main  # noqa: E402
from explorer.core.session import Session  # noqa: E402

from .gui_helpers import open_window, wait_jobs  # noqa: E402


@pytest.fixture
def win(qtbot, tmp_path):
    with open_window(qtbot, tmp_path, Session.open("digits-cnn"), size=None) as w:
        yield w


@pytest.fixture(scope="module")
def result_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster")
    assert main(["prune", "--model", "digits-cnn", "--sparsity", "0.7", "--no-latency", "--out", str(d / "p")]) == 0
    assert main(["finetune", "--recipe", str(d / "p" / "recipe.json"), "--epochs", "1", "--no-latency",
                 "--out", str(d / "ft")]) == 0
    return d / "ft"


def test_device_chooser_sets_the_sessions_device_and_is_remembered(win):
    box = win.device_box
    names = [box.combo.itemData(i) for i in range(box.combo.count())]
    assert names[0] == "auto" and names[-1] == "cpu"
    assert win.session.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    box.combo.setCurrentIndex(names.index("cpu"))
    assert win.session.device == torch.device("cpu") and win.settings.value("device") == "cpu"
    assert "CUDA GPU" in box.combo.toolTip()


def test_export_fine_tune_job_writes_the_recipe_and_a_torchrun_line(win, tmp_path):
    s = win.session
    s.set_uniform(s.layer_names, 0.8)
    files = win.cluster.write(str(tmp_path / "job"), nproc=2, nnodes=1, device="cpu", epochs=5)
    recipe = json.loads(files["recipe"].read_text())
    assert recipe["finetune"]["epochs"] == 5 and recipe["model"] == "digits-cnn"
    assert set(recipe["layers"]) == set(s.layer_names)
    script = files["script"].read_text()
    assert "torchrun --standalone --nproc_per_node=2 --no-python pruning-explorer finetune --recipe recipe.json " \
           "--out result --device cpu" in script
    assert os.stat(files["script"]).st_mode & stat.S_IXUSR
    multi = win.cluster.write(str(tmp_path / "job2"), nproc=8, nnodes=4, device="cuda", epochs=1)
    assert "--nnodes=4" in multi["script"].read_text() and "NODE_RANK" in multi["script"].read_text()
    assert win.findChild(object, "jobWrittenDialog") is not None


def test_import_result_adds_the_cluster_run_to_the_history(win, qtbot, result_folder):
    s = win.session
    before = len(s.history)
    win.cluster.import_result(str(result_folder))
    wait_jobs(qtbot, win)
    assert win.last_error is None
    report = json.loads((result_folder / "report.json").read_text())
    assert len(s.history) == before + 1
    entry = s.history[-1]
    assert entry.label.startswith("imported: fine-tuned") and entry.accuracy == report["pruned"]["accuracy"]
    assert abs(s.totals().sparsity - report["sparsity"]) < 1e-9
    saved = torch.load(result_folder / "model.pt", weights_only=True)
    for k, v in s.module.state_dict().items():
        assert torch.equal(v, saved[k]), k
    s.undo()                                                   # the plan change is undoable
    assert s.plan.active() == {}


def test_import_refuses_a_folder_of_another_model_or_not_a_result(win, qtbot, tmp_path, result_folder):
    win.cluster.import_result(str(tmp_path))
    wait_jobs(qtbot, win)
    assert "not a results folder" in win.last_error[1]
    mlp = tmp_path / "mlp"
    assert main(["prune", "--model", "digits-mlp", "--sparsity", "0.5", "--no-latency", "--out", str(mlp)]) == 0
    win.last_error = None
    win.cluster.import_result(str(mlp))
    wait_jobs(qtbot, win)
    assert win.last_error is not None and "layer" in win.last_error[1]
    assert win.session.plan.active() == {}
