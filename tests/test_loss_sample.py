"""Issue 25: the stratified sample behind the instant estimate (analyse/loss_sample.py) -- unbiased over its
seed, exact on its hard stratum, and the same per-sample arithmetic as evaluation."""
from __future__ import annotations

import math

import pytest
import torch

from explorer.core.analyse.loss_sample import (SampledLossChange, per_sample_loss, stratified_sample,
                                               weighted_mean)
from explorer.core.prune.masks import masked_tensors
from explorer.core.prune.plan import LayerPlan, Plan
from explorer.core.train.evaluate import evaluate


def _heavy_tailed(n=40, seed=1):
    """Per-sample changes where a few samples (those with the highest dense loss) carry most of the mean."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(n, generator=g, dtype=torch.float64) ** 4
    change = dense * 3 + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)
    return dense, change


def test_stratified_estimate_is_unbiased_over_seeds():
    dense, change = _heavy_tailed()
    full = float(change.mean())
    seeds = 4000
    est = torch.tensor([weighted_mean(change[s.index], s) for s in
                        (stratified_sample(dense, 12, seed=k) for k in range(seeds))], dtype=torch.float64)
    # 9 of 12 exact, 3 drawn from the other 31: the draw varies from seed to seed, the mean over seeds does not
    assert float(est.std()) > 0
    assert abs(float(est.mean()) - full) < 4 * float(est.std()) / math.sqrt(seeds)
    # the same budget on the first 12 samples is far off: what the stratification is for
    assert abs(float(change[:12].mean()) - full) > 10 * float(est.std()) / math.sqrt(seeds)


def test_stratified_sample_takes_the_highest_scores_exactly_and_weights_the_rest():
    dense, _ = _heavy_tailed()
    s = stratified_sample(dense, 12, seed=5)
    assert s.top == 9 and s.drawn == 3 and s.population == 40
    top9 = set(torch.argsort(dense, descending=True)[:9].tolist())
    assert set(s.index[:9].tolist()) == top9
    assert not set(s.index[9:].tolist()) & top9 and len(set(s.index.tolist())) == 12
    assert float(s.weight.sum()) == pytest.approx(40.0)        # the weights stand for the whole pool
    assert torch.equal(s.weight[9:], torch.full((3,), 31 / 3, dtype=torch.float64))
    # same seed, same draw; another seed, another draw
    assert torch.equal(stratified_sample(dense, 12, seed=5).index, s.index)
    assert any(not torch.equal(stratified_sample(dense, 12, seed=k).index, s.index) for k in range(6, 12))
    # a budget of the whole pool is the pool's mean itself
    every = stratified_sample(dense, 99)
    assert every.population == 40 and sorted(every.index.tolist()) == list(range(40))
    with pytest.raises(ValueError):
        stratified_sample(torch.zeros(0), 4)


def test_per_sample_loss_averages_to_the_loss_of_every_task():
    torch.manual_seed(0)
    seq, tokens = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    assert float(per_sample_loss(seq, tokens).mean()) == pytest.approx(
        float(torch.nn.functional.cross_entropy(seq.reshape(-1, 7), tokens.reshape(-1))), rel=1e-6)
    out, target = torch.randn(4, 2), torch.randn(4, 2)
    assert float(per_sample_loss(out, target).mean()) == pytest.approx(
        float(torch.nn.functional.mse_loss(out, target)), rel=1e-6)
    logits, y = torch.randn(4, 12), torch.tensor([0, 3, 9, 1])
    cut = per_sample_loss(logits, y, num_classes=10)        # extra outputs beyond the classes are ignored
    assert torch.allclose(cut, torch.nn.functional.cross_entropy(logits[:, :10], y, reduction="none").double())


@pytest.mark.parametrize("replay", [True, False])
def test_the_whole_split_as_sample_gives_the_measured_change(mlp, replay):
    """Budget = the split: the estimate is the loss change evaluation measures (replayed, or full forwards in
    batches)."""
    n = mlp.dataset.size("val")
    module = mlp.model_copy()
    change = SampledLossChange(module, mlp.dataset, "val", budget=n, precision="fp32")
    if not replay:      # full forwards, a few samples at a time (as for next-token data)
        change.replayer, change.batch = None, 7
    assert change.sample.population == n
    base = mlp.base_state()
    variants = [masked_tensors(base, *mlp.materialize(Plan({"fc1": LayerPlan(s, "element", "l1")})))
                for s in (0.5, 0.9)]
    got = change.changes(variants)
    dense = evaluate(mlp.model_copy(), mlp.dataset, "val").loss
    for v, g in zip(variants, got):
        m = mlp.model_copy()
        params = dict(m.named_parameters())
        with torch.no_grad():
            for k, t in v.items():
                params[k].copy_(t)
        assert g == pytest.approx(evaluate(m, mlp.dataset, "val").loss - dense, rel=1e-4, abs=1e-7)
    assert got[1] > got[0] > 0


def test_bfloat16_replay_keeps_the_estimate_and_auto_picks_it_only_where_it_pays(cnn, monkeypatch):
    from explorer.core.analyse import loss_sample
    base = cnn.base_state()
    variants = [masked_tensors(base, *cnn.materialize(Plan({"backbone.conv0": LayerPlan(s, "element", "l1")})))
                for s in (0.5, 0.7)]
    fp32 = SampledLossChange(cnn.model_copy(), cnn.dataset, "val", 128, precision="fp32")
    bf16 = SampledLossChange(cnn.model_copy(), cnn.dataset, "val", 128, precision="bf16")
    a, b = fp32.changes(variants), bf16.changes(variants)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert torch.equal(fp32.sample.index, bf16.sample.index)
    for x, y in zip(a, b):
        assert x > 0.01 and y == pytest.approx(x, rel=0.1)       # the same estimate, to bfloat16's precision
    # 'auto': bfloat16 only with matrix units for it and a model big enough to gain from it
    for units, macs, want in ((True, 10**8, "bf16"), (True, 10**5, "fp32"), (False, 10**8, "fp32")):
        monkeypatch.setattr(loss_sample, "cpu_has_bf16_matrix_units", lambda u=units: u)
        got = SampledLossChange(cnn.model_copy(), cnn.dataset, "val", 16, macs=macs)
        assert got.precision == want, (units, macs)
    with pytest.raises(ValueError, match="precision"):
        SampledLossChange(cnn.model_copy(), cnn.dataset, "val", 16, precision="fp16")
