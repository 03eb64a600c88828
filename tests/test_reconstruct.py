"""Reconstruction (issue 12): the mask is kept, pruned weights stay +0.0, every refitted layer's output is closer
to the dense one on the calibration data, the solves are the least-squares optimum, and recipes replay it."""
from __future__ import annotations

import json

import pytest
import torch

import explorer.core.prune.reconstruct as rec_mod
from explorer import cli
from explorer.core.errors import PlanError
from explorer.core.prune.plan import Plan
from explorer.core.prune.reconstruct import layers_to_refit, reconstruct_plan

from .helpers import assert_bit_identical, bits


def layer_outputs(model, names, x):
    out = {}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o.detach().clone())) for n in names]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return out, logits


def check_reconstruction(s, plan):
    masks, aux = s.materialize(plan)
    masked = s.masked_state(plan)
    r = reconstruct_plan(s, plan)
    # the mask is unchanged: every pruned weight (and removed channel's bias) is exactly +0.0, no other change
    for n, m in masks.items():
        w = r.state[n]
        assert torch.equal(bits(w[~m]), torch.zeros_like(bits(w[~m])))
        assert int((w[m] == 0).sum()) == 0          # the kept weights are all still there (none became 0)
    for p, m in aux.items():
        if p in r.state and p.endswith(".bias"):
            assert torch.equal(bits(r.state[p][~m]), torch.zeros_like(bits(r.state[p][~m])))
    names = layers_to_refit(s, plan)
    assert [f.name for f in r.layers] == names
    # every refitted layer's output is closer to the dense layer's on the calibration data (measured here with
    # hooks on whole networks, independently of the solver's own bookkeeping)
    x, _ = s.calibration.data()
    dense, dense_logits = layer_outputs(s.model_copy(s.base_state()), names, x)
    before, before_logits = layer_outputs(s.model_copy(masked), names, x)
    after, after_logits = layer_outputs(s.model_copy(r.state), names, x)
    for f in r.layers:
        e0 = float((before[f.name] - dense[f.name]).pow(2).sum())
        e1 = float((after[f.name] - dense[f.name]).pow(2).sum())
        if "no gain" in f.method:   # e.g. whole rows pruned and the input unchanged: nothing to correct
            assert e1 == e0 and f.error_after == f.error_before
        else:
            assert e1 < e0, (f.name, e0, e1)
            assert f.error_after < f.error_before
    assert float((after_logits - dense_logits).pow(2).sum()) < float((before_logits - dense_logits).pow(2).sum())
    return r


@pytest.mark.parametrize("gran,sparsity,crit", [("element", 0.8, "l1"), ("2:4", 0.5, "wanda"),
                                                ("kernel", 0.5, "l2")])
def test_reconstruction_keeps_the_mask_and_lowers_output_error_cnn(cnn, gran, sparsity, crit):
    cnn.set_calibration_samples(64)
    cnn.set_uniform(cnn.layer_names, sparsity, gran, crit)
    check_reconstruction(cnn, cnn.plan)


def test_channel_reconstruction_refits_the_next_layer(mlp):
    mlp.set_calibration_samples(64)
    mlp.set_uniform(["fc1"], 0.5, "channel", "l1")
    plan = mlp.plan
    assert layers_to_refit(mlp, plan) == ["fc1", "fc2"]          # least squares on the consumer
    r = check_reconstruction(mlp, plan)
    assert not torch.equal(r.state["fc2.weight"], mlp.base_state()["fc2.weight"])
    kept_rows = mlp.materialize(plan)[0]["fc1.weight"].all(dim=1)
    # fc1's kept rows see the same input as before: nothing to correct there
    torch.testing.assert_close(r.state["fc1.weight"][kept_rows], mlp.base_state()["fc1.weight"][kept_rows])


def test_obs_sweep_path_keeps_the_mask_and_lowers_error(mlp, monkeypatch):
    monkeypatch.setattr(rec_mod, "EXACT_FLOPS", 0)
    mlp.set_calibration_samples(64)
    mlp.set_uniform(mlp.layer_names, 0.8, "element", "l1")
    r = check_reconstruction(mlp, mlp.plan)
    assert {f.method for f in r.layers} == {"obs"}


def test_exact_solve_is_the_constrained_least_squares_optimum():
    g = torch.Generator().manual_seed(0)
    d, out = 6, 4
    X = torch.randn(d, 40, generator=g, dtype=torch.float64)
    A = X @ X.T + 0.1 * torch.eye(d, dtype=torch.float64)
    W = torch.randn(out, d, generator=g, dtype=torch.float64)
    B = W @ A
    keep = torch.rand(out, d, generator=g) > 0.5
    got = rec_mod._solve_exact(A, B, keep)
    for r in range(out):
        K = keep[r]
        expect = torch.zeros(d, dtype=torch.float64)
        if K.any():   # min (w - W_r) A (w - W_r)^T over w with w[~K] = 0
            expect[K] = torch.linalg.solve(A[K][:, K], (A @ W[r])[K])
        torch.testing.assert_close(got[r], expect)
    obs = rec_mod._solve_obs(A, B, keep)
    assert torch.equal(obs[~keep], torch.zeros_like(obs[~keep]))
    # the sweep is never better than the exact optimum
    err = lambda V: float(((V - W) @ A * (V - W)).sum())   # noqa: E731
    assert err(got) <= err(obs) + 1e-9 < err(W * keep)


def test_reconstruct_refuses_an_empty_plan(mlp):
    with pytest.raises(PlanError, match="Nothing to reconstruct"):
        reconstruct_plan(mlp, Plan())


def test_recipe_replays_criterion_and_reconstruction_bit_for_bit(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main(["prune", "--model", "digits-mlp", "--sparsity", "0.8", "--criterion", "hessian",
                     "--reconstruct", "--calibration-samples", "48", "--seed", "3", "--no-latency",
                     "--out", str(a)]) == 0
    recipe = json.loads((a / "recipe.json").read_text())
    assert recipe["calibration"] == {"samples": 48, "seed": 3} and recipe["reconstruct"] is True
    report = json.loads((a / "report.json").read_text())
    fits = report["reconstruct"]["layers"]
    assert report["reconstruct"]["samples"] == 48 and all(f["error_after"] <= f["error_before"] for f in fits)
    assert cli.main(["prune", "--model", "digits-mlp", "--recipe", str(a / "recipe.json"), "--no-latency",
                     "--out", str(b)]) == 0
    sa = torch.load(a / "model.pt", weights_only=True)
    sb = torch.load(b / "model.pt", weights_only=True)
    assert_bit_identical(sa, sb)
    # ... and the recipe's settings matter: other calibration samples give other weights
    c = tmp_path / "c"
    assert cli.main(["prune", "--model", "digits-mlp", "--recipe", str(a / "recipe.json"), "--calibration-samples", "40",
                     "--no-latency",
                     "--out", str(c)]) == 0
    assert not torch.equal(torch.load(c / "model.pt", weights_only=True)["fc2.weight"], sa["fc2.weight"])


def test_reconstruct_with_iterative_schedule_is_refused(tmp_path, capsys):
    rc = cli.main(["prune", "--model", "digits-mlp", "--sparsity", "0.5", "--reconstruct", "--finetune-epochs", "1",
                   "--schedule", "iterative", "--iterative-steps", "2", "--no-latency", "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "oneshot" in capsys.readouterr().err
