"""Structured compaction (Torch-Pruning) and measured latency."""
from __future__ import annotations

import copy

import pytest
import torch
from torchprofile import profile_macs

from explorer.core.analyse.latency import Latency, measure_latencies, measure_latency
from explorer.core.deploy import export
from explorer.core.errors import Cancelled, ExplorerError
from explorer.core.jobs import CancelToken
from explorer.core.model.layers import profile_model
from explorer.core.model.metrics import param_count
from explorer.core.prune.compact import channel_removals, compact_model, has_structure
from explorer.core.prune.plan import LayerPlan
from explorer.core.session import Session
from tests.helpers import bits


def randomize_norms(session: Session) -> None:
    """torchvision's init has BatchNorm weight 1, bias 0, mean 0, var 1: with all-zero biases a missing bias
    mask would go unnoticed, and deep random nets collapse their outputs to ~0. Random norms fix both."""
    g = torch.Generator().manual_seed(0)
    sd = {k: v.clone() for k, v in session.base_state().items()}
    for n, m in session.module.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            sd[f"{n}.weight"] = torch.rand(c, generator=g) + 0.5
            sd[f"{n}.bias"] = torch.rand(c, generator=g) - 0.5
            sd[f"{n}.running_mean"] = torch.randn(c, generator=g) * 0.1
            sd[f"{n}.running_var"] = torch.rand(c, generator=g) + 0.5
    session.set_base(sd, "random norms")


class Compacted:
    def __init__(self, session, plan, state, removals, example, compacted, skipped):
        self.session, self.plan, self.state, self.removals = session, plan, state, removals
        self.example, self.compacted, self.skipped = example, compacted, skipped


def prepare(spec, dataset=None, input_shape=None, sparsity=0.5, names=None, random_norms=False) -> Compacted:
    s = Session.open(spec, dataset, input_shape=input_shape) if input_shape else Session.open(spec, dataset)
    if random_norms:
        randomize_norms(s)
    skipped = s.set_uniform(names or s.layer_names, sparsity, "channel")
    plan = s.plan
    s.apply(plan)
    state = {k: v.detach().clone() for k, v in s.module.state_dict().items()}
    example = s.dataset.example_input(3)
    removals = channel_removals(s, plan)
    compacted = compact_model(s.module, state, removals, example)
    return Compacted(s, plan, state, removals, example, compacted, skipped)


ARCHS = {
    "digits-cnn": dict(spec="digits-cnn"),
    "resnet18": dict(spec="torchvision:resnet18", dataset="synthetic", input_shape=(3, 64, 64), random_norms=True),
    "mobilenet_v2": dict(spec="torchvision:mobilenet_v2", dataset="synthetic", input_shape=(3, 64, 64),
                         random_norms=True),
}


_PREPARED: dict[str, Compacted] = {}


def prepared(name: str) -> Compacted:
    """One prepared (pruned + compacted) model per architecture for the whole module."""
    if name not in _PREPARED:
        _PREPARED[name] = prepare(**ARCHS[name])
    return _PREPARED[name]


@pytest.fixture(scope="module", autouse=True)
def _drop_prepared():
    yield
    _PREPARED.clear()


@pytest.fixture(params=list(ARCHS))
def arch(request):
    return request.param, prepared(request.param)


def outputs(module, x):
    with torch.inference_mode():
        return module.eval()(x)


# ---------------------------------------------------------------------------- compaction on three architectures

def test_compacted_outputs_equal_the_masked_model(arch):
    name, c = arch
    # only the output layer is refused (its classes must stay)
    assert len(c.skipped) == 1
    assert has_structure(c.plan)
    assert c.removals, "the plan removes channels"
    masked = outputs(c.session.module, c.example)
    got = outputs(c.compacted, c.example)
    assert got.shape == masked.shape
    scale = float(masked.abs().max())
    assert scale > 1e-3, "outputs too small to compare meaningfully"
    diff = float((masked - got).abs().max())
    assert diff <= 1e-4 * scale, f"{name}: compacted differs by {diff:.3g} (output scale {scale:.3g})"
    # and the masking really changed the network (compaction equals the masked model, not the dense one)
    dense = copy.deepcopy(c.session.module)
    dense.load_state_dict(c.session.base_state())
    assert float((outputs(dense, c.example) - masked).abs().max()) > 1e-3 * scale


