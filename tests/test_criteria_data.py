"""The data-aware criteria (issue 12): each score checked by hand on tiny layers, the per-row ranking, the
calibration samples, and the refusals."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.errors import PlanError
from explorer.core.prune.activations import trace_followers
from explorer.core.prune.calibration import calibration_batch, fisher_diagonal, input_norms
from explorer.core.prune.criteria import CRITERIA, ScoreContext, get_criterion
from explorer.core.prune.plan import LayerPlan
from explorer.core.prune.ranking import rank_rows
from explorer.core.session import Session


class Tiny(nn.Module):
    """conv -> BN -> ReLU -> flatten -> linear -> relu (functional) -> linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(3 * 4 * 4, 5)
        self.out = nn.Linear(5, 4)
        with torch.no_grad():
            self.bn.weight.copy_(torch.tensor([0.5, -2.0, 1.0]))
            self.bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        x = torch.relu(self.fc(torch.flatten(x, 1)))
        return self.out(x)


def per_sample_squared_grads(model, x, y, names):
    """The definition, computed directly: for every sample its own backward pass, squared, averaged."""
    mods = dict(model.named_modules())
    acc = {n: torch.zeros_like(mods[n].weight, dtype=torch.float64) for n in names}
    for i in range(x.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for n in names:
            acc[n] += mods[n].weight.grad.double() ** 2
    return {n: (a / x.shape[0]).float() for n, a in acc.items()}


# ---------------------------------------------------------------------------- hessian (empirical Fisher)

@pytest.mark.parametrize("vectorise", [True, False])
def test_fisher_diagonal_is_the_mean_of_squared_per_sample_gradients(vectorise):
    model = Tiny().eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 2, 4, 4, generator=g), torch.randint(0, 4, (9,), generator=g)
    names = ["conv", "fc", "out"]
    direct = per_sample_squared_grads(model, x, y, names)
    got = fisher_diagonal(model, x, y, names, chunk=4, vectorise=vectorise)
    for n in names:
        assert got[n].shape == direct[n].shape
        torch.testing.assert_close(got[n], direct[n], rtol=1e-4, atol=1e-10)
        assert float(got[n].abs().sum()) > 0
    # the squared *batch* gradient would be a different (much smaller) thing: the test can tell them apart
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert not torch.allclose(model.fc.weight.grad ** 2, direct["fc"], rtol=1e-2)


def test_hessian_scores_are_half_fisher_times_w_squared_on_a_session(mlp):
    mlp.set_calibration_samples(16)
    x, y = mlp.calibration.data()
    assert x.shape[0] == 16 and y is not None
    direct = per_sample_squared_grads(mlp.model_copy(mlp.base_state()), x, y, ["fc3"])["fc3"]
    w = mlp.base_weight("fc3")
    expect = 0.5 * direct * w * w
    scores = get_criterion("hessian").element_scores(w, ScoreContext("fc3", statistic=mlp.calibration.statistic))
    torch.testing.assert_close(scores, expect, rtol=1e-4, atol=1e-12)
    # the engine prunes the smallest saliencies first (element granularity, exact count)
    mask = mlp.layer_mask("fc3", LayerPlan(0.3, "element", "hessian")).element_mask(0.3)
    k = round(0.3 * w.numel())
    assert int((~mask).sum()) == k
    assert float(expect[~mask].max()) <= float(expect[mask].min()) * (1 + 1e-4)


def test_calibration_samples_are_seeded_training_samples(mlp):
    a, ya = calibration_batch(mlp.dataset, 32, seed=0)
    b, _ = calibration_batch(mlp.dataset, 32, seed=0)
    c, _ = calibration_batch(mlp.dataset, 32, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    train = torch.cat([x for x, _ in mlp.dataset.batches("train", batch_size=4096)])
    rows = {tuple(r.tolist()) for r in train.flatten(1)}
    assert all(tuple(r.tolist()) in rows for r in a.flatten(1))     # drawn from the training split
    mlp.set_calibration_samples(32)
    f32 = mlp.calibration.statistic_of("fisher")["fc1"].clone()
    mlp.set_seed(1)
    assert not torch.equal(mlp.calibration.statistic_of("fisher")["fc1"], f32)   # new seed, new samples
    with pytest.raises(PlanError):
        mlp.set_calibration_samples(0)


# ---------------------------------------------------------------------------- wanda

def test_input_norms_from_known_inputs():
    model = Tiny().eval()
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).reshape(2, 2, 4, 4) / 10
    norms = input_norms(model, x, ["conv", "fc"])
    # conv: one norm per input channel, over samples and positions
    torch.testing.assert_close(norms["conv"], x.transpose(0, 1).reshape(2, -1).norm(dim=1))
    # linear: one norm per input feature (its input is the flattened ReLU output)
    with torch.no_grad():
        feat = torch.flatten(model.act(model.bn(model.conv(x))), 1)
    torch.testing.assert_close(norms["fc"], feat.norm(dim=0))


