"""The sequential sensitivity scan (issue 24, item 1): each point on a growing seeded sample until the allocation
at the allowed drops is decided. Its allocations equal the exact scan's on the built-ins; every point records the
samples it used and an interval that holds the exact accuracy."""
from __future__ import annotations

import pytest

from explorer.core.analyse.allocate import allocate_by_drop
from explorer.core.analyse.sensitivity import ScanResult, ScanSpec, scan
from explorer.core.analyse.sequential import interval, states
from explorer.core.session import Session

DROPS = (0.5, 1.0, 2.0)
SPARSITIES = [0.5, 0.8, 0.9]


@pytest.mark.parametrize("model", ["digits-cnn", "digits-mlp", "digits-vgg"])
def test_same_allocation_as_the_exact_scan(model):
    s = Session.open(model)
    layers = s.layer_names[::3] if model == "digits-vgg" else None     # a third of VGG's layers keeps it quick
    exact = scan(s, ScanSpec(SPARSITIES, layers=layers))
    fast = scan(s, ScanSpec(SPARSITIES, layers=layers, exact=False, drops=DROPS))
    assert fast.sequential["drops"] == list(DROPS) and sum(fast.sequential["stages"]) == exact.samples
    assert exact.sequential is None
    for d in DROPS:
        assert allocate_by_drop(s, fast, d).sparsities == allocate_by_drop(s, exact, d).sparsities, d
    N = exact.samples
    for lf, le in zip(fast.layers, exact.layers):
        assert lf["name"] == le["name"]
        for acc, n, (lo, hi), true in zip(lf["accuracy"], lf["samples"], lf["interval"], le["accuracy"]):
            assert 0 < n <= N
            assert lo - 1e-9 <= true <= hi + 1e-9              # the interval holds the exact value
            assert lo - 1e-9 <= acc <= hi + 1e-9
            if n == N:
                assert acc == pytest.approx(true, abs=1e-9) and lo == pytest.approx(hi)
    # it evaluated fewer samples than the exact scan
    assert sum(n for l in fast.layers for n in l["samples"]) < N * len(SPARSITIES) * len(fast.layers)
    # the JSON keeps what each point used
    again = ScanResult.from_json(fast.to_json())
    assert again.layers[0]["samples"] == fast.layers[0]["samples"] and again.sequential == fast.sequential


def test_interval_and_decisions():
    assert interval(30, 40, 100) == (30.0, 90.0)
    assert interval(90, 100, 100) == (90.0, 90.0)
    assert states(*interval(95, 96, 100), 99.5, DROPS) == [0, 0, 0]     # 95..99 straddles 99, 98.5 and 97.5
    assert states(*interval(98, 99, 100), 99.5, DROPS) == [0, 0, 1]     # 98..99: within 2 for sure
    assert states(50.0, 60.0, 99.0, DROPS) == [-1, -1, -1]
    assert states(99.0, 99.0, 99.0, DROPS) == [1, 1, 1]


def test_cli_sensitivity_is_sequential_by_default_and_exact_on_request(tmp_path, capsys):
    """`sensitivity` runs the sequential scan unless --exact; the JSON says which ran, and per point the samples
    and interval; the allocations at 0.5/1/2 points from both files are the same plans."""
    import json

    from explorer.cli import main
    from explorer.core.analyse.allocate import allocate_from_file

    fast_f, exact_f = tmp_path / "fast.json", tmp_path / "exact.json"
    common = ["sensitivity", "--model", "digits-mlp", "--sparsities", "0.5,0.8,0.9"]
    assert main([*common, "--out", str(fast_f)]) == 0
    assert json.loads(capsys.readouterr().out)["exact"] is False
    assert main([*common, "--exact", "--out", str(exact_f)]) == 0
    fast, exact = json.loads(fast_f.read_text()), json.loads(exact_f.read_text())
    assert fast["exact"] is False and fast["sequential"]["drops"] == [0.5, 1.0, 2.0]
    assert exact["exact"] is True and "sequential" not in exact
    N = exact["samples"]
    for l in fast["layers"]:
        assert len(l["samples"]) == len(l["interval"]) == 3
        assert all(0 < n <= N for n in l["samples"]) and all(lo <= hi for lo, hi in l["interval"])
    assert any(n < N for l in fast["layers"] for n in l["samples"])      # it did sample
    s = Session.open("digits-mlp")
    for d in DROPS:
        pf, info = allocate_from_file(s, fast_f, d)
        pe, _ = allocate_from_file(s, exact_f, d)
        assert pf == pe, d
        assert len(info["notes"]) == 1                       # decided at this drop: no caveat
    # at a drop it was not decided for, the allocation says so
    _, info = allocate_from_file(s, fast_f, 1.5)
    assert "--exact" in info["notes"][-1]
    _, info = allocate_from_file(s, exact_f, 1.5)
    assert len(info["notes"]) == 1


@pytest.mark.parametrize("bad", ["", "x", "-1", "nan", "inf"])
def test_cli_sensitivity_refuses_bad_drops(tmp_path, capsys, bad):
    from explorer.cli import main

    f = tmp_path / "S.json"
    assert main(["sensitivity", "--model", "digits-mlp", "--drops", bad, "--out", str(f)]) == 2
    assert not f.exists() and "drop" in capsys.readouterr().err


class _SizeView(__import__("torch").nn.Module):
    """Keeps x.size(0) for a later view: a cache that cannot be cut by samples."""

    def __init__(self):
        import torch
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)

    def forward(self, x):
        n = x.size(0)
        return self.b(self.a(x).view(n, -1))


@pytest.mark.parametrize("model", ["size-view", "digits-cnn"])
def test_stage_ranges_replay_what_a_fresh_forward_gives(model):
    """The stages are views of one permuted cache where it can be cut, else traced anew per range; either way a
    range's replay (dense, and with a layer changed) equals the model's own forward on those samples."""
    import torch

    from explorer.core.analyse.replay import Replayer
    from explorer.core.analyse.sequential import StagedSplit

    torch.manual_seed(0)
    if model == "size-view":
        module, x = _SizeView().eval(), torch.randn(40, 4)
        layer = "a"
    else:
        s = Session.open(model)
        module, x = s.module.eval(), s.dataset.example_input(40)
        layer = "backbone.conv1"
    y = torch.zeros(x.shape[0], dtype=torch.long)
    staged = StagedSplit(module, x, y, seed=3, replayer=Replayer(module, x))
    assert (staged.full is None) == (model == "size-view")
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    w = dict(module.named_parameters())[f"{layer}.weight"].detach()
    for a, b in [(0, 5), (5, 40), (10, 20)]:
        replayer, yy, _ = staged.part(a, b)
        with torch.no_grad():
            want = module(x[perm[a:b]])
        torch.testing.assert_close(replayer.output, want, rtol=1e-4, atol=1e-5)
        got = replayer.run_variants({layer}, [{f"{layer}.weight": w}])      # the layer swapped in and replayed
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        half = replayer.run_variants({layer}, [{f"{layer}.weight": w * 0.5}])
        assert not torch.allclose(half, want)
        assert yy.shape[0] == b - a
