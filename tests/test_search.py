"""Search for the sparsest allocation within a drop after fine-tuning (explorer.core.analyse.search)."""
from __future__ import annotations

import pytest

from explorer.cli import main
from explorer.core.analyse.search import search_allocation
from explorer.core.analyse.sensitivity import ScanSpec, scan
from explorer.core.errors import ExplorerError, PlanError
from explorer.core.session import Session
from explorer.core.train.evaluate import evaluate
from explorer.core.train.finetune import FinetuneConfig

CFG = FinetuneConfig(epochs=1)


@pytest.fixture(scope="module")
def cnn_scan():
    s = Session.open("digits-cnn")
    return s, scan(s, ScanSpec([0.5, 0.7, 0.9]))


def test_search_keeps_the_first_target_within_the_drop(cnn_scan):
    s, sc = cnn_scan
    plan_before = s.plan
    r = search_allocation(s, sc, 100.0, CFG, targets=[0.9, 0.5])      # everything passes: the top target wins
    assert len(r.trials) == 1 and r.trials[0].ok
    assert r.sparsity == pytest.approx(s.totals(r.plan).sparsity)
    assert r.sparsity > 0.8
    assert s.plan == plan_before, "the search itself does not change the session"
    strict = search_allocation(s, sc, 0.0, CFG, targets=[0.9, 0.7, 0.5])
    assert all(t.ok == (t.val_accuracy >= strict.dense_val_accuracy) for t in strict.trials)
    assert strict.trials[-1].ok and not any(t.ok for t in strict.trials[:-1])
    assert strict.val_accuracy >= strict.dense_val_accuracy


def test_search_state_is_the_finetuned_pruned_model(cnn_scan):
    s, sc = cnn_scan
    r = search_allocation(s, sc, 100.0, CFG, targets=[0.7])
    import copy
    m = copy.deepcopy(s.module)
    m.load_state_dict(r.state)
    assert evaluate(m, s.dataset, "test").accuracy == pytest.approx(r.test_accuracy)
    for name, lp in r.plan.active().items():
        w = r.state[f"{name}.weight"]
        assert int((w == 0).sum()) >= round(lp.sparsity * w.numel())


def test_search_refuses_bad_requests(cnn_scan):
    s, sc = cnn_scan
    with pytest.raises(PlanError):
        search_allocation(s, sc, -1.0, CFG)
    with pytest.raises(PlanError):
        search_allocation(s, sc, float("nan"), CFG)
    with pytest.raises(PlanError):
        search_allocation(s, sc, 1.0, CFG, targets=[0.0, 2.0])
    with pytest.raises(PlanError):
        search_allocation(s, sc, 1.0, CFG, method="random")


def test_search_without_labels_is_refused():
    s = Session.open("lab-vgg")
    from explorer.core.analyse.sensitivity import ScanResult
    sc = ScanResult(model="lab-vgg", dataset="synthetic", granularity="element", criterion="l1", split="test",
                    dense_accuracy=90.0, sparsities=[0.5], layers=[{"name": "classifier", "params": 5120,
                                                                     "accuracy": [89.0]}])
    with pytest.raises(ExplorerError):
        search_allocation(s, sc, 1.0, CFG)


def test_cli_search(tmp_path):
    f = tmp_path / "scan.json"
    assert main(["sensitivity", "--out", str(f), "--sparsities", "0.5,0.9"]) == 0
    out = tmp_path / "out"
    assert main(["prune", "--from-sensitivity", str(f), "--max-drop", "100", "--search", "--finetune-epochs", "1",
                 "--out", str(out), "--no-latency"]) == 0
    import json
    rep = json.loads((out / "report.json").read_text())
    assert rep["sparsity"] > 0.5
