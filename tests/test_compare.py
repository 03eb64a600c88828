"""Comparing criteria (issue 12) and the instant loss-increase prediction."""
from __future__ import annotations

import json

import pytest
import torch

from explorer import cli
from explorer.core.analyse.compare import compare_criteria, parse_criteria, winners
from explorer.core.analyse.predict import predict_loss_increase, prediction_error
from explorer.core.analyse.sensitivity import ScanSpec, scan
from explorer.core.errors import ExplorerError, PlanError
from explorer.core.jobs import CancelToken
from explorer.core.prune.plan import LayerPlan, Plan
from explorer.core.prune.reconstruct import reconstruct_plan
from explorer.core.session import Session
from explorer.core.train.evaluate import evaluate
from explorer.core.train.finetune import FinetuneConfig

KEYS = {"model", "dataset", "granularity", "split", "sparsities", "criteria"}


def test_compare_measures_each_criterion_on_the_same_plan(mlp):
    mlp.set_calibration_samples(32)
    points = []
    r = compare_criteria(mlp, "l1,wanda", [0.5, 0.8], progress=lambda p: points.append(p.data) if p.data else None)
    d = r.to_json()
    assert set(d) == KEYS and d["split"] == "val" and d["granularity"] == "element" and d["sparsities"] == [0.5, 0.8]
    assert [c["name"] for c in d["criteria"]] == ["l1", "wanda"]
    assert all(set(c) == {"name", "accuracy", "accuracy_finetuned"} and c["accuracy_finetuned"] is None
               for c in d["criteria"])
    # each number is what evaluating that plan on the validation split gives
    for c in d["criteria"]:
        for s, acc in zip(d["sparsities"], c["accuracy"]):
            plan = Plan({n: LayerPlan(s, "element", c["name"]) for n in mlp.layer_names})
            assert acc == evaluate(mlp.model_copy(mlp.masked_state(plan)), mlp.dataset, "val").accuracy
    assert d["criteria"][0]["accuracy"] != d["criteria"][1]["accuracy"]
    assert len(points) == 4 and {p.criterion for p in points} == {"l1", "wanda"}
    assert not mlp.plan.active() and mlp.base_label == "loaded weights"     # the session is untouched
    assert winners(r)[0] in ("l1", "wanda", "l1=wanda")


def test_compare_with_reconstruction_and_finetuning(mlp):
    mlp.set_calibration_samples(32)
    r = compare_criteria(mlp, ["l1"], [0.9], reconstruct=True, finetune=FinetuneConfig(epochs=1))
    c = r.to_json()["criteria"][0]
    plan = Plan({n: LayerPlan(0.9, "element", "l1") for n in mlp.layer_names})
    rec = reconstruct_plan(mlp, plan).state
    assert c["accuracy"] == [evaluate(mlp.model_copy(rec), mlp.dataset, "val").accuracy]
    assert c["accuracy"][0] > evaluate(mlp.model_copy(mlp.masked_state(plan)), mlp.dataset, "val").accuracy
    assert len(c["accuracy_finetuned"]) == 1 and 0 <= c["accuracy_finetuned"][0] <= 100


def test_compare_shares_one_plan_and_notes_the_layers_left_out(cnn):
    r = compare_criteria(cnn, "l1,bn-scale", [0.25], granularity="channel")
    assert "classifier" not in r.layers and any("classifier" in n for n in r.notes)


def test_compare_refusals(mlp):
    with pytest.raises(PlanError, match="bn-scale"):
        compare_criteria(mlp, "l1,bn-scale", [0.5])             # element: bn-scale fits no layer
    with pytest.raises(PlanError, match="Unknown criterion"):
        parse_criteria("l1,magic")
    with pytest.raises(PlanError):
        compare_criteria(mlp, "l1", [1.5])
    with pytest.raises(ExplorerError, match="labels"):
        compare_criteria(Session.open("digits-mlp", "synthetic"), "l1", [0.5])


def test_compare_cancels(mlp):
    tok = CancelToken()
    tok.cancel()
    from explorer.core.errors import Cancelled
    with pytest.raises(Cancelled):
        compare_criteria(mlp, "l1", [0.5], cancel=tok)