def test_wanda_scores_are_magnitude_times_input_norm():
    w = torch.tensor([[1.0, -2.0, 3.0], [-4.0, 5.0, 0.5]])
    norms = torch.tensor([2.0, 0.5, 1.0])
    ctx = ScoreContext("fc", statistic=lambda kind, layer: norms if kind == "input_norm" else None)
    s = get_criterion("wanda").element_scores(w, ctx)
    assert torch.equal(s, torch.tensor([[2.0, 1.0, 3.0], [8.0, 2.5, 0.5]]))
    # conv: the input channel's norm for every kernel position
    wc = torch.ones(2, 2, 3, 3)
    sc = get_criterion("wanda").element_scores(wc, ScoreContext("c", statistic=lambda k, l: torch.tensor([1.0, 3.0])))
    assert torch.equal(sc[:, 0], torch.ones(2, 3, 3)) and torch.equal(sc[:, 1], 3 * torch.ones(2, 3, 3))


def test_rank_rows_prunes_within_each_row():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(7, 10, generator=g)
    _, rank, _ = rank_rows(scores)
    rank = rank.reshape(7, 10)
    for k in range(0, 71):
        pruned = rank < k
        per_row = pruned.sum(dim=1)
        assert int(pruned.sum()) == k                                     # the layer's count is exact
        assert set(per_row.tolist()) <= {k // 7, -(-k // 7)}               # rows differ by at most one
        if k % 7 == 0:
            assert (per_row == k // 7).all()                               # s * cols per row when whole
        for r in range(7):   # every row loses its own smallest scores
            if 0 < per_row[r] < 10:
                assert scores[r][pruned[r]].max() < scores[r][~pruned[r]].min()


def test_wanda_element_on_a_session_prunes_evenly_per_row(mlp):
    view = mlp.layer_mask("fc2", LayerPlan(0.5, "element", "wanda"))
    mask = view.element_mask(0.5)
    assert (mask.sum(dim=1) == 150).all()      # 300 inputs per row, exactly half pruned in every row
    assert view.per_row and view.counts(0.5).nonzero == 100 * 150


def test_wanda_refuses_global_scope_at_element_but_not_channel(mlp):
    with pytest.raises(PlanError, match="within each output row"):
        mlp.set_global(mlp.layer_names, 0.5, "element", "wanda")
    mlp.set_global(mlp.layer_names, 0.3, "channel", "wanda")
    assert mlp.plan.active()


# ---------------------------------------------------------------------------- bn-scale

def test_bn_scale_scores_are_abs_gamma(cnn):
    name = "backbone.conv1"
    assert cnn.calibration.following_batchnorm(name) == "backbone.bn1.weight"
    gamma = cnn.base_state()["backbone.bn1.weight"].abs()
    view = cnn.layer_mask(name, LayerPlan(0.25, "channel", "bn-scale"))
    order = torch.argsort(view.ranking.rank.long())        # channels in pruning order
    assert torch.equal(order, torch.sort(gamma, stable=True).indices)
    torch.testing.assert_close(view.ranking.sorted_keys.view(torch.float32), torch.sort(gamma).values)
    kept = view.kept_units(0.25)
    assert int((~kept).sum()) == 8 and float(gamma[~kept].max()) <= float(gamma[kept].min())


def test_bn_scale_refusals(cnn, mlp):
    with pytest.raises(PlanError, match="channel granularity only"):
        cnn.check_layer_plan("backbone.conv1", LayerPlan(0.5, "element", "bn-scale"))
    with pytest.raises(PlanError, match="BatchNorm"):
        mlp.check_layer_plan("fc1", LayerPlan(0.5, "channel", "bn-scale"))
    with pytest.raises(PlanError, match="BatchNorm"):        # a many-layer edit that fits no layer is refused
        mlp.set_uniform(mlp.layer_names, 0.5, "channel", "bn-scale")
    assert not mlp.plan.active()


# ---------------------------------------------------------------------------- apoz

def test_apoz_on_a_known_activation():
    lin = nn.Linear(1, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0], [-1.0], [0.0]]))
        lin.bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    model = nn.Sequential(lin, nn.ReLU())
    x = torch.tensor([[-3.0], [-1.0], [2.0], [5.0]])        # channel 0 zero for 2/4, channel 1 for 2/4 + ... ,
    f = trace_followers(model, ["0"], x, batch_size=3)     # channel 2 never zero; two chunks are summed
    # relu(x): zeros at x <= 0 -> 2 of 4; relu(-x): zeros at x >= 0 -> 2 of 4; relu(1): none
    assert torch.equal(f.apoz("0"), torch.tensor([0.5, 0.5, 0.0]))
    x2 = torch.tensor([[-3.0], [-1.0], [-2.0], [5.0]])
    assert torch.equal(trace_followers(model, ["0"], x2).apoz("0"), torch.tensor([0.75, 0.25, 0.0]))


