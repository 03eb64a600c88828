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


def test_cli_precision_flag_reaches_the_scan(tmp_path, capsys):
    """`sensitivity --precision float32` runs without the screen and says why; `--precision bfloat16` (forced, even
    where emulated) screens and gives the float32 run's allocation; an unknown precision is a usage error."""
    import json

    from explorer.cli import main
    from explorer.core.analyse.allocate import allocate_from_file

    common = ["sensitivity", "--model", "digits-mlp", "--sparsities", "0.5,0.8,0.9"]
    f32, b16 = tmp_path / "f32.json", tmp_path / "b16.json"
    assert main([*common, "--precision", "float32", "--out", str(f32)]) == 0
    assert main([*common, "--precision", "bfloat16", "--out", str(b16)]) == 0
    capsys.readouterr()
    a, b = json.loads(f32.read_text())["sequential"], json.loads(b16.read_text())["sequential"]
    assert a["precision"] == "float32" and a.get("precision_reason")
    assert b["precision"] == "bfloat16" and "screen" in b
    s = Session.open("digits-mlp")
    for d in DROPS:
        assert allocate_from_file(s, f32, d)[0] == allocate_from_file(s, b16, d)[0], d
    with pytest.raises(SystemExit):
        main([*common, "--precision", "fp8", "--out", str(tmp_path / "x.json")])
    assert "precision" in capsys.readouterr().err


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


# ---------------------------------------------------------------- the bfloat16 screen (screen.py)

def _whole_split_accuracies(fast, exact):
    N = exact.samples
    return [(l["name"], i, a, e) for l, le in zip(fast.layers, exact.layers)
            for i, (a, n, e) in enumerate(zip(l["accuracy"], l["samples"], le["accuracy"])) if n == N]


@pytest.mark.parametrize("model", ["digits-cnn", "digits-mlp", "digits-vgg"])
def test_bfloat16_screen_gives_the_exact_allocation(model):
    """Forced on (whatever the hardware), the screen's allocations are the exact scan's, every point evaluated on
    the whole split has the exact accuracy, and the JSON says which precision ran and what it recomputed."""
    s = Session.open(model)
    layers = s.layer_names[::3] if model == "digits-vgg" else None
    exact = scan(s, ScanSpec(SPARSITIES, layers=layers))
    cheap = scan(s, ScanSpec(SPARSITIES, layers=layers, exact=False, drops=DROPS, precision="bfloat16"))
    off = scan(s, ScanSpec(SPARSITIES, layers=layers, exact=False, drops=DROPS, precision="float32"))
    assert cheap.sequential["precision"] == "bfloat16" and off.sequential["precision"] == "float32"
    assert "screen" not in off.sequential
    screen = cheap.sequential["screen"]
    assert screen["bound"] > 0 and screen["screened"] > 0 and 0 <= screen["recomputed"] <= screen["screened"]
    assert cheap.dense_accuracy == exact.dense_accuracy == off.dense_accuracy
    for d in DROPS:
        want = allocate_by_drop(s, exact, d).sparsities
        assert allocate_by_drop(s, cheap, d).sparsities == want == allocate_by_drop(s, off, d).sparsities, d
    for r in (cheap, off):
        pairs = _whole_split_accuracies(r, exact)
        assert pairs and all(a == pytest.approx(e, abs=1e-9) for _, _, a, e in pairs)
        for l, le in zip(r.layers, exact.layers):
            for acc, (lo, hi), true in zip(l["accuracy"], l["interval"], le["accuracy"]):
                assert lo - 1e-9 <= true <= hi + 1e-9 and lo - 1e-9 <= acc <= hi + 1e-9
    again = ScanResult.from_json(cheap.to_json())
    assert again.sequential["screen"] == screen and again.sequential["precision"] == "bfloat16"


def test_certification_recomputes_what_the_bound_does_not_cover():
    """A sample counts by its cheap top-1 only when its margin exceeds twice the bound; the others are recomputed
    in float32 -- so cheap logits that are wrong on a small-margin sample do not change the count."""
    import torch

    from explorer.core.analyse.screen import Screen, certified, margins

    logits = torch.tensor([[3.0, 1.0, 0.0], [1.0, 0.95, 0.0], [float("nan"), 0.0, 0.0], [0.0, 0.0, 2.0]])
    assert certified(logits, 0.5).tolist() == [True, False, False, True]
    assert certified(logits, 0.01).tolist() == [True, True, False, True]
    pred, m = margins(logits[:, :1])
    assert pred.tolist() == [0, 0, 0, 0] and bool((m == float("inf")).all())     # one class: nothing to flip

    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3).eval()
    x = torch.randn(6, 4)
    with torch.no_grad():
        true = module(x)
    y = true.argmax(1)
    y[5] = (y[5] + 1) % 3                                    # one sample the model gets wrong
    screen = Screen(module, x, y, None, bound=0.05, num_classes=None)
    cheap = true.clone()
    order = true.argsort(1, descending=True)
    cheap[0, order[0, 1]] = cheap[0, order[0, 0]] + 0.01    # sample 0: the cheap logits flip, by a small margin
    (good, _, unsure, unsure_right), = screen.score(cheap, 0)
    assert 0 in unsure.tolist() and 5 not in unsure.tolist()
    assert unsure_right == int((cheap.argmax(1)[unsure] == y[unsure]).sum())
    assert good + screen.resolve(unsure, {}) == int((true.argmax(1) == y).sum())      # the float32 count
    assert screen.recomputed == unsure.numel()
    # a variant is swapped in to recompute: zero weights predict class argmax(bias) everywhere
    w0 = {"weight": torch.zeros_like(module.weight)}
    assert screen.resolve(torch.arange(6), w0) == int((y == module.bias.argmax()).sum())
    assert float(module.weight.detach().abs().sum()) > 0                           # restored