def test_cli_compare_writes_exactly_the_contract(tmp_path, capsys):
    out = tmp_path / "C.json"
    rc = cli.main(["compare", "--model", "digits-mlp", "--criteria", "l1,hessian", "--sparsities", "0.5,0.7",
                   "--calibration-samples", "32", "--finetune-epochs", "1", "--out", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert set(d) == KEYS and d["model"] == "digits-mlp" and d["dataset"] == "digits" and d["split"] == "val"
    for c in d["criteria"]:
        assert set(c) == {"name", "accuracy", "accuracy_finetuned"}
        assert len(c["accuracy"]) == 2 and len(c["accuracy_finetuned"]) == 2
    summary = json.loads(capsys.readouterr().out)
    assert summary["split"] == "val" and set(summary["best_one_shot"]) == {"0.5", "0.7"}


def test_cli_compare_bad_input_exits_2(tmp_path, capsys):
    assert cli.main(["compare", "--model", "digits-mlp", "--criteria", "bn-scale", "--out",
                     str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "channel granularity" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()
    assert cli.main(["compare", "--model", "digits-mlp", "--finetune-epochs", "-1", "--out",
                     str(tmp_path / "y.json")]) == 2


def test_prune_refuses_a_criterion_that_fits_no_layer(tmp_path, capsys):
    assert cli.main(["prune", "--model", "digits-cnn", "--sparsity", "0.5", "--criterion", "apoz", "--no-latency",
                     "--out", str(tmp_path / "o")]) == 2
    assert "channel granularity only" in capsys.readouterr().err


# ---------------------------------------------------------------------------- prediction

def test_predicted_loss_increase_is_the_quadratic_floored_by_the_sampled_loss(cnn):
    cnn.set_calibration_samples(32)
    # the first 40 samples (the estimate before the stratified sample), and the whole split as the "sample"
    p = predict_loss_increase(cnn, [0.5, 0.9], "element", "l1", sample=40, stratify=False, precision="fp32")
    every = predict_loss_increase(cnn, [0.5, 0.9], "element", "l1", sample=10**6, precision="fp32")
    gn = cnn.calibration.statistic_of("true_fisher")
    dense = evaluate(cnn.model_copy(), cnn.dataset, "val", limit=40).loss
    dense_all = evaluate(cnn.model_copy(), cnn.dataset, "val").loss
    assert p.sampled == 40 and p.split == "val" and every.sampled == every.population == cnn.dataset.size("val")
    for name in ("backbone.conv1", "classifier"):
        w = cnn.base_weight(name).double()
        layer = p.layer(name)
        for i, s in enumerate([0.5, 0.9]):
            plan = Plan({name: LayerPlan(s, "element", "l1")})
            mask = cnn.materialize(plan)[0][f"{name}.weight"]
            quad = float((0.5 * gn[name].double() * w * w)[~mask].sum())
            assert layer["quadratic"][i] == pytest.approx(quad, rel=1e-9) and quad > 0
            pruned = evaluate(cnn.model_copy(cnn.masked_state(plan)), cnn.dataset, "val", limit=40).loss
            assert layer["sampled"][i] == pytest.approx(pruned - dense, rel=1e-4, abs=1e-7)
            assert layer["delta_loss"][i] == max(layer["quadratic"][i], layer["sampled"][i])
            pruned_all = evaluate(cnn.model_copy(cnn.masked_state(plan)), cnn.dataset, "val").loss
            assert every.layer(name)["sampled"][i] == pytest.approx(pruned_all - dense_all, rel=1e-4, abs=1e-7)
        assert layer["delta_loss"][1] > layer["delta_loss"][0]
    # sample=0: the quadratic alone; hessian masks predict no more than l1 masks (OBD's own optimum, same curvature
    # ranking only for the empirical Fisher -- so compare the old estimate)
    q = predict_loss_increase(cnn, [0.5], "element", "l1", sample=0)
    assert q.sampled == 0 and all(l["delta_loss"] == l["quadratic"] for l in q.layers)
    old = predict_loss_increase(cnn, [0.5], "element", "l1", sample=0, curvature="fisher")
    ph = predict_loss_increase(cnn, [0.5], "element", "hessian", sample=0, curvature="fisher")
    assert all(ph.layer(n)["delta_loss"][0] <= old.layer(n)["delta_loss"][0] + 1e-12 for n in cnn.layer_names)
    # the Gauss-Newton curvature does not vanish at this converged model, the empirical Fisher nearly does
    assert all(q.layer(n)["delta_loss"][0] > 5 * old.layer(n)["delta_loss"][0] for n in cnn.layer_names)


def test_prediction_error_math():
    e = prediction_error([0.1, 0.2, None], [1.0, 2.0, 3.0])
    assert e["points"] == 2 and e["mae"] == pytest.approx(1.35) and e["ratio"] == pytest.approx(10.0)
    assert prediction_error([None], [1.0]) is None


def test_scan_records_losses_for_the_prediction(mlp):
    r = scan(mlp, ScanSpec([0.5, 0.9], layers=["fc2"], split="val"))
    plan = Plan({"fc2": LayerPlan(0.9, "element", "l1")})
    ev = evaluate(mlp.model_copy(mlp.masked_state(plan)), mlp.dataset, "val")
    dense = evaluate(mlp.model_copy(mlp.base_state()), mlp.dataset, "val")
    assert r.dense_loss == pytest.approx(dense.loss, rel=1e-5)
    assert r.layer("fc2")["loss"][1] == pytest.approx(ev.loss, rel=1e-5)
    d = r.to_json()
    assert d["dense_loss"] == r.dense_loss and type(r).from_json(d).layer("fc2")["loss"] == r.layer("fc2")["loss"]


def test_prediction_needs_labels():
    with pytest.raises(ExplorerError, match="labels"):
        predict_loss_increase(Session.open("digits-mlp", "synthetic"), [0.5])


def test_statistics_are_cached_until_the_kept_weights_change(mlp):
    mlp.set_calibration_samples(16)
    a = mlp.calibration.statistic_of("fisher")
    assert mlp.calibration.statistic_of("fisher") is a
    mlp.set_uniform(mlp.layer_names, 0.5, "element", "hessian")
    mlp.layer_mask("fc1")
    assert not mlp.calibration.needs(mlp.plan.get("fc1"))
    mlp.results.adopt(mlp.masked_state(), mlp.plan, "test")
    assert mlp.calibration.needs(mlp.plan.get("fc1"))
    assert not torch.equal(mlp.calibration.statistic_of("fisher")["fc1"], a["fc1"])
