"""tensors:PATH -- your own arrays: formats (.npz, .safetensors, .pt, a folder of train/val/test), the task that
follows from y (integer labels: accuracy; float targets: mean squared error), one sentence per bad file, and a 1-D
convolutional classifier, a tabular MLP and a regression head, trained here in seconds, pruned, evaluated,
fine-tuned and scanned end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.core.errors import DatasetError, ExplorerError
from explorer.core.model.data import load_dataset
from explorer.core.session import Session
from explorer.core.train.evaluate import evaluate
from tests import tensor_models as tm

ROOT = Path(__file__).resolve().parent.parent


def _user(tmp_path, cls: str, model: torch.nn.Module, dataset: str) -> Session:
    f = tmp_path / f"{cls}.pt"
    torch.save(model.state_dict(), f)
    return Session.open(str(f), dataset, arch=f"tests.tensor_models:{cls}", trust=True)


@pytest.fixture(scope="module")
def tab():
    x, y, r = tm.tabular(500)
    return x, y, r


# ---------------------------------------------------------------- formats


def test_every_format_reads_the_same_data_and_splits_80_10_10(tmp_path, tab):
    from safetensors.torch import save_file

    x, y, _ = tab
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    save_file({"x": x, "y": y}, str(tmp_path / "d.safetensors"))
    torch.save({"x": x, "y": y}, tmp_path / "d.pt")
    got = [load_dataset(f"tensors:{tmp_path / n}") for n in ("d.npz", "d.safetensors", "d.pt")]
    for ds in got:
        assert ds.input_shape == (tm.FEATURES,) and ds.num_classes == 4 and ds.metric == "accuracy"
        assert [ds.size(s) for s in ("train", "val", "test")] == [400, 50, 50]
        assert torch.equal(ds.split("test").tensors[0], got[0].split("test").tensors[0])   # same seeded split
    d = tmp_path / "folder"
    d.mkdir()
    for name, sl in (("train", slice(0, 300)), ("val", slice(300, 400)), ("test", slice(400, 500))):
        np.savez(d / f"{name}.npz", x=x[sl].numpy(), y=y[sl].numpy())
    ds = load_dataset(f"tensors:{d}")
    assert [ds.size(s) for s in ("train", "val", "test")] == [300, 100, 100]
    assert torch.equal(ds.split("val").tensors[0], x[300:400])


def test_token_ids_and_regression_targets(tmp_path):
    ids = torch.randint(0, 50, (40, 16))
    np.savez(tmp_path / "tok.npz", x=ids.numpy().astype(np.int32), y=np.arange(40) % 3)
    ds = load_dataset(f"tensors:{tmp_path / 'tok.npz'}")
    assert ds.split("train").tensors[0].dtype == torch.long and ds.input_shape == (16,)
    np.savez(tmp_path / "reg.npz", x=np.ones((30, 2, 5), np.float64), y=np.zeros(30, np.float64))
    ds = load_dataset(f"tensors:{tmp_path / 'reg.npz'}")
    assert ds.metric == "mse" and ds.num_classes is None and ds.input_shape == (2, 5)
    assert ds.split("train").tensors[1].shape[1:] == (1,)            # one target per sample: an output of (1,)


def _bad(tmp_path, name, **arrays):
    np.savez(tmp_path / name, **arrays)
    return f"tensors:{tmp_path / name}"


@pytest.mark.parametrize("case, match", [
    ("no_y", "no array named 'y'"),
    ("lengths", "x has 20 samples but y has 19"),
    ("nan", "x holds NaN or infinite values"),
    ("object", "pickled Python objects"),
    ("pickle_pt", "pickled Python code"),
    ("not_dict", "not a dict"),
])
def test_bad_files_get_one_sentence(tmp_path, case, match):
    x = np.zeros((20, 3), np.float32)
    if case == "no_y":
        spec = _bad(tmp_path, "a.npz", x=x)
    elif case == "lengths":
        spec = _bad(tmp_path, "a.npz", x=x, y=np.zeros(19, np.int64))
    elif case == "nan":
        x[3, 1] = np.nan
        spec = _bad(tmp_path, "a.npz", x=x, y=np.zeros(20, np.int64))
    elif case == "object":
        spec = _bad(tmp_path, "a.npz", x=x, y=np.array([{"a": 1}] * 20, dtype=object))
    elif case == "pickle_pt":
        torch.save({"x": torch.zeros(20, 3), "y": torch.zeros(20), "fn": tm.Conv1dNet}, tmp_path / "a.pt")
        spec = f"tensors:{tmp_path / 'a.pt'}"
    else:
        torch.save(torch.zeros(20, 3), tmp_path / "a.pt")
        spec = f"tensors:{tmp_path / 'a.pt'}"
    with pytest.raises(DatasetError, match=match) as e:
        load_dataset(spec)
    assert "\n" not in e.value.message and "Traceback" not in str(e.value)


def test_files_larger_than_memory_are_refused_with_their_size(tmp_path, monkeypatch, tab):
    from explorer.core.model import tensor_data

    x, y, _ = tab
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    monkeypatch.setattr(tensor_data, "available_bytes", lambda: 1000)
    with pytest.raises(DatasetError, match=r"holds 0\.00 GiB of arrays, more than the 0\.00 GiB of memory"):
        load_dataset(f"tensors:{tmp_path / 'd.npz'}")


def test_labels_that_do_not_fit_the_models_outputs_are_refused(tmp_path, tab):
    x, y, r = tab
    np.savez(tmp_path / "many.npz", x=x.numpy(), y=(y + 3).numpy())          # 7 classes, the MLP has 4 outputs
    with pytest.raises(ExplorerError, match="outputs 4 classes but tensors:.* has 7"):
        _user(tmp_path, "TabularMLP", tm.TabularMLP(), f"tensors:{tmp_path / 'many.npz'}")
    np.savez(tmp_path / "wide.npz", x=x.numpy(), y=torch.cat([r, r], 1).numpy())   # 4 targets, the head has 2
    with pytest.raises(ExplorerError, match=r"outputs \(2,\) per sample but y holds \(4,\)"):
        _user(tmp_path, "RegressionHead", tm.RegressionHead(), f"tensors:{tmp_path / 'wide.npz'}")


# ---------------------------------------------------------------- end to end


def test_conv1d_classifier_prunes_evaluates_finetunes_and_scans(tmp_path):
    from explorer.core.analyse.sensitivity import ScanSpec, scan
    from explorer.core.flows.prune import run as run_prune
    from explorer.core.train.finetune import FinetuneConfig

    x, y = tm.signals(300)
    net = tm.train(tm.Conv1dNet(), x[:200], y[:200], steps=60, lr=0.02)
    torch.save({"x": x, "y": y}, tmp_path / "signals.pt")
    s = _user(tmp_path, "Conv1dNet", net, f"tensors:{tmp_path / 'signals.pt'}")
    assert s.require().input_shape == (1, tm.SIGNAL) and s.dataset.metric == "accuracy"
    dense = evaluate(s.module, s.dataset, "test")
    assert dense.accuracy > 70                                              # trained here: far above 33% chance
    r = scan(s, ScanSpec(sparsities=[0.5, 0.9]))
    assert r.metric == "accuracy" and len(r.layers) == 3
    s.set_uniform(s.layer_names, 0.6)
    out = run_prune(s.snapshot(), tmp_path / "out", finetune_cfg=FinetuneConfig(epochs=1, batch_size=64), measure=False)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["dense"]["accuracy"] == pytest.approx(dense.accuracy) and rep["pruned"]["accuracy"] is not None
    assert 0.55 < rep["sparsity"] < 0.65 and out.report["pruned"]["accuracy"] == rep["pruned"]["accuracy"]


def test_regression_head_measures_mean_squared_error_end_to_end(tmp_path, tab):
    from explorer.core.analyse.allocate import allocate_by_drop
    from explorer.core.analyse.compare import compare_criteria
    from explorer.core.analyse.sensitivity import ScanSpec, scan
    from explorer.core.flows.prune import run as run_prune
    from explorer.core.train.finetune import FinetuneConfig, finetune
    from explorer.core.train.metric import metric_of

    x, _, r = tab
    net = tm.train(tm.RegressionHead(), x[:400], r[:400], steps=200)
    d = tmp_path / "reg"
    d.mkdir()
    for name, sl in (("train", slice(0, 400)), ("val", slice(400, 450)), ("test", slice(450, 500))):
        torch.save({"x": x[sl], "y": r[sl]}, d / f"{name}.pt")
    s = _user(tmp_path, "RegressionHead", net, f"tensors:{d}")
    m = metric_of(s.dataset)
    assert m.name == "mse" and not m.higher_is_better
    dense = evaluate(s.module, s.dataset, "test")
    with torch.no_grad():
        assert dense.mse == pytest.approx(float(((net(x[450:]) - r[450:]) ** 2).mean()), rel=1e-5)
    assert dense.accuracy is None and dense.mse < 0.5 * float(r[450:].var())      # it learned something
    assert m.drop(dense.mse, dense.mse * 1.5) == pytest.approx(50.0)               # a drop: % increase

    scan_r = scan(s, ScanSpec(sparsities=[0.5, 0.9]))
    assert scan_r.metric == "mse" and "dense_mse" in scan_r.to_json()
    alloc = allocate_by_drop(s, scan_r, max_drop=1e9)
    assert all(v == 0.9 for v in alloc.sparsities.values())
    cmp = compare_criteria(s, "l1,random", [0.8], split="val")
    assert cmp.metric == "mse" and cmp.to_json()["metric"] == "mse"
    assert cmp.criteria[0]["accuracy"][0] > 0

    s.set_uniform(s.layer_names, 0.8)
    pruned = evaluate(s.model_copy(s.masked_state()), s.dataset, "test").mse
    ft = finetune(s.model_copy(s.masked_state()), s.dataset, s.layer_names, s.plan, s.plan, s.masks_for_state,
                  FinetuneConfig(epochs=3, batch_size=32))
    assert ft.history[-1].val_mse is not None and ft.history[-1].val_accuracy is None
    tuned = evaluate(s.model_copy(ft.state), s.dataset, "test").mse
    assert tuned < pruned                                                          # MSE loss: it recovers
    run_prune(s.snapshot(), tmp_path / "out", measure=False)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["metric"] == "mse" and rep["dense"]["accuracy"] is None
    assert rep["dense"]["mse"] == pytest.approx(dense.mse) and rep["pruned"]["mse"] > 0


def test_regression_search_and_compress(tmp_path, tab):
    from explorer.core.analyse.search import search_allocation
    from explorer.core.analyse.sensitivity import ScanSpec, scan
    from explorer.core.compress.quantize import QuantSettings
    from explorer.core.flows.compress import run as run_compress
    from explorer.core.train.finetune import FinetuneConfig

    x, _, r = tab
    net = tm.train(tm.RegressionHead(), x[:400], r[:400], steps=200)
    torch.save({"x": x, "y": r}, tmp_path / "reg.pt")
    s = _user(tmp_path, "RegressionHead", net, f"tensors:{tmp_path / 'reg.pt'}")
    found = search_allocation(s, scan(s, ScanSpec(sparsities=[0.3, 0.6, 0.9])), max_drop=1e6,
                              cfg=FinetuneConfig(epochs=1, batch_size=64), targets=[0.6, 0.3])
    assert found.sparsity > 0.5 and found.val_accuracy > 0 and found.test_accuracy > 0     # mse values
    s.set_uniform(s.layer_names, 0.5)
    result, files = run_compress(s.snapshot(), QuantSettings.build(s.layers, bits=4), tmp_path / "c",
                                 quantize_cfg=FinetuneConfig(epochs=1, batch_size=64, lr=1e-3, optimizer="adam"))
    comp = json.loads(Path(files["compression.json"]).read_text())
    assert comp["metric"] == "mse"
    for stage in comp["stages"]:
        assert stage["accuracy"] is None and stage["mse"] > 0
    assert result.history[0].val_mse is not None


def test_tabular_mlp_through_the_cli(tmp_path, tab, capsys):
    from explorer.cli import main

    x, y, _ = tab
    net = tm.train(tm.TabularMLP(), x[:400], y[:400], steps=150)
    torch.save(net.state_dict(), tmp_path / "mlp.pt")
    np.savez(tmp_path / "tab.npz", x=x.numpy(), y=y.numpy())
    out = tmp_path / "out"
    rc = main(["prune", "--model", str(tmp_path / "mlp.pt"), "--arch", "tests.tensor_models:TabularMLP", "--trust",
               "--dataset", f"tensors:{tmp_path / 'tab.npz'}", "--sparsity", "0.5", "--no-latency",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["dataset"] == f"tensors:{tmp_path / 'tab.npz'}" and rep["dense"]["accuracy"] > 60
    fresh = tm.TabularMLP()
    fresh.load_state_dict(torch.load(out / "model.pt", weights_only=True), strict=True)
    assert float((fresh.net[0].weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
