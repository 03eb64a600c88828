"""The speed map (issue 22): sparse kernels equal the dense layers, break-even, refusals."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from explorer.core.analyse import sparse_kernels as sk
from explorer.core.analyse.speed import break_even, layer_speed, parse_sparsities, speed_map, supported_kernels
from explorer.core.errors import ExplorerError

CASES = [
    (lambda: nn.Linear(20, 7), (5, 20)),
    (lambda: nn.Linear(20, 7), (1, 20)),                 # the single-row (addmv) path
    (lambda: nn.Linear(20, 7, bias=False), (2, 3, 20)),  # leading dimensions
    (lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1), (2, 3, 9, 11)),
    (lambda: nn.Conv2d(3, 8, (3, 2), stride=(1, 2), padding=(2, 1), dilation=2, bias=False), (1, 3, 9, 11)),
    (lambda: nn.Conv1d(4, 6, 3, padding=1, stride=2), (3, 4, 17)),
]


@pytest.mark.parametrize("make,shape", CASES)
def test_csr_kernels_equal_dense_layers(make, shape):
    torch.manual_seed(0)
    layer = make()
    with torch.no_grad():
        layer.weight.copy_(sk.magnitude_masked(layer.weight, 0.7))
    x = torch.randn(*shape)
    csr = sk.csr_module(layer)
    assert csr.weight.layout == torch.sparse_csr
    assert csr.weight.values().numel() == int((layer.weight != 0).sum())
    with torch.no_grad():
        ref, got = layer(x), csr(x)
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        scripted = torch.jit.script(csr)       # the sparse runtime is saved scripted
        torch.testing.assert_close(scripted(x), ref, rtol=1e-5, atol=1e-5)


def test_magnitude_mask_is_exact_and_keeps_largest():
    w = torch.randn(10, 10)
    m = sk.magnitude_masked(w, 0.9)
    assert int((m == 0).sum()) == 90
    kept = m[m != 0].abs()
    assert kept.min() >= w.abs().flatten().sort().values[90] - 1e-7


def test_channel_kernel_is_the_first_rows():
    layer = nn.Conv2d(3, 10, 3)
    small = sk.fewer_channels(layer, 0.7)
    x = torch.randn(2, 3, 6, 6)
    assert small.out_channels == 3
    with torch.no_grad():
        torch.testing.assert_close(small(x), layer(x)[:, :3])


def test_two_four_mask_pattern():
    m = sk.two_four_mask(torch.randn(8, 16))
    assert (m.reshape(-1, 4).sum(1) == 2).all()


def test_break_even_is_from_which_on_faster():
    assert break_even([0.5, 0.8, 0.9, 0.95], [0.2, 1.2, 0.9, 3.0]) == 0.95
    assert break_even([0.5, 0.9], [1.5, 2.0]) == 0.5
    assert break_even([0.5, 0.9], [0.5, 0.8]) is None


@pytest.mark.parametrize("text", ["0,0.5", "0.5,1", "a", "1.5", "", "nan"])
def test_bad_sparsities_refused(text):
    with pytest.raises(ExplorerError, match="sparsit"):
        parse_sparsities(text)


def test_parse_sparsities_sorted_unique():
    assert parse_sparsities("0.9, 0.5,0.9") == (0.5, 0.9)


def test_layer_without_sparse_kernel_says_why():
    conv = nn.Conv2d(4, 4, 3, groups=2)
    ok, why = supported_kernels(conv, torch.device("cpu"))
    assert "csr" not in ok and "grouped" in why["csr"]
    with pytest.raises(ExplorerError, match="no sparse kernel.*grouped"):
        layer_speed("g", conv, (4, 6, 6), sparsities="0.5", runs=1, warmup=0)
    mha = nn.MultiheadAttention(8, 2)
    assert "MultiheadAttention" in supported_kernels(mha, torch.device("cpu"))[1]["csr"]


def test_two_four_skipped_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: tests/test_speed_cuda covers 2:4")
    ok, why = supported_kernels(nn.Linear(8, 8), torch.device("cpu"))
    assert "2:4" not in ok and "CUDA" in why["2:4"]


def test_speed_map_shape_of_result():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 16), nn.ReLU(),
                      nn.Identity(), nn.Linear(16, 3))
    skipped: dict = {}
    sm = speed_map(m, ["0", "3", "6"], torch.randn(1, 1, 8, 8), "toy", batch=2, sparsities="0.5,0.9", runs=1,
                   skipped=skipped)
    d = sm.as_dict()
    assert set(d) == {"model", "device", "threads", "batch", "layers"}
    assert d["batch"] == 2 and [l["name"] for l in d["layers"]] == ["0", "3", "6"]
    assert d["layers"][1]["shape"] == [16, 144]
    for layer in d["layers"]:
        kinds = [k["kernel"] for k in layer["kernels"]]
        assert kinds[:1] == ["csr"] and "channel" in kinds
        for k in layer["kernels"]:
            assert set(k) == {"kernel", "sparsities", "speedup", "break_even"}
            assert k["sparsities"] == [0.5, 0.9] and len(k["speedup"]) == 2 and all(v > 0 for v in k["speedup"])
            assert k["break_even"] == break_even(k["sparsities"], k["speedup"])
    assert not skipped


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_two_four_on_cuda():
    dev = torch.device("cuda")
    layer = nn.Linear(256, 128).to(dev)
    ok, why = supported_kernels(layer, dev)
    if "2:4" not in ok:
        pytest.skip(why["2:4"])
    dense16, ss = sk.semi_structured_linear(layer)
    x = torch.randn(64, 256, device=dev, dtype=torch.float16)
    with torch.no_grad():
        torch.testing.assert_close(ss(x), dense16(x), rtol=1e-2, atol=1e-2)
    r = layer_speed("fc", layer, (256,), batch=64, sparsities="0.5", runs=2, warmup=1)
    assert r.kernel("2:4") is not None
