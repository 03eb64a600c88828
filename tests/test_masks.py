"""The mask engine: exact counts, structure, criteria, ties, refusals and non-finite weights.

Every criterion x granularity is checked on the *materialised* element mask
(what apply/export use), not only on the O(1) lookups, and the lookups
(counts, threshold, display, histogram) are checked against that mask.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from explorer.core.errors import PlanError
from explorer.core.prune.plan import LayerPlan
from explorer.core.session import Session

CRITERIA = ("l1", "l2", "random", "taylor")
GRANULARITIES = ("element", "2:4", "vector", "kernel", "channel")
SPARSITIES = (0.0, 0.1, 0.25, 1 / 3, 0.5, 0.7, 0.9, 1.0)


# ---------------------------------------------------------------------------- fixtures & helpers

def groups_of(mask: torch.Tensor, gran: str) -> torch.Tensor:
    """(groups, group_size) view of an element mask, following the granularity's definition
    (written independently of the product's GroupLayout)."""
    if gran == "element":
        return mask.reshape(-1, 1)
    if gran == "2:4":
        t = mask.permute(0, 2, 3, 1) if mask.dim() == 4 else mask
        return t.reshape(-1, 4)
    if gran == "vector":
        if mask.dim() == 4:
            return mask.reshape(-1, mask.shape[-1])       # kernel rows (kw weights)
        return mask.reshape(mask.shape[0], -1, 4).reshape(-1, 4)  # 4 consecutive inputs of a Linear
    if gran == "kernel":
        return mask.reshape(mask.shape[0] * mask.shape[1], -1)
    if gran == "channel":
        return mask.reshape(mask.shape[0], -1)
    raise AssertionError(gran)


def expected_units(shape: tuple[int, ...], gran: str) -> int:
    numel = math.prod(shape)
    if gran in ("element", "2:4"):
        return numel
    if gran == "vector":
        return numel // shape[-1] if len(shape) == 4 else numel // 4
    if gran == "kernel":
        return shape[0] * shape[1]
    if gran == "channel":
        return shape[0]
    raise AssertionError(gran)


def check_mask(session: Session, layer: str, gran: str, crit: str, sparsities=SPARSITIES) -> None:
    """Exact count, structure and counts() on the materialised mask for several sparsities."""
    w = session.base_weight(layer)
    assert int(torch.count_nonzero(w)) == w.numel(), "test assumes a dense weight"
    view = session.layer_mask(layer, LayerPlan(0.5, gran, crit))
    N = expected_units(tuple(w.shape), gran)
    assert view.units == N, f"{layer} {gran}: {view.units} units, expected {N}"
    for s in sparsities:
        keep = view.element_mask(s)
        assert keep.dtype == torch.bool and keep.shape == w.shape
        k = int(round(s * N))
        if gran == "2:4":
            # units are single weights: exactly k weights pruned
            assert int((~keep).sum()) == k, f"{layer} {gran} {crit} s={s}"
            runs = groups_of(keep, gran).sum(dim=1)
            if s >= 0.5:
                assert int(runs.max()) <= 2, f"a run of 4 inputs keeps {int(runs.max())} weights at s={s}"
            if s == 0.5:
                assert bool((runs == 2).all()), "at 50% every run of 4 keeps exactly 2"
            if s <= 0.5:
                # below the pattern sparsity only pattern candidates go: every run keeps >= 2
                assert int(runs.min()) >= 2, f"a run keeps only {int(runs.min())} at s={s}"
        else:
            g = groups_of(keep, gran)
            all_kept, all_pruned = g.all(dim=1), (~g).all(dim=1)
            assert bool((all_kept | all_pruned).all()), f"{gran}: a group is partly pruned at s={s}"
            assert int(all_pruned.sum()) == k, f"{layer} {gran} {crit} s={s}: {int(all_pruned.sum())} != {k}"
        c = view.counts(s)
        assert c.params == w.numel()
        assert c.nonzero == int(keep.sum()), f"counts({s}).nonzero disagrees with the mask"


# ---------------------------------------------------------------------------- 1. criterion x granularity

@pytest.mark.parametrize("crit", CRITERIA)
@pytest.mark.parametrize("gran", GRANULARITIES)
def test_conv_every_criterion_and_granularity(cnn, gran, crit):
    check_mask(cnn, "backbone.conv2", gran, crit)


@pytest.mark.parametrize("crit", CRITERIA)
@pytest.mark.parametrize("gran", ("element", "2:4", "vector"))
def test_linear_classifier_every_criterion(cnn, gran, crit):
    check_mask(cnn, "classifier", gran, crit)


@pytest.mark.parametrize("crit", CRITERIA)
@pytest.mark.parametrize("layer,gran", [("fc1", "element"), ("fc1", "2:4"), ("fc1", "vector"), ("fc1", "channel"),
                                        ("fc2", "element"), ("fc2", "2:4"), ("fc2", "vector"), ("fc2", "channel"),
                                        ("fc3", "element"), ("fc3", "vector")])
def test_mlp_fc_layers(mlp, layer, gran, crit):
    check_mask(mlp, layer, gran, crit, sparsities=(0.0, 0.3, 0.5, 0.8, 1.0))


@pytest.mark.parametrize("gran", GRANULARITIES)
@pytest.mark.parametrize("crit", ("l1", "taylor"))
def test_apply_matches_mask_and_counts(gran, crit):
    """After set_layer + apply the model's zeros are exactly the mask's, and counts() agree."""
    s = Session.open("digits-cnn")
    name = "backbone.conv2"
    s.set_layer(name, sparsity=0.6, granularity=gran, criterion=crit)
    s.apply()
    w = dict(s.module.named_modules())[name].weight.detach()
    view = s.layer_mask(name)
    keep = view.element_mask(0.6)
    assert torch.equal(w != 0, keep)
    assert int(torch.count_nonzero(w)) == view.counts(0.6).nonzero == s.layer_counts(name).nonzero
    # kept weights are the originals, untouched
    assert torch.equal(w[keep], s.original_state()[f"{name}.weight"][keep])
    # the other layers are untouched
    for other in s.layer_names:
        if other != name:
            assert torch.equal(dict(s.module.named_modules())[other].weight, s.original_state()[f"{other}.weight"])


def test_nm_keeps_the_two_largest_of_every_run(cnn):
    w = cnn.base_weight("backbone.conv2")
    keep = cnn.layer_mask("backbone.conv2", LayerPlan(0.5, "2:4", "l1")).element_mask(0.5)
    a = w.abs().permute(0, 2, 3, 1).reshape(-1, 4)
    k = keep.permute(0, 2, 3, 1).reshape(-1, 4)
    kept_min = torch.where(k, a, torch.full_like(a, float("inf"))).min(dim=1).values
    pruned_max = torch.where(~k, a, torch.full_like(a, -1.0)).max(dim=1).values
    assert bool((pruned_max <= kept_min).all())


def test_nm_groups_run_along_the_input_dimension(cnn):
    """2:4 on a conv groups 4 consecutive *input channels* at each (out, kh, kw) position."""
    keep = cnn.layer_mask("backbone.conv2", LayerPlan(0.5, "2:4", "l1")).element_mask(0.5)
    per_run = keep.permute(0, 2, 3, 1).reshape(64, 3, 3, 8, 4).sum(dim=-1)
    assert bool((per_run == 2).all())


def test_choosing_nm_without_sparsity_uses_the_pattern_sparsity():
    s = Session.open("digits-cnn")
    s.set_layer("backbone.conv2", granularity="2:4")
    assert s.plan.get("backbone.conv2") == LayerPlan(0.5, "2:4", "l1")
    s.set_layer("backbone.conv3", granularity="1:4")
    assert s.plan.get("backbone.conv3").sparsity == 0.75
    s.apply()
    w = s.module.backbone.conv3.weight.detach()
    assert bool(((w != 0).permute(0, 2, 3, 1).reshape(-1, 4).sum(1) == 1).all())


def test_vector_on_conv_prunes_kernel_rows(cnn):
    keep = cnn.layer_mask("backbone.conv2", LayerPlan(0.5, "vector", "l1")).element_mask(0.5)
    rows = keep.reshape(64, 32, 3, 3)
    # a kernel row (fixed out, in, kh) is uniform; kernel columns are not required to be
    assert bool((rows.all(dim=-1) | (~rows).all(dim=-1)).all())
    cols_uniform = (rows.all(dim=-2) | (~rows).all(dim=-2))
    assert not bool(cols_uniform.all()), "vector groups should be rows, not whole kernels"


def test_l2_group_criterion_is_group_norm(cnn):
    """channel + l2 prunes the output rows with the smallest L2 norms; l1 the smallest L1 norms."""
    w = cnn.base_weight("backbone.conv2").reshape(64, -1)
    for crit, score in (("l1", w.abs().sum(1)), ("l2", w.pow(2).sum(1).sqrt())):
        keep = cnn.layer_mask("backbone.conv2", LayerPlan(0.25, "channel", crit)).element_mask(0.25)
        pruned_rows = (~keep.reshape(64, -1)).all(1)
        assert int(pruned_rows.sum()) == 16
        assert float(score[pruned_rows].max()) <= float(score[~pruned_rows].min())


# ---------------------------------------------------------------------------- lookups vs materialised mask

@pytest.mark.parametrize("gran", GRANULARITIES)
def test_display_keep_matches_element_mask(cnn, gran):
    view = cnn.layer_mask("backbone.conv2", LayerPlan(0.5, gran, "l1"))
    R, C = 64, 32 * 9
    for s in (0.0, 0.3, 0.5, 0.9, 1.0):
        full = view.element_mask(s).reshape(R, C).numpy()
        expected = full[np.ix_(view.sample.rows, view.sample.cols)]
        assert np.array_equal(view.display_keep(s), expected)


@pytest.mark.parametrize("gran", ("element", "kernel", "channel"))
def test_downsampled_display_and_histogram_on_a_big_layer(lab_vgg, gran):
    """lab-vgg conv7 is 512 x 4608: the heatmap samples columns and the histogram samples weights."""
    view = lab_vgg.layer_mask("backbone.conv7", LayerPlan(0.5, gran, "l1"))
    R, C = view.layer.matrix_shape
    from explorer.core.prune.display import MAX_DISPLAY
    assert view.display_keep(0.5).shape == (512, MAX_DISPLAY)
    for s in (0.3, 0.8):
        full = view.element_mask(s).reshape(R, C).numpy()
        assert np.array_equal(view.display_keep(s), full[np.ix_(view.sample.rows, view.sample.cols)])
        _, kept, pruned = view.histogram(s)
        assert kept.sum() + pruned.sum() == pytest.approx(view.layer.params)
        assert pruned.sum() / view.layer.params == pytest.approx(1 - view.counts(s).nonzero / view.layer.params,
                                                                 abs=0.01)


@pytest.fixture(scope="module")
def lab_vgg():
    return Session.open("lab-vgg")


def test_nm_display_puts_runs_side_by_side(cnn):
    view = cnn.layer_mask("backbone.conv2", LayerPlan(0.5, "2:4", "l1"))
    d = view.display_keep(0.5)                   # 64 x 288 (everything fits)
    assert d.shape == (64, 288)
    assert bool((d.reshape(64, -1, 4).sum(-1) == 2).all()), "each 4 adjacent display columns are one run"


@pytest.mark.parametrize("absolute", (False, True))
def test_histogram_split_matches_mask(cnn, absolute):
    view = cnn.layer_mask("backbone.conv2", LayerPlan(0.4, "element", "l1"))
    for s in (0.0, 0.4, 1.0):
        edges, kept, pruned = view.histogram(s, absolute=absolute)
        assert len(edges) == len(kept) + 1 == len(pruned) + 1
        n_pruned = int(round(s * view.units))
        assert pruned.sum() == pytest.approx(n_pruned)
        assert kept.sum() == pytest.approx(view.units - n_pruned)


def test_threshold_separates_pruned_and_kept(cnn):
    w = cnn.base_weight("backbone.conv2").abs()
    view = cnn.layer_mask("backbone.conv2", LayerPlan(0.5, "element", "l1"))
    assert view.threshold(0.0) is None
    for s in (0.1, 0.5, 0.9, 1.0):
        keep = view.element_mask(s)
        t = view.threshold(s)
        assert t == float(w[~keep].max())
        if s < 1.0:
            assert t <= float(w[keep].min())


# ---------------------------------------------------------------------------- 2. element + l1 == textbook

def _distinct_conv2_state(seed=0):
    """digits-cnn weights with conv2 replaced by values whose |w| are all distinct."""
    from explorer.core.model.nets import DigitsCNN
    from explorer.core.model.zoo import load_model

    sd = {k: v.clone() for k, v in load_model("digits-cnn").module.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    n = sd["backbone.conv2.weight"].numel()
    mags = (torch.randperm(n, generator=g).float() + 1) * 1e-4
    signs = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    sd["backbone.conv2.weight"] = (mags * signs).reshape(64, 32, 3, 3)
    DigitsCNN().load_state_dict(sd)   # still the architecture's state_dict
    return sd


def test_element_l1_is_textbook_magnitude_pruning(tmp_path):
    path = tmp_path / "distinct.pt"
    torch.save(_distinct_conv2_state(), path)
    s = Session.open("digits-cnn", weights=str(path))
    w = s.base_weight("backbone.conv2")
    a = w.abs().flatten()
    assert a.unique().numel() == a.numel()
    view = s.layer_mask("backbone.conv2", LayerPlan(0.5, "element", "l1"))
    for sp in (0.05, 0.25, 0.5, 0.73, 0.99):
        k = int(round(sp * a.numel()))
        thr = torch.kthvalue(a, k).values
        textbook_pruned = (w.abs() <= thr)
        assert int(textbook_pruned.sum()) == k
        assert torch.equal(~view.element_mask(sp), textbook_pruned), f"s={sp}"


@pytest.mark.parametrize("layer", ("backbone.conv0", "classifier"))
def test_element_l1_textbook_on_trained_layers(cnn, layer):
    """conv0 and classifier have no tied magnitudes in the built-in weights."""
    w = cnn.base_weight(layer)
    a = w.abs().flatten()
    assert a.unique().numel() == a.numel()
    view = cnn.layer_mask(layer, LayerPlan(0.5, "element", "l1"))
    for sp in (0.2, 0.5, 0.8):
        k = int(round(sp * a.numel()))
        thr = torch.kthvalue(a, k).values
        assert torch.equal(~view.element_mask(sp), w.abs() <= thr)


def _tied_state():
    from explorer.core.model.zoo import load_model

    sd = {k: v.clone() for k, v in load_model("digits-cnn").module.state_dict().items()}
    w = sd["backbone.conv2.weight"]
    w = torch.round(w * 20) / 20            # heavy ties (a few dozen distinct magnitudes, +/- signs)
    w.view(-1)[::7] = 0.0                    # and many exact zeros
    sd["backbone.conv2.weight"] = w
    return sd


def test_ties_exact_count_and_deterministic(tmp_path):
    path = tmp_path / "tied.pt"
    torch.save(_tied_state(), path)
    s1 = Session.open("digits-cnn", weights=str(path))
    s2 = Session.open("digits-cnn", weights=str(path))
    w = s1.base_weight("backbone.conv2")
    a = w.abs().flatten()
    assert a.unique().numel() < 100 and int((a == 0).sum()) > 2000
    v1 = s1.layer_mask("backbone.conv2", LayerPlan(0.5, "element", "l1"))
    v2 = s2.layer_mask("backbone.conv2", LayerPlan(0.5, "element", "l1"))
    order = torch.sort(a, stable=True).indices           # documented tie-break: by position
    for sp in (0.05, 0.1, 0.3, 0.5, 0.77, 1.0):
        k = int(round(sp * a.numel()))
        m1, m2 = v1.element_mask(sp), v2.element_mask(sp)
        assert int((~m1).sum()) == k
        assert torch.equal(m1, m2)
        assert torch.equal(m1, v1.element_mask(sp)), "same session, same mask"
        expected = torch.ones(a.numel(), dtype=torch.bool)
        expected[order[:k]] = False
        assert torch.equal(m1.flatten(), expected), f"tie-break is not by position at s={sp}"
        if 0 < k < a.numel():
            assert float(a[~m1.flatten()].max()) <= float(a[m1.flatten()].min())
        # counts with many exact zeros: the zeros go first and do not reduce the nonzero count
        assert v1.counts(sp).nonzero == int((m1 & (w != 0)).sum())


@pytest.mark.parametrize("gran", ("vector", "kernel", "channel"))
def test_structured_ties_exact_count(tmp_path, gran):
    """Whole groups of exact zeros (tied scores of 0): still exactly round(s*N) groups."""
    from explorer.core.model.zoo import load_model

    sd = {k: v.clone() for k, v in load_model("digits-cnn").module.state_dict().items()}
    sd["backbone.conv2.weight"][::3] = 0.0          # every third output channel all zero
    sd["backbone.conv2.weight"][:, ::4] = 0.0       # every fourth input kernel all zero
    path = tmp_path / "zeros.pt"
    torch.save(sd, path)
    s = Session.open("digits-cnn", weights=str(path))
    w = s.base_weight("backbone.conv2")
    view = s.layer_mask("backbone.conv2", LayerPlan(0.5, gran, "l1"))
    N = expected_units(tuple(w.shape), gran)
    for sp in (0.1, 0.4, 0.5, 0.9):
        keep = view.element_mask(sp)
        g = groups_of(keep, gran)
        assert bool((g.all(1) | (~g).all(1)).all())
        assert int((~g).all(1).sum()) == int(round(sp * N))
        assert view.counts(sp).nonzero == int((keep & (w != 0)).sum())


# ---------------------------------------------------------------------------- 3. random and taylor

@pytest.mark.parametrize("gran", ("element", "kernel", "channel"))
def test_random_is_seeded_and_differs_from_l1(cnn, gran):
    other = Session.open("digits-cnn")
    a = cnn.layer_mask("backbone.conv2", LayerPlan(0.5, gran, "random")).element_mask(0.5)
    b = other.layer_mask("backbone.conv2", LayerPlan(0.5, gran, "random")).element_mask(0.5)
    l1 = cnn.layer_mask("backbone.conv2", LayerPlan(0.5, gran, "l1")).element_mask(0.5)
    assert torch.equal(a, b)
    assert not torch.equal(a, l1)


def test_random_depends_on_the_seed():
    a, b = Session(seed=0), Session(seed=1)
    from explorer.core.model.loading import resolve
    a.apply_load(resolve("digits-cnn"))
    b.apply_load(resolve("digits-cnn"))
    ma = a.layer_mask("backbone.conv2", LayerPlan(0.5, "element", "random")).element_mask(0.5)
    mb = b.layer_mask("backbone.conv2", LayerPlan(0.5, "element", "random")).element_mask(0.5)
    assert not torch.equal(ma, mb)


def test_taylor_differs_from_l1_and_is_reproducible(cnn):
    other = Session.open("digits-cnn")
    t1 = cnn.layer_mask("backbone.conv2", LayerPlan(0.5, "element", "taylor")).element_mask(0.5)
    t2 = other.layer_mask("backbone.conv2", LayerPlan(0.5, "element", "taylor")).element_mask(0.5)
    l1 = cnn.layer_mask("backbone.conv2", LayerPlan(0.5, "element", "l1")).element_mask(0.5)
    assert torch.equal(t1, t2)
    assert not torch.equal(t1, l1)
    # and it is |w * dL/dw| of the dense model: the pruned set is the smallest of those scores
    from explorer.core.prune.gradients import compute_gradients

    g = compute_gradients(other.model_copy(other.base_state()), other.dataset, other.layer_names,
                          other.seed)["backbone.conv2"]
    score = (other.base_weight("backbone.conv2") * g).abs()
    assert float(score[~t1].max()) <= float(score[t1].min())


def test_taylor_mask_does_not_depend_on_what_was_applied_before():
    a = Session.open("digits-cnn")
    a.set_layer("backbone.conv1", sparsity=0.9)
    a.apply()
    a.set_layer("backbone.conv2", sparsity=0.5, criterion="taylor")
    b = Session.open("digits-cnn")
    b.set_layer("backbone.conv1", sparsity=0.9)
    b.set_layer("backbone.conv2", sparsity=0.5, criterion="taylor")
    assert torch.equal(a.masked_state()["backbone.conv2.weight"], b.masked_state()["backbone.conv2.weight"])


def test_taylor_refused_without_labels():
    s = Session.open("digits-cnn", "synthetic")
    with pytest.raises(PlanError, match="taylor"):
        s.set_layer("backbone.conv2", sparsity=0.5, criterion="taylor")


# ---------------------------------------------------------------------------- 4. refusals

def test_kernel_on_linear_is_refused():
    s = Session.open("digits-cnn")
    with pytest.raises(PlanError, match=r"(?s)kernel.*classifier|classifier.*kernel") as e:
        s.set_layer("classifier", sparsity=0.5, granularity="kernel")
    assert "Linear" in str(e.value) or "convolution" in str(e.value)
    assert s.plan.get("classifier").is_dense and not s.editor.can_undo


def test_nm_on_indivisible_width_is_refused():
    s = Session.open("digits-cnn")
    with pytest.raises(PlanError, match=r"(?s)2:4.*backbone\.conv0.*divisible"):
        s.set_layer("backbone.conv0", sparsity=0.5, granularity="2:4")
    with pytest.raises(PlanError, match="divisible"):
        s.set_layer("backbone.conv0", granularity="2:4")
    assert s.plan.get("backbone.conv0").is_dense


def test_channel_on_output_layer_is_refused():
    s = Session.open("digits-cnn")
    with pytest.raises(PlanError, match=r"(?s)channel.*classifier.*output"):
        s.set_layer("classifier", sparsity=0.5, granularity="channel")
    m = Session.open("digits-mlp")
    with pytest.raises(PlanError, match="output"):
        m.set_layer("fc3", sparsity=0.1, granularity="channel")


def test_model_wide_kernel_skips_the_linear():
    s = Session.open("digits-cnn")
    skipped = s.set_uniform(s.layer_names, 0.5, "kernel")
    assert set(skipped) == {"classifier"}
    assert "kernel" in skipped["classifier"]
    assert s.plan.get("classifier").is_dense
    for n in s.layer_names[:-1]:
        assert s.plan.get(n) == LayerPlan(0.5, "kernel", "l1")
    s.apply()
    assert int(torch.count_nonzero(s.module.classifier.weight)) == s.module.classifier.weight.numel()


def test_model_wide_channel_and_nm_skip_what_does_not_fit():
    s = Session.open("digits-cnn")
    assert set(s.set_uniform(s.layer_names, 0.5, "channel")) == {"classifier"}
    assert set(s.set_uniform(s.layer_names, 0.5, "2:4")) == {"backbone.conv0"}
    assert s.plan.get("classifier") == LayerPlan(0.5, "2:4", "l1")


@pytest.mark.parametrize("bad", (-0.1, 1.5, float("nan"), float("inf")))
def test_bad_sparsity_is_refused_for_a_layer(bad):
    s = Session.open("digits-cnn")
    with pytest.raises(PlanError, match="Sparsity"):
        s.set_layer("backbone.conv2", sparsity=bad)
    with pytest.raises(PlanError):
        s.layer_mask("backbone.conv2").counts(bad)
    with pytest.raises(PlanError):
        s.set_global(s.layer_names, bad)
    assert s.plan.active() == {}


@pytest.mark.parametrize("args", ((1.5, "element", "l1"), (float("nan"), "element", "l1"),
                                  (0.5, "blocks", "l1"), (0.5, "element", "magic")))
def test_bad_model_wide_request_is_refused(args):
    s = Session.open("digits-cnn")
    with pytest.raises(PlanError):
        s.set_uniform(s.layer_names, *args)


@pytest.mark.parametrize("gran", ("blocks", "4:2", "0:4", "2:4:8", ""))
def test_unknown_granularity_is_refused(gran):
    s = Session.open("digits-cnn")
    with pytest.raises(PlanError, match="granularity|pattern"):
        s.set_layer("backbone.conv2", sparsity=0.5, granularity=gran)


def test_unknown_criterion_and_layer_are_refused():
    s = Session.open("digits-cnn")
    with pytest.raises(PlanError, match="criterion 'magic'"):
        s.set_layer("backbone.conv2", sparsity=0.5, criterion="magic")
    with pytest.raises(PlanError, match="Unknown layer"):
        s.set_layer("backbone.conv9", sparsity=0.5)
    assert s.plan.active() == {} and not s.editor.can_undo


# ---------------------------------------------------------------------------- 8. non-finite weights

@pytest.fixture
def nan_mlp(tmp_path):
    from explorer.core.model.zoo import load_model

    sd = {k: v.clone() for k, v in load_model("digits-mlp").module.state_dict().items()}
    w = sd["fc1.weight"]
    # small-magnitude positions (would be pruned first if NaN were treated as small)
    order = w.abs().flatten().argsort()
    nan_idx = order[:5]
    inf_idx = order[5:7]
    w.view(-1)[nan_idx] = float("nan")
    w.view(-1)[inf_idx[0]] = float("inf")
    w.view(-1)[inf_idx[1]] = float("-inf")
    path = tmp_path / "nan_mlp.pt"
    torch.save(sd, path)
    return path, nan_idx, inf_idx


def test_nan_weights_are_reported_and_not_pruned(nan_mlp):
    path, nan_idx, inf_idx = nan_mlp
    s = Session.open("digits-mlp", weights=str(path))
    assert s.masks.nonfinite_layers() == {"fc1": 7}
    assert any("non-finite" in n and "fc1.weight" in n for n in s.require().notes)
    s.set_layer("fc1", sparsity=0.5, granularity="element", criterion="l1")
    out = s.masked_state()["fc1.weight"].flatten()
    assert bool(torch.isnan(out[nan_idx]).all())
    assert torch.equal(out[inf_idx], torch.tensor([float("inf"), float("-inf")]))
    # still exactly half pruned, among the finite weights
    assert int((out == 0).sum()) == 9600
    assert s.layer_counts("fc1").nonzero == 9600
    s.apply()
    assert bool(torch.isnan(s.module.fc1.weight.flatten()[nan_idx]).all())


@pytest.mark.parametrize("gran", ("vector", "channel", "2:4"))
def test_nan_groups_are_not_pruned_structured(nan_mlp, gran):
    path, nan_idx, inf_idx = nan_mlp
    s = Session.open("digits-mlp", weights=str(path))
    s.set_layer("fc1", sparsity=0.9, granularity=gran, criterion="l2")
    out = s.masked_state()["fc1.weight"].flatten()
    assert bool(torch.isnan(out[nan_idx]).all())
    assert bool(torch.isinf(out[inf_idx]).all())


def test_nan_weights_not_pruned_by_random_criterion(nan_mlp):
    path, nan_idx, inf_idx = nan_mlp
    s = Session.open("digits-mlp", weights=str(path))
    s.set_layer("fc1", sparsity=0.9, granularity="element", criterion="random")
    out = s.masked_state()["fc1.weight"].flatten()
    assert bool(torch.isnan(out[nan_idx]).all())
    assert bool(torch.isinf(out[inf_idx]).all())