@pytest.mark.parametrize("safety,everything", [(1e6, True), (1e-6, False)])
def test_bound_forced_huge_or_tiny_keeps_the_exact_allocation(monkeypatch, safety, everything):
    """A huge bound certifies nothing: every sample a decision needs is recomputed in float32; a tiny one certifies
    nearly everything on its bfloat16 top-1: on digits-cnn the allocations are the exact scan's either way."""
    from explorer.core.analyse import screen as screen_mod

    s = Session.open("digits-cnn")
    exact = scan(s, ScanSpec(SPARSITIES))
    monkeypatch.setattr(screen_mod, "SAFETY", safety)
    cheap = scan(s, ScanSpec(SPARSITIES, exact=False, drops=DROPS, precision="bfloat16"))
    info = cheap.sequential["screen"]
    if everything:
        assert info["bound"] > 1e3 and info["recomputed"] > 0
        assert all(a == pytest.approx(e, abs=1e-9) for _, _, a, e in _whole_split_accuracies(cheap, exact))
    else:
        assert info["bound"] < 1e-3 and info["recomputed"] <= 0.01 * info["screened"]
    for d in DROPS:
        assert allocate_by_drop(s, cheap, d).sparsities == allocate_by_drop(s, exact, d).sparsities, d


def test_auto_precision_falls_back_to_float32_without_native_bfloat16(monkeypatch):
    from explorer.core.analyse import screen as screen_mod
    from explorer.core.errors import PlanError

    monkeypatch.setattr(screen_mod, "fast_bfloat16", lambda device: False)
    s = Session.open("digits-mlp")
    r = scan(s, ScanSpec(SPARSITIES, exact=False, drops=DROPS))
    assert r.sequential["precision"] == "float32" and "bfloat16" in r.sequential["precision_reason"]
    assert "screen" not in r.sequential
    with pytest.raises(PlanError, match="precision"):
        ScanSpec(SPARSITIES, exact=False, precision="float16")


def test_recomputing_runs_in_float32_with_the_point_s_weights():
    """The bfloat16 replayer works on its own copy: the scan's model stays float32 (BN's running statistics
    too), a recomputation swaps the point's weights in and leaves the model as it found it."""
    import torch

    from explorer.core.analyse.screen import build_screen
    from explorer.core.analyse.sequential import order

    s = Session.open("digits-cnn")
    module = s.model_copy()
    x = s.dataset.example_input(64)
    y = torch.zeros(64, dtype=torch.long)
    w = dict(module.named_parameters())["backbone.conv1.weight"].detach().clone()
    screen, why = build_screen(module, x, y, order(64, 0), None, {"backbone.conv1.weight": w}, force=True)
    assert screen is not None, why
    assert screen.replayer.output.dtype == torch.bfloat16
    assert all(t.dtype != torch.bfloat16 for t in module.state_dict().values())
    seen = []
    bn = dict(module.named_modules())["backbone.bn1"]
    conv = dict(module.named_modules())["backbone.conv1"]
    h1 = bn.register_forward_pre_hook(lambda m, a: seen.append((m.running_mean.dtype, m.weight.dtype, a[0].dtype)))
    h2 = conv.register_forward_pre_hook(lambda m, a: seen.append(float(m.weight.detach().abs().sum())))
    xs = x[order(64, 0)][:8]
    try:
        zero = {"backbone.conv1.weight": torch.zeros_like(w)}
        got = screen.resolve(torch.arange(8), zero)
    finally:
        h1.remove()
        h2.remove()
    assert seen[0] == 0.0 and seen[1] == (torch.float32,) * 3
    torch.testing.assert_close(dict(module.named_parameters())["backbone.conv1.weight"].detach(), w,
                               rtol=0, atol=0)                       # restored
    pruned = s.model_copy()
    with torch.no_grad():
        pruned.backbone.conv1.weight.zero_()
        assert got == int((pruned(xs).argmax(1) == 0).sum())
        assert screen.resolve(torch.arange(8), {}) == int((s.module.eval()(xs).argmax(1) == 0).sum())
