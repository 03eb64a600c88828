"""Exports (checkpoint, sparse archive, atomicity), recipes, and the `prune` CLI."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from explorer.core.deploy import export
from explorer.core.errors import ModelLoadError, PlanError
from explorer.core.formats.sparse_archive import load_sparse_archive, read_meta
from explorer.core.model.nets import DigitsCNN
from explorer.core.prune.plan import LayerPlan, Plan
from explorer.core.prune.recipe import plan_to_recipe, read_recipe, recipe_to_plan
from explorer.core.session import Session
from tests.helpers import assert_bit_identical, bits


def no_negative_zeros(state: dict) -> None:
    for k, v in state.items():
        if v.is_floating_point():
            assert not bool(((v == 0) & torch.signbit(v)).any()), f"{k} holds -0.0"


def pruned_cnn() -> Session:
    """digits-cnn with a mixed plan: channel (zeroes BatchNorm), kernel, 2:4, element."""
    s = Session.open("digits-cnn")
    s.set_layer("backbone.conv0", sparsity=0.4, granularity="vector", criterion="l2")
    s.set_layer("backbone.conv1", sparsity=0.5, granularity="channel")
    s.set_layer("backbone.conv2", sparsity=0.6, granularity="kernel")
    s.set_layer("backbone.conv3", granularity="2:4")
    s.set_layer("classifier", sparsity=0.8, granularity="element")
    return s


@pytest.fixture(scope="module")
def pruned_state():
    s = pruned_cnn()
    st = s.masked_state()
    # the state really is pruned, with negative weights among the pruned ones (so -0.0 could appear)
    for n in s.layer_names:
        w, base = st[f"{n}.weight"], s.base_weight(n)
        assert int((w == 0).sum()) > 0 and bool((base[w == 0] < 0).any())
    assert int((st["backbone.bn1.weight"] == 0).sum()) == 16
    return s, st


# ---------------------------------------------------------------------------- 9. checkpoint

def test_checkpoint_reloads_with_plain_torch(tmp_path, pruned_state):
    s, st = pruned_state
    path = export.export_checkpoint(st, tmp_path / "model.pt")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    net = DigitsCNN()
    net.load_state_dict(loaded)          # strict: same keys and shapes as the original architecture
    assert_bit_identical(net.state_dict(), st)
    no_negative_zeros(loaded)
    # and it is what the session's model holds after apply
    s.apply()
    assert_bit_identical(s.module.state_dict(), loaded)
    x = torch.randn(4, 1, 8, 8)
    with torch.inference_mode():
        assert torch.equal(net.eval()(x), s.module.eval()(x))


def test_masked_state_never_holds_negative_zero():
    s = Session.open("digits-mlp")
    for g in ("element", "2:4", "vector", "channel"):
        s.set_uniform(["fc1", "fc2"], 0.7, g, "l1")
        no_negative_zeros(s.masked_state())
        s.apply()
        no_negative_zeros(s.module.state_dict())


# ---------------------------------------------------------------------------- 9. sparse archive

def test_sparse_archive_restores_bit_identical(tmp_path, pruned_state):
    s, st = pruned_state
    meta = {"model": s.model_spec, "arch": s.require().model.arch, "dataset": s.dataset.spec}
    path = export.export_sparse_archive(st, s.layer_names, meta, tmp_path / "model_sparse.npz")
    back = load_sparse_archive(path)
    assert_bit_identical(back, st)
    no_negative_zeros(back)
    m = read_meta(path)
    assert m["arch"] == "digits-cnn" and m["model"] == "digits-cnn"
    assert set(m["sparse"]) == {f"{n}.weight" for n in s.layer_names}
    # prunable weights really are stored as CSR with only the nonzeros
    with np.load(path, allow_pickle=False) as z:
        for n in s.layer_names:
            assert z[f"{n}.weight::csr_data"].size == int(torch.count_nonzero(st[f"{n}.weight"]))
            assert f"{n}.weight::dense" not in z.files
    # it is smaller on disk than the dense checkpoint at this sparsity
    ck = export.export_checkpoint(st, tmp_path / "model.pt")
    assert os.path.getsize(path) < os.path.getsize(ck)


def test_sparse_archive_opens_as_a_model(tmp_path, pruned_state):
    from explorer.core.model.zoo import load_model

    s, st = pruned_state
    meta = {"model": s.model_spec, "arch": s.require().model.arch}
    path = export.export_sparse_archive(st, s.layer_names, meta, tmp_path / "m.npz")
    lm = load_model(str(path), arch="digits-cnn")
    assert_bit_identical(lm.module.state_dict(), st)
    lm2 = load_model(str(path))          # no arch: found from the archive
    assert lm2.arch == "digits-cnn"
    assert_bit_identical(lm2.module.state_dict(), st)
    # and as a session (default dataset of the architecture)
    s2 = Session.open(str(path))
    assert s2.dataset.spec == "digits"
    assert_bit_identical(s2.original_state(), st)


def test_sparse_archive_of_torchvision_model_opens_without_arch(tmp_path):
    import torchvision

    from explorer.core.model.zoo import load_model

    net = torchvision.models.get_model("squeezenet1_1", weights=None)
    st = {k: v.detach().clone() for k, v in net.state_dict().items()}
    prunable = [n for n, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    meta = {"model": "torchvision:squeezenet1_1", "arch": "torchvision:squeezenet1_1"}
    path = export.export_sparse_archive(st, prunable, meta, tmp_path / "sq.npz")
    lm = load_model(str(path))
    assert_bit_identical(lm.module.state_dict(), st)


def test_sparse_archive_keeps_nan_and_inf(tmp_path):
    st = {"fc.weight": torch.tensor([[float("nan"), 0.0, 1.5], [0.0, float("-inf"), 0.0]]),
          "fc.bias": torch.tensor([float("nan"), 2.0])}
    path = export.export_sparse_archive(st, ["fc"], {}, tmp_path / "nan.npz")
    assert_bit_identical(load_sparse_archive(path), st)


def test_sparse_archive_preserves_negative_zero(tmp_path):
    st = {"fc.weight": torch.tensor([[-0.0, 1.0], [2.0, 3.0]]), "fc.bias": torch.tensor([-0.0, 1.0])}
    path = export.export_sparse_archive(st, ["fc"], {}, tmp_path / "negzero.npz")
    assert_bit_identical(load_sparse_archive(path), st)


def test_damaged_archives_are_refused(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(ModelLoadError):
        load_sparse_archive(bad)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ModelLoadError, match="not a sparse archive"):
        load_sparse_archive(plain)


# ---------------------------------------------------------------------------- 9. atomic exports

def _boom_after_partial_write(path, *a, **k):
    target = path if isinstance(path, (str, os.PathLike)) else None
    if target is not None:
        with open(target, "wb") as f:
            f.write(b"PARTIAL")
    else:
        path.write(b"PARTIAL")
    raise RuntimeError("disk full (simulated)")


def test_checkpoint_export_is_atomic(tmp_path, pruned_state, monkeypatch):
    s, st = pruned_state
    dest = tmp_path / "model.pt"
    export.export_checkpoint(s.original_state(), dest)
    before = dest.read_bytes()
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: _boom_after_partial_write(f))
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_checkpoint(st, dest)
    assert dest.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.pt"], "no temp files left behind"
    # a new destination is not created at all
    with pytest.raises(RuntimeError):
        export.export_checkpoint(st, tmp_path / "new.pt")
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]


def test_sparse_archive_export_is_atomic(tmp_path, pruned_state, monkeypatch):
    s, st = pruned_state
    dest = tmp_path / "m.npz"
    export.export_sparse_archive(s.original_state(), s.layer_names, {}, dest)
    before = dest.read_bytes()
    monkeypatch.setattr(np, "savez_compressed", lambda f, **arrays: _boom_after_partial_write(f))
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_sparse_archive(st, s.layer_names, {}, dest)
    assert dest.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_failed_recipe_export_keeps_the_previous_file(tmp_path):
    dest = tmp_path / "recipe.json"
    good = plan_to_recipe(Plan({"classifier": LayerPlan(0.5)}), "digits-cnn")
    export.export_recipe(good, dest)
    before = dest.read_text()
    bad = dict(good, layers={"classifier": {"sparsity": 1.5}})
    with pytest.raises(PlanError):
        export.export_recipe(bad, dest)
    assert dest.read_text() == before


# ---------------------------------------------------------------------------- 10. recipes

def _plans():
    s = pruned_cnn()
    yield "mixed", s.plan
    s.set_global(s.layer_names, 0.7, "element", "l1", max_layer_sparsity=0.9)
    yield "global", s.plan
    s.set_uniform(s.layer_names[:4], 0.3, "channel", "taylor")
    yield "channel-taylor", s.plan


def test_recipe_json_round_trip(tmp_path):
    for label, plan in _plans():
        d = plan_to_recipe(plan, "digits-cnn", "digits", seed=0)
        text = json.dumps(d)
        back = recipe_to_plan(json.loads(text))
        assert back == plan, label
        assert back.layers == plan.active(), label
        assert back.scope == plan.scope and back.target_sparsity == plan.target_sparsity, label
        # through a file, as the app writes and reads it
        path = export.export_recipe(d, tmp_path / f"{label}.json")
        plan2, raw = read_recipe(path)
        assert plan2.layers == plan.active() and raw["model"] == "digits-cnn"
        assert raw["format"] == "pruning-explorer-recipe" and "tool_version" in raw


def test_recipe_replays_to_bit_identical_masks(tmp_path):
    for label, plan in _plans():
        a = Session.open("digits-cnn")
        a.set_plan(plan)
        path = export.export_recipe(plan_to_recipe(a.plan, a.model_spec), tmp_path / f"{label}.json")
        b = Session.open("digits-cnn")
        b.set_plan(read_recipe(path)[0])
        assert_bit_identical(a.masked_state(), b.masked_state())


def test_recipe_accepts_list_form_and_bare_sparsities():
    p = recipe_to_plan({"layers": [{"name": "classifier", "sparsity": 0.5, "granularity": "2:4"}]})
    assert p.layers == {"classifier": LayerPlan(0.5, "2:4", "l1")}
    p = recipe_to_plan({"layers": {"classifier": 0.25}})
    assert p.layers == {"classifier": LayerPlan(0.25, "element", "l1")}


def _write(tmp_path, obj, name="r.json") -> str:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def test_recipe_with_unknown_layer_is_refused(tmp_path):
    s = Session.open("digits-cnn")
    s.set_layer("classifier", sparsity=0.3)
    before = dict(s.plan.layers)
    plan, _ = read_recipe(_write(tmp_path, {"layers": {"backbone.conv9": {"sparsity": 0.5}}}))
    with pytest.raises(PlanError, match=r"backbone\.conv9"):
        plan.validated(s.layer_names)
    with pytest.raises(PlanError, match=r"backbone\.conv9"):
        s.set_plan(plan)
    assert s.plan.layers == before, "a refused recipe leaves the plan alone"


def test_recipe_with_granularity_that_does_not_fit_is_refused(tmp_path):
    s = Session.open("digits-cnn")
    plan, _ = read_recipe(_write(tmp_path, {"layers": {"classifier": {"sparsity": 0.5, "granularity": "kernel"}}}))
    with pytest.raises(PlanError, match="kernel"):
        s.set_plan(plan)
    assert s.plan.active() == {}


@pytest.mark.parametrize("content,match", [
    ({"layers": {"classifier": {"sparsity": 1.5}}}, r"1\.5.*outside"),
    ({"layers": {"classifier": {"sparsity": -0.2}}}, "outside"),
    ('{"layers": {"classifier": {"sparsity": NaN}}}', "NaN is not a number JSON allows"),
    ({"layers": {"classifier": {"sparsity": "half"}}}, "number"),
    ({"layers": {"classifier": {"sparsity": 0.5, "granularity": "blocks"}}}, "Unknown granularity 'blocks'"),
    ({"layers": {"classifier": {"sparsity": 0.5, "criterion": "magic"}}}, "Unknown criterion 'magic'"),
    ({"layers": {"classifier": {"sparsity": 0.5, "sparsty": 0.2}}}, "unknown key"),
    ({"layers": {"classifier": "half"}}, "must be an object"),
    ({"layers": [{"sparsity": 0.5}]}, "name"),
    ({"layers": "classifier"}, "must be an object"),
    ({"model": "digits-cnn"}, "no 'layers'"),
    ([{"name": "classifier"}], "JSON object"),
    ({"layers": {}, "scope": "galactic"}, "scope"),
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
])
def test_bad_recipes_give_plan_errors(tmp_path, content, match):
    with pytest.raises(PlanError, match=match):
        read_recipe(_write(tmp_path, content))


def test_unreadable_recipe_files(tmp_path):
    with pytest.raises(PlanError, match="does not exist"):
        read_recipe(tmp_path / "missing.json")
    p = tmp_path / "binary.json"
    p.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(PlanError):
        read_recipe(p)


# ---------------------------------------------------------------------------- 11. CLI prune

REPORT_BLOCK = {"accuracy", "params", "nonzero_params", "macs", "size_bytes", "latency_ms"}
LAYER_KEYS = {"name", "granularity", "criterion", "sparsity", "params", "nonzero", "macs"}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    from explorer.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def prune_out(tmp_path_factory):
    from explorer.cli import main

    out = tmp_path_factory.mktemp("prune") / "out"
    assert main(["prune", "--sparsity", "0.5", "--out", str(out), "--no-latency"]) == 0
    return out


def test_prune_writes_the_three_files(prune_out):
    assert sorted(os.listdir(prune_out)) == ["model.pt", "recipe.json", "report.json"]
    sd = torch.load(prune_out / "model.pt", map_location="cpu", weights_only=True)
    net = DigitsCNN()
    net.load_state_dict(sd)
    no_negative_zeros(sd)
    for n in ("backbone.conv0", "backbone.conv1", "backbone.conv2", "backbone.conv3", "classifier"):
        w = sd[f"{n}.weight"]
        assert int((w == 0).sum()) == round(0.5 * w.numel())
    recipe = json.loads((prune_out / "recipe.json").read_text())
    assert recipe["model"] == "digits-cnn" and len(recipe["layers"]) == 5


def test_prune_report_has_the_design_keys(prune_out):
    r = json.loads((prune_out / "report.json").read_text())
    assert {"model", "dataset", "dense", "pruned", "compact", "sparsity", "compression_ratio", "layers"} <= set(r)
    assert r["model"] == "digits-cnn" and r["dataset"] == "digits"
    assert set(r["dense"]) == REPORT_BLOCK and set(r["pruned"]) == REPORT_BLOCK
    assert r["compact"] is None
    assert r["dense"]["latency_ms"] is None and r["pruned"]["latency_ms"] is None   # --no-latency
    for block in (r["dense"], r["pruned"]):
        assert isinstance(block["accuracy"], float) and 0 <= block["accuracy"] <= 100
        for k in ("params", "nonzero_params", "macs", "size_bytes"):
            assert isinstance(block[k], int) and block[k] > 0
    assert r["compression_ratio"] == r["dense"]["size_bytes"] / r["pruned"]["size_bytes"]
    assert r["compression_ratio"] > 1.5
    assert r["sparsity"] == pytest.approx(0.5, abs=1e-12)
    assert [l["name"] for l in r["layers"]] == ["backbone.conv0", "backbone.conv1", "backbone.conv2",
                                                "backbone.conv3", "classifier"]
    for l in r["layers"]:
        assert LAYER_KEYS <= set(l)
        assert l["granularity"] == "element" and l["criterion"] == "l1" and l["sparsity"] == 0.5


def test_prune_report_numbers_match_the_checkpoint(prune_out):
    r = json.loads((prune_out / "report.json").read_text())
    sd = torch.load(prune_out / "model.pt", map_location="cpu", weights_only=True)
    net = DigitsCNN()
    params = {n for n, _ in net.named_parameters()}
    total = sum(p.numel() for p in net.parameters())
    assert r["dense"]["params"] == r["pruned"]["params"] == total
    assert r["dense"]["size_bytes"] == 4 * total
    assert r["pruned"]["nonzero_params"] == sum(int(torch.count_nonzero(sd[k])) for k in params)
    sparse = 4 * total
    for l in r["layers"]:
        w = sd[f"{l['name']}.weight"]
        nnz = int(torch.count_nonzero(w))
        assert l["params"] == w.numel() and l["nonzero"] == nnz
        assert l["sparsity"] == pytest.approx(1 - nnz / w.numel())
        assert l["macs"] * w.numel() == nnz * l["dense_macs"]
        rows = w.shape[0]
        csr = nnz * 8 + (rows + 1) * 4
        bitmask = nnz * 4 + math.ceil(w.numel() / 8)
        sparse += min(csr, bitmask) - 4 * w.numel()
    assert r["pruned"]["size_bytes"] == sparse
    assert r["pruned"]["macs"] < r["dense"]["macs"]


def test_prune_recipe_replay_reproduces_model(prune_out, tmp_path, capsys):
    rc, _, err = run_cli(capsys, "prune", "--recipe", prune_out / "recipe.json", "--out", tmp_path / "again",
                         "--no-latency")
    assert rc == 0, err
    a = torch.load(prune_out / "model.pt", map_location="cpu", weights_only=True)
    b = torch.load(tmp_path / "again" / "model.pt", map_location="cpu", weights_only=True)
    assert list(a) == list(b)
    assert_bit_identical(a, b)


def test_prune_recipe_from_session_replays_in_cli(tmp_path, capsys):
    """A recipe exported from the app (mixed granularities, taylor, channel) reproduces its masked weights."""
    s = pruned_cnn()
    s.set_layer("backbone.conv2", criterion="taylor")
    path = export.export_recipe(plan_to_recipe(s.plan, s.model_spec, "digits"), tmp_path / "recipe.json")
    rc, _, err = run_cli(capsys, "prune", "--recipe", path, "--out", tmp_path / "out", "--no-latency")
    assert rc == 0, err
    sd = torch.load(tmp_path / "out" / "model.pt", map_location="cpu", weights_only=True)
    assert_bit_identical(sd, s.masked_state())


def test_prune_kernel_on_linear_layer_exits_2(tmp_path, capsys):
    out = tmp_path / "k"
    rc, _, err = run_cli(capsys, "prune", "--granularity", "kernel", "--layers", "classifier", "--sparsity", "0.5",
                         "--out", out, "--no-latency")
    assert rc == 2
    assert "kernel" in err and "classifier" in err and "Traceback" not in err
    assert not (out / "model.pt").exists()


@pytest.mark.parametrize("argv,match", [
    (("--sparsity", "0.5", "--layers", "backbone.conv9"), "backbone.conv9"),
    (("--sparsity", "0.5", "--granularity", "2:4", "--layers", "backbone.conv0"), "divisible"),
    (("--sparsity", "0.5", "--scope", "global", "--granularity", "2:4"), "Global scope"),
    ((), "Nothing to prune"),
])
def test_prune_user_errors_exit_2(tmp_path, capsys, argv, match):
    rc, _, err = run_cli(capsys, "prune", *argv, "--out", tmp_path / "o", "--no-latency")
    assert rc == 2 and match in err
    assert not (tmp_path / "o" / "model.pt").exists()


def test_prune_bad_recipe_exits_2(tmp_path, capsys):
    path = _write(tmp_path, {"layers": {"classifier": {"sparsity": 1.5}}})
    rc, _, err = run_cli(capsys, "prune", "--recipe", path, "--out", tmp_path / "o", "--no-latency")
    assert rc == 2 and "1.5" in err


@pytest.mark.parametrize("argv", (("--sparsity", "1.5"), ("--sparsity", "0.5", "--granularity", "blocks")))
def test_prune_invalid_model_wide_request_exits_2(tmp_path, capsys, argv):
    rc, _, err = run_cli(capsys, "prune", *argv, "--out", tmp_path / "o", "--no-latency")
    assert rc == 2


def test_prune_channel_model_wide_leaves_classifier_dense(tmp_path, capsys):
    out = tmp_path / "ch"
    rc, _, err = run_cli(capsys, "prune", "--granularity", "channel", "--sparsity", "0.5", "--out", out,
                         "--no-latency")
    assert rc == 0, err
    assert "classifier" in err       # reported as left dense
    sd = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    dense = DigitsCNN()
    dense.load_state_dict(torch.load(__import__("explorer").RESOURCES / "models" / "digits-cnn.pt",
                                     weights_only=True))
    assert torch.equal(bits(sd["classifier.weight"]), bits(dense.classifier.weight.detach()))
    for i in range(4):
        w = sd[f"backbone.conv{i}.weight"]
        rows = (w.reshape(w.shape[0], -1) == 0).all(1)
        assert int(rows.sum()) == w.shape[0] // 2
        assert bool((w.reshape(w.shape[0], -1)[~rows] != 0).all())
        assert bool((sd[f"backbone.bn{i}.weight"][rows] == 0).all())
        assert bool((sd[f"backbone.bn{i}.bias"][rows] == 0).all())
    r = json.loads((out / "report.json").read_text())
    cls = [l for l in r["layers"] if l["name"] == "classifier"][0]
    assert cls["sparsity"] == 0 and cls["nonzero"] == cls["params"]


def test_prune_seed_changes_random_masks(tmp_path, capsys):
    outs = []
    for seed in (0, 3):
        out = tmp_path / f"seed{seed}"
        rc, _, err = run_cli(capsys, "prune", "--sparsity", "0.5", "--criterion", "random", "--layers",
                             "backbone.conv2", "--seed", seed, "--out", out, "--no-latency")
        assert rc == 0, err
        outs.append(torch.load(out / "model.pt", weights_only=True)["backbone.conv2.weight"])
    assert not torch.equal(outs[0] == 0, outs[1] == 0)


def test_exports_get_ordinary_file_permissions(tmp_path):
    import os
    import stat

    from explorer.core.fileio import atomic_write_json
    f = tmp_path / "x.json"
    atomic_write_json(f, {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask
    os.chmod(f, 0o640)
    atomic_write_json(f, {"a": 2})                 # an existing file keeps its mode
    assert stat.S_IMODE(f.stat().st_mode) == 0o640


def test_checkpoint_check_is_chunked_and_catches_one_changed_bit(tmp_path, monkeypatch):
    """The reload check compares a memory-mapped file in chunks: a single -0.0 written for +0.0 in the last chunk
    of a big tensor, or a missing tensor, fails the export and leaves nothing behind."""
    from explorer.core.deploy import reload_check
    from explorer.core.errors import ExplorerError

    monkeypatch.setattr(reload_check, "CHUNK_BYTES", 4096)          # many chunks even for a small tensor
    st = {"w": torch.randn(10_000), "b": torch.zeros(3)}
    export.export_checkpoint(st, tmp_path / "ok.pt")
    assert reload_check.mismatching_tensors(st, tmp_path / "ok.pt") == ([], [])
    real_save = torch.save

    def tampered(obj, f, *a, **k):
        bad = dict(obj)
        w = bad["w"].clone()
        w[-1] = -0.0 if w[-1] == 0 and not torch.signbit(w[-1]) else 0.0
        bad["w"] = w
        real_save(bad, f, *a, **k)
    monkeypatch.setattr(torch, "save", tampered)
    with pytest.raises(ExplorerError, match="tensor w"):
        export.export_checkpoint(st, tmp_path / "bad.pt")
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real_save({"w": obj["w"]}, f, *a, **k))
    with pytest.raises(ExplorerError, match="same tensors"):
        export.export_checkpoint(st, tmp_path / "bad.pt")
    assert sorted(os.listdir(tmp_path)) == ["ok.pt"]
