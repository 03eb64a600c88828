"""Layer discovery and MAC counting (explorer.core.model.layers) and the storage formulas (explorer.core.model.metrics).

MACs are checked three independent ways: against torchprofile (the convention
the product claims to follow), against the textbook formula computed from each
module's attributes and its output shape (forward hooks), and against a few
numbers worked out by hand.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse
import torch
import torchprofile
import torchvision
from torch import nn

from explorer.core.errors import ShapeMismatchError
from explorer.core.model import metrics, nets
from explorer.core.model.layers import PRUNABLE_TYPES, profile_model, prunable_modules


def _model(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    if name == "lab-vgg":
        return nets.LabVGG().eval(), (3, 32, 32)
    if name == "digits-cnn":
        return nets.DigitsCNN().eval(), (1, 8, 8)
    return getattr(torchvision.models, name)(weights=None).eval(), (3, 224, 224)


@pytest.fixture(scope="module")
def profiles():
    cache = {}

    def get(name):
        if name not in cache:
            m, shape = _model(name)
            cache[name] = (m, shape, profile_model(m, shape))
        return cache[name]
    return get


def _hand_macs(model: nn.Module, shape) -> dict[str, int]:
    """out_h*out_w*out_c * in_c/groups * kh*kw for convs, in*out for linears, from forward hooks."""
    out_shapes: dict[str, tuple[int, ...]] = {}

    def hook(name):
        def record(mod, inp, out):
            out_shapes.setdefault(name, tuple(out.shape))  # returns None: the output is left alone
        return record

    hooks = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    macs = {}
    for n, m in model.named_modules():
        if n not in out_shapes:
            continue
        if isinstance(m, nn.Conv2d):
            _, oc, oh, ow = out_shapes[n]
            kh, kw = m.kernel_size
            macs[n] = oh * ow * oc * (m.in_channels // m.groups) * kh * kw
        elif isinstance(m, nn.Linear):
            macs[n] = m.in_features * m.out_features * math.prod(out_shapes[n][:-1])
    return macs


# ============================================================================ layer discovery

def test_resnet18_layers_and_params(profiles):
    model, _, p = profiles("resnet18")
    assert len(p.layers) == 21
    assert p.total_params == 11_689_512
    assert p.names[0] == "conv1" and p.names[-1] == "fc"
    assert {l.kind for l in p.layers} == {"Conv2d", "Linear"}
    assert sum(1 for l in p.layers if "downsample" in l.name) == 3
    assert p.prunable_params == sum(m.weight.numel() for _, m in prunable_modules(model))
    assert p.skipped == []
    assert p.output_shape == (1000,)
    fc = p.layer("fc")
    assert fc.weight_shape == (1000, 512) and fc.params == 512_000 and fc.bias
    assert p.layer("conv1").weight_shape == (64, 3, 7, 7) and not p.layer("conv1").bias
    assert [l.order for l in p.layers] == list(range(21))


@pytest.mark.parametrize("name,out_layer", [("resnet18", "fc"), ("mobilenet_v2", "classifier.1"),
                                            ("lab-vgg", "classifier"), ("digits-cnn", "classifier")])
def test_output_layer_is_flagged(profiles, name, out_layer):
    _, _, p = profiles(name)
    flagged = [l.name for l in p.layers if l.is_output]
    assert flagged == [out_layer]


def test_unused_layer_is_skipped():
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.spare = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x.flatten(1))

    p = profile_model(WithSpare().eval(), (1, 2, 2))
    assert p.names == ["fc"]
    assert p.skipped == ["spare"]
    assert p.total_params == 4 * 3 + 3 + 4 * 4 + 4


def test_profile_does_not_change_training_mode():
    m = nets.DigitsCNN().train()
    profile_model(m, (1, 8, 8))
    assert m.training


def test_profile_shape_mismatch():
    with pytest.raises(ShapeMismatchError) as ei:
        profile_model(nets.DigitsCNN().eval(), (3, 8, 8))
    assert "(3, 8, 8)" in str(ei.value)


# ============================================================================ MACs

@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "lab-vgg", "digits-cnn"])
def test_total_macs_equal_torchprofile(profiles, name):
    model, shape, p = profiles(name)
    expected = torchprofile.profile_macs(model, torch.zeros(1, *shape))
    assert p.total_macs == expected


def test_lab_vgg_macs_known_value(profiles):
    _, _, p = profiles("lab-vgg")
    assert p.total_macs == 606_164_480


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "lab-vgg"])
def test_per_layer_macs_match_formula(profiles, name):
    model, shape, p = profiles(name)
    hand = _hand_macs(model, shape)
    assert {l.name: l.macs for l in p.layers} == hand
    # the prunable layers carry most of the work; the rest is BN/pooling/elementwise
    assert 0.95 * p.total_macs < sum(hand.values()) <= p.total_macs


def test_per_layer_macs_by_hand(profiles):
    _, _, r = profiles("resnet18")
    assert r.layer("conv1").macs == 112 * 112 * 64 * 3 * 7 * 7 == 118_013_952
    assert r.layer("layer1.0.conv1").macs == 56 * 56 * 64 * 64 * 3 * 3
    assert r.layer("layer2.0.downsample.0").macs == 28 * 28 * 128 * 64 * 1 * 1
    assert r.layer("layer4.1.conv2").macs == 7 * 7 * 512 * 512 * 3 * 3
    assert r.layer("fc").macs == 512 * 1000
    assert r.layer("conv1").output_shape == (64, 112, 112)
    assert r.layer("conv1").uses == 112 * 112

    _, _, mb = profiles("mobilenet_v2")
    dw = mb.layer("features.1.conv.0.0")  # depthwise: groups == channels == 32
    assert dw.groups == 32 and dw.weight_shape == (32, 1, 3, 3)
    assert dw.macs == 112 * 112 * 32 * (32 // 32) * 3 * 3

    _, _, v = profiles("lab-vgg")
    assert v.layer("backbone.conv0").macs == 32 * 32 * 64 * 3 * 3 * 3
    assert v.layer("backbone.conv7").macs == 4 * 4 * 512 * 512 * 3 * 3


def test_layerinfo_matrix_shape(profiles):
    _, _, r = profiles("resnet18")
    assert r.layer("conv1").matrix_shape == (64, 3 * 7 * 7)
    assert r.layer("fc").matrix_shape == (1000, 512)
    assert r.layer("conv1").is_conv and not r.layer("fc").is_conv


def test_scripted_model_profile_matches_eager():
    torch.manual_seed(0)
    m = nets.DigitsCNN().eval()
    eager = profile_model(m, (1, 8, 8))
    scripted = profile_model(torch.jit.script(m), (1, 8, 8))
    assert [(l.name, l.macs, l.params) for l in scripted.layers] == [(l.name, l.macs, l.params) for l in eager.layers]
    assert scripted.total_macs == eager.total_macs


def test_traced_model_profile_matches_eager():
    torch.manual_seed(0)
    m = nets.DigitsCNN().eval()
    eager = profile_model(m, (1, 8, 8))
    traced = profile_model(torch.jit.trace(m, torch.zeros(1, 1, 8, 8)), (1, 8, 8))
    assert [(l.name, l.macs) for l in traced.layers] == [(l.name, l.macs) for l in eager.layers]
    assert traced.total_macs == eager.total_macs


# ============================================================================ storage formulas

def test_dense_bytes():
    assert metrics.dense_bytes(0) == 0
    assert metrics.dense_bytes(10) == 40
    assert metrics.dense_bytes(10, value_bytes=2) == 20


@pytest.mark.parametrize("nnz,rows,expected", [
    (0, 1, 8),              # only indptr: 2 row pointers x 4 bytes
    (0, 10, 44),
    (5, 2, 5 * 8 + 3 * 4),  # 40 + 12
    (100, 10, 100 * 8 + 11 * 4),
])
def test_csr_bytes(nnz, rows, expected):
    assert metrics.csr_bytes(nnz, rows) == expected


def test_csr_bytes_fp16_values():
    assert metrics.csr_bytes(10, 4, value_bytes=2) == 10 * (2 + 4) + 5 * 4


@pytest.mark.parametrize("nnz,numel,expected", [
    (0, 0, 0),
    (0, 1, 1),       # one bit still takes a byte
    (0, 8, 1),
    (0, 9, 2),
    (3, 16, 12 + 2),
    (10, 100, 40 + 13),
])
def test_bitmask_bytes(nnz, numel, expected):
    assert metrics.bitmask_bytes(nnz, numel) == expected


@pytest.mark.parametrize("nnz,numel,rows", [(0, 100, 10), (10, 100, 2), (90, 100, 10), (1, 4096, 64),
                                            (3000, 4096, 64), (100, 100, 10)])
def test_sparse_bytes_is_smaller_format(nnz, numel, rows):
    csr, bm = metrics.csr_bytes(nnz, rows), metrics.bitmask_bytes(nnz, numel)
    assert metrics.sparse_bytes(nnz, numel, rows) == min(csr, bm)
    assert metrics.sparse_format(nnz, numel, rows) == ("csr" if csr <= bm else "bitmask")


def test_sparse_bytes_hand_cases():
    # 10 of 100 weights kept in a 2x50 matrix: CSR 10*8 + 3*4 = 92, bitmask 10*4 + 13 = 53
    assert metrics.sparse_bytes(10, 100, 2) == 53
    assert metrics.sparse_format(10, 100, 2) == "bitmask"
    # 1 of 4096 kept in a 64x64 matrix: CSR 8 + 65*4 = 268, bitmask 4 + 512 = 516
    assert metrics.sparse_bytes(1, 4096, 64) == 268
    assert metrics.sparse_format(1, 4096, 64) == "csr"


@pytest.mark.parametrize("shape,density", [((64, 147), 0.1), ((300, 64), 0.5), ((10, 100), 0.02), ((1, 1), 1.0)])
def test_csr_bytes_matches_scipy(shape, density):
    rng = np.random.default_rng(42)
    dense = rng.standard_normal(shape).astype(np.float32)
    dense[rng.random(shape) >= density] = 0.0
    m = scipy.sparse.csr_matrix(dense)
    assert m.data.dtype == np.float32
    assert m.indices.dtype == np.int32 and m.indptr.dtype == np.int32
    actual = m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    assert metrics.csr_bytes(m.nnz, shape[0]) == actual


def test_bitmask_bytes_matches_packbits():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((37, 53)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0
    mask = np.packbits(w != 0)
    values = w[w != 0]
    assert metrics.bitmask_bytes(int((w != 0).sum()), w.size) == mask.nbytes + values.nbytes


def test_layer_counts_properties():
    c = metrics.LayerCounts(params=100, nonzero=10, rows=2, macs=1000, nonzero_macs=100)
    assert c.sparsity == pytest.approx(0.9)
    assert c.dense_bytes == 400
    assert c.csr_bytes == 92 and c.bitmask_bytes == 53 and c.sparse_bytes == 53


def test_totals_combines_layers_with_the_rest():
    a = metrics.LayerCounts(params=100, nonzero=10, rows=2, macs=1000, nonzero_macs=100)
    b = metrics.LayerCounts(params=50, nonzero=50, rows=5, macs=500, nonzero_macs=500)
    # model: 150 prunable + 20 other parameters, 2000 MACs of which 500 outside the layers
    t = metrics.totals([a, b], model_params=170, model_bytes=680, model_macs=2000)
    assert t.prunable_params == 150 and t.prunable_nonzero == 60
    assert t.nonzero_params == 80
    assert t.sparsity == pytest.approx(1 - 60 / 150)
    assert t.nonzero_macs == 500 + 100 + 500
    assert t.sparse_bytes == 80 + 53 + min(b.csr_bytes, b.bitmask_bytes)
    assert t.compression_ratio == pytest.approx(680 / t.sparse_bytes)


def test_param_and_nonzero_counts():
    m = nn.Linear(4, 3)
    with torch.no_grad():
        m.weight.zero_()
        m.weight[0, 0] = 1.0
        m.bias.fill_(2.0)
    assert metrics.param_count(m) == 15
    assert metrics.param_bytes(m) == 60
    assert metrics.nonzero_count(m) == 1 + 3


def test_format_helpers():
    assert metrics.format_count(11_689_512) == "11.69M"
    assert metrics.format_count(999) == "999"
    assert metrics.format_bytes(1024) == "1.00 KiB"
    assert metrics.format_bytes(100) == "100 B"