def test_compacted_model_is_smaller_with_exact_macs(arch):
    name, c = arch
    dense_params = param_count(c.session.module)
    assert param_count(c.compacted) < dense_params
    shape = c.session.require().input_shape
    ours = profile_model(c.compacted, shape).total_macs
    theirs = profile_macs(copy.deepcopy(c.compacted).eval(), c.example[:1])
    assert ours == theirs
    assert ours < c.session.profile.total_macs
    # every group root lost exactly the channels listed
    dense_mods = dict(c.session.module.named_modules())
    comp_mods = dict(c.compacted.named_modules())
    for root, idxs in c.removals.items():
        assert comp_mods[root].weight.shape[0] == dense_mods[root].weight.shape[0] - len(idxs), root
    # the compacted weights are a dense network: no all-zero filter is left in any pruned layer
    for root in c.removals:
        w = comp_mods[root].weight.detach()
        assert bool((w.flatten(1).abs().sum(1) > 0).all()), root


def test_digits_cnn_compaction_halves_each_conv():
    c = prepared("digits-cnn")
    convs = [m for m in c.compacted.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == [16, 16, 32, 32]
    assert [m.in_channels for m in convs] == [1, 16, 16, 32]
    assert c.compacted.classifier.in_features == 32 * 2 * 2
    bns = [m for m in c.compacted.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [m.num_features for m in bns] == [16, 16, 32, 32]
    # the kept channels are the ones the mask kept: same BatchNorm values, in order
    keep0 = c.state["backbone.bn0.weight"] != 0
    assert torch.equal(c.compacted.backbone.bn0.weight.detach(), c.state["backbone.bn0.weight"][keep0])
    assert torch.equal(c.compacted.backbone.bn0.running_mean, c.state["backbone.bn0.running_mean"][keep0])
    # the session's module is untouched (compaction works on a copy)
    assert c.session.module.backbone.conv0.out_channels == 32


def test_lab_vgg_thirty_percent_matches_the_lecture():
    convs = [f"backbone.conv{i}" for i in range(7)]
    c = prepare("lab-vgg", sparsity=0.3, names=convs)
    assert c.skipped == {}
    assert c.session.profile.total_macs == 606_164_480          # dense, torchprofile's count
    macs = profile_model(c.compacted, (3, 32, 32)).total_macs
    assert macs == 305_388_064
    assert profile_macs(copy.deepcopy(c.compacted).eval(), c.example[:1]) == 305_388_064
    params = param_count(c.compacted)
    assert abs(params - 5.01e6) < 0.005e6, params
    outs = [m.out_channels for m in c.compacted.modules() if isinstance(m, torch.nn.Conv2d)]
    assert outs == [45, 90, 179, 179, 358, 358, 358, 512]          # keep int(round(C * 0.7))
    masked, got = outputs(c.session.module, c.example), outputs(c.compacted, c.example)
    assert float((masked - got).abs().max()) <= 1e-4 * float(masked.abs().max())


def test_plan_without_channel_layers_compacts_to_an_identical_network():
    s = Session.open("digits-cnn")
    s.set_uniform(s.layer_names, 0.5, "element")
    plan = s.plan
    s.apply(plan)
    assert not has_structure(plan)
    assert channel_removals(s, plan) == {}
    assert not has_structure(plan.with_layer("backbone.conv1", LayerPlan(0.0, "channel", "l1")))
    assert has_structure(plan.with_layer("backbone.conv1", LayerPlan(0.25, "channel", "l1")))
    state = {k: v.clone() for k, v in s.module.state_dict().items()}
    ex = s.dataset.example_input(8)
    c = compact_model(s.module, state, channel_removals(s, plan), ex)
    assert c is not s.module
    cs = c.state_dict()
    assert set(cs) == set(state)
    for k in state:
        assert torch.equal(bits(cs[k]), bits(state[k])), k
    assert torch.equal(outputs(c, ex), outputs(s.module, ex))
    assert profile_model(c, (1, 8, 8)).total_macs == s.profile.total_macs


def test_mixed_plan_removes_only_the_channel_layers():
    s = Session.open("digits-cnn")
    s.set_layer("backbone.conv1", sparsity=0.25, granularity="channel")
    s.set_layer("backbone.conv2", sparsity=0.5, granularity="element")     # the consumer of conv1
    s.set_layer("backbone.conv3", sparsity=0.6, granularity="element")
    plan = s.plan
    assert has_structure(plan)
    s.apply(plan)
    removals = channel_removals(s, plan)
    assert list(removals) == ["backbone.conv1"] and len(removals["backbone.conv1"]) == 8
    # the removed indices are exactly the channels the mask zeroed
    zeroed = torch.nonzero(s.module.backbone.bn1.weight.detach() == 0).flatten().tolist()
    assert sorted(removals["backbone.conv1"]) == zeroed
    state = {k: v.clone() for k, v in s.module.state_dict().items()}
    ex = s.dataset.example_input(8)
    c = compact_model(s.module, state, removals, ex)
    assert c.backbone.conv1.out_channels == 24 and c.backbone.conv2.in_channels == 24
    kept = [i for i in range(32) if i not in removals["backbone.conv1"]]
    assert torch.equal(bits(c.backbone.conv1.weight.detach()), bits(state["backbone.conv1.weight"][kept]))
    # the consumer keeps exactly its remaining input slices, element-pruned zeros included
    assert torch.equal(bits(c.backbone.conv2.weight.detach()), bits(state["backbone.conv2.weight"][:, kept]))
    assert c.backbone.conv3.out_channels == 64
    # element-pruned zeros survive compaction
    assert int((c.backbone.conv3.weight == 0).sum()) == round(0.6 * 64 * 64 * 9)
    a, b = outputs(s.module, ex), outputs(c, ex)
    assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max())


def test_compacting_torchscript_is_refused():
    s = Session.open("digits-cnn")
    ex = s.dataset.example_input(2)
    scripted = torch.jit.trace(copy.deepcopy(s.module).eval(), ex)
    state = {k: v.clone() for k, v in scripted.state_dict().items()}
    with pytest.raises(ExplorerError, match="TorchScript"):
        compact_model(scripted, state, {"backbone.conv0": [0, 1]}, ex)


def test_compaction_cancel_raises():
    s = Session.open("digits-cnn")
    s.set_uniform(["backbone.conv0", "backbone.conv1"], 0.5, "channel")
    s.apply()
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        compact_model(s.module, s.module.state_dict(), channel_removals(s, s.plan), s.dataset.example_input(2),
                      cancel=token)


@pytest.mark.parametrize("which", ["digits-cnn", "resnet18"])
def test_export_of_the_compacted_model_reloads(which, tmp_path):
    c = prepared(which)
    ex = c.example
    want = outputs(c.compacted, ex)
    masked = outputs(c.session.module, ex)
    p = export.export_module(c.compacted, tmp_path / "model_compact.pt", ex)
    back = torch.load(p, map_location="cpu", weights_only=False)
    assert param_count(back) == param_count(c.compacted) < param_count(c.session.module)
    assert torch.allclose(outputs(back, ex), want, rtol=0, atol=0)
    assert float((outputs(back, ex) - masked).abs().max()) <= 1e-4 * float(masked.abs().max())
    ts = export.export_torchscript(c.compacted, tmp_path / "model_compact.ts", ex)
    loaded = torch.jit.load(str(ts), map_location="cpu")
    got = outputs(loaded, ex)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
    # a different batch size works too (the trace is not tied to the example's batch)
    x1 = ex[:1]
    assert torch.allclose(outputs(loaded, x1), outputs(c.compacted, x1), rtol=1e-5,
                          atol=1e-6 * float(want.abs().max()))


# ---------------------------------------------------------------------------- latency

@pytest.fixture(scope="module")
def small_models():
    s = Session.open("digits-cnn")
    return s, s.dataset.example_input(2)


def other_thread_count() -> int:
    return 1 if torch.get_num_threads() != 1 else 2


def test_measure_latency_records_a_sane_median(small_models):
    s, ex = small_models
    module = copy.deepcopy(s.module).train()
    before = torch.get_num_threads()
    want = other_thread_count()
    calls = []
    module.register_forward_hook(lambda m, i, o: calls.append(torch.is_inference_mode_enabled()))
    lat = measure_latency(module, ex, runs=7, warmup=2, threads=want)
    assert isinstance(lat, Latency)
    assert lat.median_ms > 0 and lat.p10_ms > 0
    assert lat.p10_ms <= lat.median_ms <= lat.p90_ms
    assert lat.spread_ms == pytest.approx(lat.p90_ms - lat.p10_ms)
    assert (lat.runs, lat.batch, lat.threads) == (7, ex.shape[0], want)
    assert torch.get_num_threads() == before           # restored
    assert module.training                              # restored
    assert len(calls) == 9 and all(calls)               # warm-up + runs, all in inference mode
    d = lat.as_dict()
    assert set(d) == {"median_ms", "p10_ms", "p90_ms", "runs", "batch", "threads"}


def test_measure_latency_without_threads_uses_the_current_setting(small_models):
    s, ex = small_models
    module = copy.deepcopy(s.module).eval()
    lat = measure_latency(module, ex, runs=3, warmup=0)
    assert lat.threads == torch.get_num_threads()
    assert not module.training


@pytest.mark.parametrize("when", ["before", "midway"])
def test_measure_latency_cancel(small_models, when):
    s, ex = small_models
    module = copy.deepcopy(s.module).train()
    before = torch.get_num_threads()
    token = CancelToken()
    steps = []
    if when == "before":
        token.cancel()

    def progress(p):
        steps.append(p)
        if len(steps) == 3:
            token.cancel()
    with pytest.raises(Cancelled):
        measure_latency(module, ex, runs=50, warmup=2, threads=other_thread_count(), progress=progress,
                        cancel=token)
    assert len(steps) == (0 if when == "before" else 3)
    assert torch.get_num_threads() == before
    assert module.training


def test_measure_latencies_interleaves_every_model(small_models):
    s, ex = small_models
    models = {}
    order: list[str] = []
    for k in ("dense", "masked", "compact"):
        m = copy.deepcopy(s.module)
        m.register_forward_hook(lambda mod, i, o, k=k: order.append(k))
        models[k] = m
    before = torch.get_num_threads()
    want = other_thread_count()
    out = measure_latencies(models, ex, runs=4, warmup=1, threads=want)
    assert set(out) == set(models)
    for k, lat in out.items():
        assert lat.median_ms > 0 and lat.p10_ms <= lat.median_ms <= lat.p90_ms, k
        assert (lat.runs, lat.batch, lat.threads) == (4, 2, want), k
    assert torch.get_num_threads() == before
    # A B C A B C ...: (1 warm-up + 4 runs) rounds of every model
    assert order == ["dense", "masked", "compact"] * 5


def test_measure_latencies_cancel_restores_threads(small_models):
    s, ex = small_models
    models = {"a": copy.deepcopy(s.module), "b": copy.deepcopy(s.module)}
    before = torch.get_num_threads()
    token = CancelToken()
    n = []

    def progress(p):
        n.append(p)
        if len(n) == 5:
            token.cancel()
    with pytest.raises(Cancelled):
        measure_latencies(models, ex, runs=100, warmup=1, threads=other_thread_count(), progress=progress,
                          cancel=token)
    assert len(n) == 5
    assert torch.get_num_threads() == before


def test_measure_latencies_restores_training_mode(small_models):
    s, ex = small_models
    m = copy.deepcopy(s.module).train()
    measure_latencies({"m": m}, ex, runs=2, warmup=0)
    assert m.training