def test_apoz_through_batchnorm_and_functional_relu_matches_hooks():
    model = Tiny().eval()
    x = torch.randn(6, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    f = trace_followers(model, ["conv", "fc", "out"], x)
    with torch.no_grad():
        a = model.act(model.bn(model.conv(x)))
        h = torch.relu(model.fc(torch.flatten(a, 1)))
    torch.testing.assert_close(f.apoz("conv"), (a == 0).float().mean(dim=(0, 2, 3)))
    torch.testing.assert_close(f.apoz("fc"), (h == 0).float().mean(dim=0))
    assert f.batchnorm == {"conv": "bn.weight"} and f.relu == {"conv", "fc"} and f.apoz("out") is None


def test_apoz_stops_at_a_residual_add():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 2, 1)
            self.b = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            return torch.relu(self.b(torch.relu(self.a(x))) + x)

    f = trace_followers(Res().eval(), ["a", "b"], torch.randn(2, 2, 3, 3))
    assert f.relu == {"a"}


def test_apoz_scores_rank_mostly_zero_channels_first(cnn):
    cnn.set_calibration_samples(64)
    apoz = cnn.calibration.statistic_of("apoz")["backbone.conv2"]
    view = cnn.layer_mask("backbone.conv2", LayerPlan(0.5, "channel", "apoz"))
    kept = view.kept_units(0.5)
    assert float(apoz[~kept].min()) >= float(apoz[kept].max()) - 1e-6


def test_apoz_refusals(mlp):
    with pytest.raises(PlanError, match="channel granularity only"):
        mlp.check_layer_plan("fc1", LayerPlan(0.5, "2:4", "apoz"))
    mlp.check_layer_plan("fc1", LayerPlan(0.5, "channel", "apoz"))


# ---------------------------------------------------------------------------- labels

def test_hessian_needs_labels_wanda_and_apoz_do_not():
    s = Session.open("digits-mlp", "synthetic")
    assert not s.dataset.has_labels
    with pytest.raises(PlanError, match="needs labels"):
        s.check_layer_plan("fc1", LayerPlan(0.5, "element", "hessian"))
    s.set_calibration_samples(16)
    s.set_uniform(s.layer_names, 0.5, "element", "wanda")
    assert s.totals().sparsity == pytest.approx(0.5, abs=1e-3)
    s.set_uniform(["fc1", "fc2"], 0.5, "channel", "apoz")
    assert s.totals().sparsity > 0.2


def test_every_criterion_is_listed_with_a_tooltip():
    for name in ("hessian", "wanda", "bn-scale", "apoz"):
        c = CRITERIA[name]
        assert c.name == name and len(c.tooltip) > 40 and c.label
    assert math.isclose(CRITERIA["bn-scale"].comparable(torch.tensor([0.5]), 9)[0], 0.5)
