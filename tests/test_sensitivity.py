"""Layer-wise sensitivity scans (explorer.core.analyse.sensitivity): equality with the naive loop, channel groups,
session left untouched, cancel, progress, early stop, bad inputs, files and the CLI."""
from __future__ import annotations

import copy
import csv
import json

import pytest
import torch

from explorer.core.analyse.sensitivity import (
    ScanPoint,
    ScanResult,
    ScanSpec,
    parse_sparsities,
    read_scan,
    run_scan_to_files,
    scan,
    write_csv,
)
from explorer.core.errors import Cancelled, ExplorerError, PlanError
from explorer.core.jobs import CancelToken, Progress
from explorer.core.model.data import labelled_by_model
from explorer.core.prune.plan import LayerPlan
from explorer.core.session import Session
from explorer.core.train.evaluate import evaluate
from tests.helpers import bits

SPS = [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
RESNET_LAYERS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.downsample.0", "fc"]


# ---------------------------------------------------------------------------- helpers


def snapshot(session: Session) -> dict:
    return {"state": {k: v.detach().clone(memory_format=torch.preserve_format)
                      for k, v in session.module.state_dict().items()},
            "plan": session.plan, "plan_layers": dict(session.plan.layers),
            "applied": session.applied_plan, "applied_layers": dict(session.applied_plan.layers),
            "base": {k: v.clone() for k, v in session.base_state().items()},
            "undo": session.editor.can_undo, "version": session.version, "training": session.module.training}


def assert_unchanged(session: Session, snap: dict) -> None:
    state = session.module.state_dict()
    assert set(state) == set(snap["state"])
    for k, v in snap["state"].items():
        assert state[k].dtype == v.dtype and state[k].shape == v.shape, k
        assert state[k].stride() == v.stride(), f"module tensor {k} changed its memory layout"
        assert torch.equal(bits(state[k]), bits(v)), f"module tensor {k} changed"
    assert session.plan == snap["plan"] and dict(session.plan.layers) == snap["plan_layers"]
    assert session.applied_plan == snap["applied"] and dict(session.applied_plan.layers) == snap["applied_layers"]
    for k, v in snap["base"].items():
        assert torch.equal(bits(session.base_state()[k]), bits(v)), f"kept weight {k} changed"
    assert session.editor.can_undo == snap["undo"]
    assert session.version == snap["version"], "the scan wrote into the session's model"
    assert session.module.training == snap["training"]


def _bn_after(conv: str) -> str:
    """The BatchNorm that normalises a conv's output, by the naming of torchvision's resnet and digits-cnn."""
    if conv.endswith("downsample.0"):
        return conv[:-1] + "1"
    head, _, last = conv.rpartition(".")
    return (head + "." if head else "") + last.replace("conv", "bn")


def naive_reference(session: Session, layers, sparsities, granularity="element", criterion="l1",
                    split="val", members_of=None) -> dict[str, list[float]]:
    """The plain loop, written independently of the scan: for each layer and sparsity copy the state, zero
    the pruned weights (and, for channels, the pruned channels' BatchNorm weight/bias and conv bias of every
    member), evaluate the whole model on the whole split, restore."""
    module = copy.deepcopy(session.module).eval()
    mods = dict(module.named_modules())
    original = {k: v.detach().clone() for k, v in module.state_dict().items()}
    members_of = members_of or (lambda n: session.linked_layers(n) if granularity == "channel" else (n,))
    out = {}
    for name in layers:
        accs = []
        for s in sparsities:
            lp = LayerPlan(s, granularity, criterion)
            with torch.no_grad():
                for m in members_of(name):
                    mask = session.layer_mask(m, lp).element_mask(s)
                    w = mods[m].weight
                    w.copy_(torch.where(mask, w, torch.zeros((), dtype=w.dtype)))
                    if granularity == "channel":
                        gone = ~mask.reshape(mask.shape[0], -1).any(1)      # output rows with no weight left
                        if getattr(mods[m], "bias", None) is not None:
                            mods[m].bias[gone] = 0
                        bn = mods.get(_bn_after(m))
                        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                            bn.weight[gone] = 0
                            bn.bias[gone] = 0
            accs.append(evaluate(module, session.dataset, split).accuracy)
            module.load_state_dict(original)          # restore
        out[name] = accs
    return out


def accuracies(result: ScanResult) -> dict[str, list]:
    return {l["name"]: list(l["accuracy"]) for l in result.layers}


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def resnet():
    """resnet18 with random weights at 3x32x32, BatchNorm weights/biases/means made nonzero (torchvision's
    init has bias 0 and mean 0, which would hide whether pruned channels' BatchNorm entries are zeroed),
    on synthetic inputs labelled by the dense model itself (dense accuracy 100%)."""
    torch.manual_seed(0)
    s = Session.open("torchvision:resnet18", "synthetic", input_shape=(3, 32, 32))
    g = torch.Generator().manual_seed(0)
    sd = {k: v.clone() for k, v in s.base_state().items()}
    for n, m in s.module.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            sd[f"{n}.weight"] = torch.rand(sd[f"{n}.weight"].shape, generator=g) + 0.5
            sd[f"{n}.bias"] = torch.rand(sd[f"{n}.bias"].shape, generator=g) - 0.5
            sd[f"{n}.running_mean"] = torch.rand(sd[f"{n}.running_mean"].shape, generator=g) - 0.5
    s.set_base(sd, "test weights")
    s.apply()
    s.require().dataset = labelled_by_model(s.dataset, s.module)
    assert s.dataset.has_labels
    return s


# ---------------------------------------------------------------------------- 1. equality with the naive loop

@pytest.mark.parametrize("model,granularity,criterion", [
    ("digits-cnn", "element", "l1"),
    ("digits-cnn", "channel", "l1"),
    ("digits-mlp", "element", "l1"),
])
def test_fast_scan_equals_naive_scan_and_an_independent_loop(model, granularity, criterion):
    s = Session.open(model)
    sps = [0.4, 0.6, 0.8, 0.9]
    spec = ScanSpec(sps, granularity=granularity, criterion=criterion)
    fast = scan(s, spec)
    naive = scan(s, spec, naive=True)
    assert fast.method == "fast", "the replay should work on the built-in models"
    assert naive.method == "naive"
    names = [l["name"] for l in fast.layers]
    expected_names = [n for n in s.layer_names if not (granularity == "channel" and s.layer(n).is_output)]
    assert names == expected_names
    assert [l["name"] for l in naive.layers] == names
    ref = naive_reference(s, names, sps, granularity, criterion)
    assert accuracies(fast) == ref
    assert accuracies(naive) == ref
    dense = evaluate(s.module, s.dataset, "val").accuracy
    assert fast.dense_accuracy == naive.dense_accuracy == dense
    assert fast.sparsities == sps and fast.samples == s.dataset.size("val")
    for l in fast.layers:
        assert l["params"] == s.layer(l["name"]).params
    # the scan is not trivially flat: pruning hurts somewhere
    assert min(a for accs in ref.values() for a in accs) < dense


@pytest.mark.parametrize("stack", [False, True], ids=["one-sparsity-per-pass", "stacked-sparsities"])
def test_fast_scan_on_a_residual_net_equals_the_naive_loop(resnet, monkeypatch, stack):
    """Skip connections: the suffix after a layer inside a block reads the block's input from the cache.
    ``stack`` raises the per-pass budget so that all sparsities of a layer run as one stacked batch."""
    import explorer.core.analyse.replay as replay

    if stack:
        monkeypatch.setattr(replay, "VARIANT_PASS_BYTES", 2**30)
    sps = [0.3, 0.6, 0.9]
    spec = ScanSpec(sps, layers=RESNET_LAYERS)
    fast = scan(resnet, spec)
    assert fast.method == "fast", "resnet18 is traceable: the replay must be used (and checked) here"
    ref = naive_reference(resnet, RESNET_LAYERS, sps)
    assert fast.dense_accuracy == 100.0
    assert accuracies(fast) == ref
    assert [l["name"] for l in fast.layers] == RESNET_LAYERS
    # the points actually move (a replay that ignored the skip connection or the change would be flat)
    assert len({a for accs in ref.values() for a in accs}) > 3
    if not stack:
        naive = scan(resnet, spec, naive=True)
        assert naive.dense_accuracy == 100.0 and accuracies(naive) == ref


def test_fast_scan_with_stacked_conv_variants_equals_the_naive_loop(cnn, monkeypatch):
    """digits-cnn's activations are big enough that one sparsity runs per pass; force the stacked path."""
    import explorer.core.analyse.replay as replay

    monkeypatch.setattr(replay, "VARIANT_PASS_BYTES", 2**30)
    sps = [0.4, 0.6, 0.8, 0.9]
    for gran in ("element", "channel"):
        r = scan(cnn, ScanSpec(sps, granularity=gran))
        assert r.method == "fast"
        assert accuracies(r) == naive_reference(cnn, [l["name"] for l in r.layers], sps, gran)


def test_scan_with_an_applied_plan_equals_the_naive_loop_on_the_pruned_model(cnn):
    """Scanning a model that already has a plan applied: other layers stay as applied."""
    cnn.set_uniform(["backbone.conv2", "backbone.conv3"], 0.5)
    cnn.apply()
    layers = ["backbone.conv0", "backbone.conv1", "classifier"]
    sps = [0.5, 0.8]
    fast = scan(cnn, ScanSpec(sps, layers=layers))
    assert accuracies(fast) == naive_reference(cnn, layers, sps)
    assert fast.dense_accuracy == evaluate(cnn.module, cnn.dataset, "val").accuracy


def test_fast_path_is_kept_when_the_first_layer_is_already_pruned(cnn):
    cnn.set_uniform(["backbone.conv0"], 0.5)
    cnn.apply()
    r = scan(cnn, ScanSpec([0.5, 0.8], layers=["backbone.conv0", "backbone.conv1"]))
    assert accuracies(r) == naive_reference(cnn, ["backbone.conv0", "backbone.conv1"], [0.5, 0.8])
    assert r.method == "fast"


def test_stacked_layer_path_is_used_when_sparsities_are_batched(mlp, monkeypatch):
    """White-box: with a big per-pass budget the pruned linear layer should compute all variants in one call."""
    import explorer.core.analyse.replay as replay

    monkeypatch.setattr(replay, "VARIANT_PASS_BYTES", 2**30)
    calls = []
    real = replay.Replayer._stacked

    def spy(self, mod, x, variants, name):
        calls.append((name, len(variants)))
        return real(self, mod, x, variants, name)
    monkeypatch.setattr(replay.Replayer, "_stacked", spy)
    r = scan(mlp, ScanSpec([0.4, 0.6, 0.8], layers=["fc2"]))
    assert r.method == "fast"
    assert accuracies(r) == naive_reference(mlp, ["fc2"], [0.4, 0.6, 0.8])
    assert calls == [("fc2", 3)]


# ---------------------------------------------------------------------------- 2. the session is never changed

@pytest.mark.parametrize("naive", [False, True])
def test_scan_leaves_the_session_bit_identical(cnn, naive):
    cnn.set_uniform(["backbone.conv1", "classifier"], 0.6)
    cnn.apply()
    cnn.set_layer("backbone.conv2", 0.3)     # and an edit on top, applied too
    cnn.apply()
    before = snapshot(cnn)
    r = scan(cnn, ScanSpec([0.5, 0.9]), naive=naive)
    assert len(r.layers) == len(cnn.layer_names)
    assert_unchanged(cnn, before)


@pytest.mark.parametrize("naive", [False, True])
def test_cancelled_scan_raises_and_leaves_the_session_bit_identical(cnn, naive):
    cnn.set_uniform(["backbone.conv3"], 0.5, "channel")
    cnn.apply()
    before = snapshot(cnn)
    token = CancelToken()
    points = []

    def progress(p: Progress):
        if isinstance(p.data, ScanPoint):
            points.append(p.data)
            if len(points) == 3:
                token.cancel()

    total = len(cnn.layer_names) * len(SPS)
    with pytest.raises(Cancelled):
        scan(cnn, ScanSpec(SPS), progress=progress, cancel=token, naive=naive)
    assert 3 <= len(points) < total
    assert_unchanged(cnn, before)


def test_cancelled_scan_with_a_pending_plan_does_not_apply_it(cnn):
    cnn.set_uniform(["backbone.conv1"], 0.7)      # planned, not applied
    assert cnn.pending
    before = snapshot(cnn)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        scan(cnn, ScanSpec([0.5]), cancel=token)
    assert_unchanged(cnn, before)


# ---------------------------------------------------------------------------- 3. channel groups

def test_channel_scan_prunes_the_whole_dependency_group(resnet):
    name = "layer1.0.conv2"
    group = resnet.linked_layers(name)
    assert len(group) >= 3 and {"conv1", "layer1.1.conv2"} <= set(group)
    sps = [0.1, 0.25, 0.5]
    fast = scan(resnet, ScanSpec(sps, granularity="channel", layers=[name]))
    naive = scan(resnet, ScanSpec(sps, granularity="channel", layers=[name]), naive=True)
    whole = naive_reference(resnet, [name], sps, "channel")
    alone = naive_reference(resnet, [name], sps, "channel", members_of=lambda n: (n,))
    assert accuracies(fast) == whole
    assert accuracies(naive) == whole
    assert whole[name] != alone[name], "pruning one member must not look like pruning the group"
    row = fast.layer(name)
    assert row["group"] == list(group)
    assert row["params"] == resnet.layer(name).params


def test_channel_scan_of_linked_rows_share_one_curve(resnet):
    sps = [0.25, 0.5]
    r = scan(resnet, ScanSpec(sps, granularity="channel", layers=["conv1", "layer1.0.conv1", "layer1.1.conv2"]))
    assert r.layer("conv1")["accuracy"] == r.layer("layer1.1.conv2")["accuracy"]
    assert r.layer("conv1")["group"] == r.layer("layer1.1.conv2")["group"] == list(resnet.linked_layers("conv1"))
    assert "group" not in r.layer("layer1.0.conv1")          # an unlinked conv prunes itself only
    assert r.layer("layer1.1.conv2")["params"] == resnet.layer("layer1.1.conv2").params
    assert accuracies(r) == naive_reference(resnet, ["conv1", "layer1.0.conv1", "layer1.1.conv2"], sps, "channel")


def test_channel_scan_skips_the_output_layer_but_refuses_it_when_asked(cnn):
    r = scan(cnn, ScanSpec([0.5], granularity="channel"))
    assert "classifier" in r.skipped and "output" in r.skipped["classifier"]
    assert "classifier" not in [l["name"] for l in r.layers]
    assert len(r.layers) == len(cnn.layer_names) - 1
    with pytest.raises(PlanError, match="output"):
        scan(cnn, ScanSpec([0.5], granularity="channel", layers=["classifier"]))


def test_channel_scan_of_resnet_skips_fc_and_refuses_it_explicitly(resnet):
    with pytest.raises(PlanError):
        scan(resnet, ScanSpec([0.5], granularity="channel", layers=["fc"]))
    # element granularity on fc is fine
    r = scan(resnet, ScanSpec([0.5], granularity="element", layers=["fc"]))
    assert r.layer("fc")["accuracy"][0] is not None and not r.skipped


def test_model_wide_channel_scan_of_resnet_records_fc_as_skipped(resnet):
    r = scan(resnet, ScanSpec([0.5], granularity="channel"))
    assert "fc" in r.skipped
    assert [l["name"] for l in r.layers] == [n for n in resnet.layer_names if n != "fc"]
    groups = {tuple(l["group"]) for l in r.layers if "group" in l}
    assert tuple(resnet.linked_layers("conv1")) in groups


# ---------------------------------------------------------------------------- 4. progress

@pytest.mark.parametrize("naive", [False, True])
def test_progress_has_one_point_per_layer_and_sparsity_in_order(cnn, naive):
    records = []
    layers = ["backbone.conv1", "backbone.conv3", "classifier"]
    r = scan(cnn, ScanSpec(SPS, layers=layers), progress=records.append, naive=naive)
    points = [p for p in records if isinstance(p.data, ScanPoint)]
    assert all(isinstance(p, Progress) for p in records)
    assert [(p.data.layer, p.data.index, p.data.sparsity) for p in points] == \
        [(n, i, s) for n in layers for i, s in enumerate(SPS)]
    for p in points:
        assert p.data.accuracy == r.layer(p.data.layer)["accuracy"][p.data.index]
    fractions = [p.fraction for p in points]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_progress_points_of_linked_rows(resnet):
    records = []
    sps = [0.25, 0.5]
    r = scan(resnet, ScanSpec(sps, granularity="channel", layers=["conv1", "layer1.0.conv2"]),
             progress=records.append)
    pts = [p.data for p in records if isinstance(p.data, ScanPoint)]
    assert [(p.layer, p.index) for p in pts] == [("conv1", 0), ("conv1", 1), ("layer1.0.conv2", 0),
                                                  ("layer1.0.conv2", 1)]
    for p in pts:
        assert p.accuracy == r.layer(p.layer)["accuracy"][p.index]


# ---------------------------------------------------------------------------- 5. early stop

@pytest.mark.parametrize("naive", [False, True])
def test_early_stop_marks_later_points_not_measured(cnn, naive):
    layers = ["backbone.conv0", "backbone.conv1", "backbone.conv3"]
    full = scan(cnn, ScanSpec(SPS, layers=layers))
    assert full.early_stop is None
    assert all(a is not None for l in full.layers for a in l["accuracy"]), "early stop is off by default"
    floor = 90.0
    stopped = scan(cnn, ScanSpec(SPS, layers=layers, early_stop=floor), naive=naive)
    assert stopped.early_stop == floor
    n_none = 0
    for lf, ls in zip(full.layers, stopped.layers):
        assert lf["name"] == ls["name"]
        below = next((i for i, a in enumerate(lf["accuracy"]) if a < floor), None)
        for i, a in enumerate(ls["accuracy"]):
            if below is None or i <= below:
                assert a == lf["accuracy"][i], f"{lf['name']} point {i} must be the measured value"
            else:
                assert a is None, f"{lf['name']} point {i} must be 'not measured', never extrapolated"
                n_none += 1
    assert n_none > 0, "the floor was chosen so that some layers stop early"


def test_early_stop_progress_reports_skipped_points_as_none(cnn):
    records = []
    r = scan(cnn, ScanSpec(SPS, layers=["backbone.conv0"], early_stop=99.0), progress=records.append)
    pts = [p.data for p in records if isinstance(p.data, ScanPoint)]
    assert len(pts) == len(SPS)
    assert [p.accuracy for p in pts] == r.layer("backbone.conv0")["accuracy"]
    assert pts[-1].accuracy is None


# ---------------------------------------------------------------------------- 6. bad inputs

@pytest.mark.parametrize("text", ["", " ", ",", [], ()])
def test_empty_sparsity_list(text):
    with pytest.raises(PlanError, match="empty"):
        parse_sparsities(text)


@pytest.mark.parametrize("bad", ["0", "1", "-0.1", "1.5", "abc", "nan", "inf", "0.5,0", "0.4,1.0",
                                 [0.5, 1.0], [0.0], [float("nan")], [-0.1], ["abc"]])
def test_sparsity_outside_the_open_interval_or_not_a_number(bad):
    with pytest.raises(PlanError):
        parse_sparsities(bad)


@pytest.mark.parametrize("dups", ["0.5,0.5", "0.4,0.5,0.50", [0.3, 0.3]])
def test_duplicate_sparsities(dups):
    with pytest.raises(PlanError, match="duplicate"):
        parse_sparsities(dups)


def test_good_sparsity_lists_are_sorted_floats():
    assert parse_sparsities("0.9, 0.4,0.6") == [0.4, 0.6, 0.9]
    assert parse_sparsities([0.7, "0.2"]) == [0.2, 0.7]
    assert parse_sparsities("0.5,") == [0.5]


def test_sparsity_list_with_none_is_a_plan_error():
    with pytest.raises(PlanError):
        parse_sparsities([0.5, None])


@pytest.mark.parametrize("sps", [[], [0.0, 0.5], [0.5, 1.0], [0.5, 0.5], ["x"]])
def test_scan_refuses_bad_sparsities(cnn, sps):
    before = snapshot(cnn)
    with pytest.raises(PlanError):
        scan(cnn, ScanSpec(sps))
    assert_unchanged(cnn, before)


def test_scan_refuses_an_unknown_layer(cnn):
    with pytest.raises(PlanError, match="nope"):
        scan(cnn, ScanSpec([0.5], layers=["backbone.conv1", "nope"]))


def test_scan_refuses_an_unknown_granularity_or_criterion(cnn):
    with pytest.raises(ExplorerError):
        scan(cnn, ScanSpec([0.5], granularity="diagonal"))
    with pytest.raises(ExplorerError):
        scan(cnn, ScanSpec([0.5], criterion="astrology"))


def test_scan_needs_labels():
    s = Session.open("digits-cnn", "synthetic")
    assert not s.dataset.has_labels
    with pytest.raises(ExplorerError, match="labels"):
        scan(s, ScanSpec([0.5]))


def test_latency_needs_a_structured_granularity(cnn):
    before = snapshot(cnn)
    with pytest.raises(PlanError, match="structured"):
        scan(cnn, ScanSpec([0.5], layers=["backbone.conv1"], latency=True, latency_runs=1))
    assert_unchanged(cnn, before)


def test_latency_scan_with_channels_measures_each_point(cnn):
    r = scan(cnn, ScanSpec([0.5], granularity="channel", layers=["backbone.conv2"], latency=True, latency_runs=2))
    assert r.dense_latency_ms is not None and r.dense_latency_ms > 0
    lats = r.layer("backbone.conv2")["latency_ms"]
    assert len(lats) == 1 and lats[0] is not None and lats[0] > 0


# ---------------------------------------------------------------------------- 7. files and the CLI

SCAN_KEYS = {"model", "dataset", "granularity", "criterion", "dense_accuracy", "sparsities", "layers"}


def test_run_scan_to_files_writes_json_and_csv_that_read_back(cnn, tmp_path):
    out, table = tmp_path / "scan.json", tmp_path / "scan.csv"
    d = run_scan_to_files(cnn, "0.5,0.9", "element", "l1", None, out, csv=table)
    on_disk = json.loads(out.read_text())
    assert SCAN_KEYS <= set(on_disk)
    assert on_disk["model"] == "digits-cnn" and on_disk["dataset"] == "digits"
    assert on_disk["granularity"] == "element" and on_disk["criterion"] == "l1"
    assert on_disk["sparsities"] == [0.5, 0.9]
    assert isinstance(on_disk["dense_accuracy"], float)
    assert [l["name"] for l in on_disk["layers"]] == cnn.layer_names
    for l in on_disk["layers"]:
        assert {"name", "params", "accuracy"} <= set(l)
        assert l["params"] == cnn.layer(l["name"]).params
        assert len(l["accuracy"]) == 2 and all(isinstance(a, float) for a in l["accuracy"])
    assert on_disk["layers"] == d["layers"]
    # same numbers as a direct scan
    assert accuracies(ScanResult.from_json(on_disk)) == accuracies(scan(cnn, ScanSpec([0.5, 0.9])))
    back = read_scan(out)
    assert back.to_json() == on_disk
    # CSV: a header with the sparsities, then one row per layer (plus the dense reference row)
    with open(table, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:2] == ["layer", "params"] and [float(x) for x in rows[0][2:]] == [0.5, 0.9]
    layer_rows = [r for r in rows[1:] if r[0] in cnn.layer_names]
    assert [r[0] for r in layer_rows] == cnn.layer_names
    assert len(rows) - 1 - len(layer_rows) <= 1, "at most one extra (dense) row"
    for r, l in zip(layer_rows, on_disk["layers"]):
        assert int(r[1]) == l["params"]
        assert [float(x) for x in r[2:]] == pytest.approx(l["accuracy"], abs=1e-3)


def test_files_keep_not_measured_points(cnn, tmp_path):
    out, table = tmp_path / "s.json", tmp_path / "s.csv"
    run_scan_to_files(cnn, SPS, "element", "l1", ["backbone.conv0"], out, csv=table, early_stop=99.0)
    d = json.loads(out.read_text())
    assert d["layers"][0]["accuracy"][-1] is None
    back = read_scan(out)
    assert back.layer("backbone.conv0")["accuracy"] == d["layers"][0]["accuracy"]
    assert back.early_stop == 99.0
    rows = list(csv.reader(open(table, newline="")))
    row = next(r for r in rows if r[0] == "backbone.conv0")
    assert row[-1] == "" and row[2] != ""


def test_write_csv_from_a_result(tmp_path):
    r = ScanResult(model="m", dataset="d", granularity="element", criterion="l1", split="test",
                   dense_accuracy=90.0, sparsities=[0.25, 0.75],
                   layers=[{"name": "a", "params": 10, "accuracy": [89.5, None]},
                           {"name": "b", "params": 20, "accuracy": [88.0, 12.5]}])
    path = write_csv(r, tmp_path / "t.csv")
    rows = list(csv.reader(open(path, newline="")))
    assert rows[0] == ["layer", "params", "0.25", "0.75"]
    body = [x for x in rows[1:] if x[0] in ("a", "b")]
    assert body == [["a", "10", "89.5000", ""], ["b", "20", "88.0000", "12.5000"]]


def _write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


GOOD = {"model": "digits-cnn", "dataset": "digits", "granularity": "element", "criterion": "l1",
        "dense_accuracy": 99.0, "sparsities": [0.5, 0.9],
        "layers": [{"name": "backbone.conv1", "params": 9216, "accuracy": [98.0, 50.0]}]}


@pytest.mark.parametrize("content", [
    "not json at all {",
    "",
    {k: v for k, v in GOOD.items() if k != "layers"},
    {k: v for k, v in GOOD.items() if k != "sparsities"},
    {k: v for k, v in GOOD.items() if k != "dense_accuracy"},
    {k: v for k, v in GOOD.items() if k != "model"},
    {**GOOD, "layers": [{"name": "backbone.conv1", "params": 9216, "accuracy": [98.0]}]},
    {**GOOD, "layers": [{"name": "backbone.conv1", "params": 9216, "accuracy": [98.0, 50.0, 10.0]}]},
    {**GOOD, "layers": [{"params": 9216, "accuracy": [98.0, 50.0]}]},
    {**GOOD, "layers": [{"name": "backbone.conv1", "params": 9216}]},
    {**GOOD, "sparsities": ["half", 0.9]},
    {**GOOD, "dense_accuracy": "high"},
    [1, 2, 3],
    "null",
])
def test_read_scan_refuses_malformed_files(tmp_path, content):
    with pytest.raises(PlanError):
        read_scan(_write(tmp_path / "bad.json", content))


def test_read_scan_of_a_missing_file(tmp_path):
    with pytest.raises(PlanError, match="does not exist"):
        read_scan(tmp_path / "nope.json")
    with pytest.raises(PlanError):
        read_scan(tmp_path)          # a folder, not a file


def test_read_scan_refuses_a_null_accuracy_list(tmp_path):
    bad = {**GOOD, "layers": [{"name": "backbone.conv1", "params": 9216, "accuracy": None}]}
    with pytest.raises(PlanError):
        read_scan(_write(tmp_path / "bad.json", bad))


@pytest.mark.parametrize("change", [
    {"layers": ["backbone.conv1"]},
    {"layers": [5]},
    {"layers": {"backbone.conv1": [98.0, 50.0]}},
    {"layers": [{"name": "backbone.conv1", "params": 9216, "accuracy": ["high", "low"]}]},
    {"sparsities": [0.5, 1.5]},
    {"sparsities": [0.5, 0.5]},
], ids=["entry-is-a-string", "entry-is-a-number", "layers-is-an-object", "accuracy-not-numbers",
        "sparsity-above-1", "duplicate-sparsities"])
def test_read_scan_refuses_malformed_entries(tmp_path, change):
    with pytest.raises(PlanError):
        read_scan(_write(tmp_path / "bad.json", {**GOOD, **change}))


def test_a_scan_file_with_unsorted_sparsities_allocates_like_the_sorted_one(tmp_path):
    from explorer.core.analyse.allocate import allocate_by_drop

    s = Session.open("digits-cnn")
    flat = {**GOOD, "dense_accuracy": 99.0, "sparsities": [0.9, 0.5],
            "layers": [{"name": "backbone.conv1", "params": 9216, "accuracy": [99.0, 99.0]}]}
    try:
        r = read_scan(_write(tmp_path / "unsorted.json", flat))
    except PlanError:
        return      # refusing the file is a fine fix too
    assert allocate_by_drop(s, r, 1.0).sparsities == {"backbone.conv1": 0.9}


def test_read_scan_accepts_a_good_minimal_file(tmp_path):
    r = read_scan(_write(tmp_path / "ok.json", GOOD))
    assert r.sparsities == [0.5, 0.9] and r.layer("backbone.conv1")["accuracy"] == [98.0, 50.0]
    assert r.dense_accuracy == 99.0 and r.granularity == "element"


def test_cli_sensitivity_writes_json_and_csv(tmp_path, capsys):
    from explorer.cli import main

    f, c = tmp_path / "S.json", tmp_path / "S.csv"
    assert main(["sensitivity", "--out", str(f), "--sparsities", "0.5,0.9", "--csv", str(c)]) == 0
    d = json.loads(f.read_text())
    assert SCAN_KEYS <= set(d) and d["sparsities"] == [0.5, 0.9] and d["model"] == "digits-cnn"
    assert len(d["layers"]) == 5
    assert read_scan(f).to_json() == d
    rows = list(csv.reader(open(c, newline="")))
    assert rows[0] == ["layer", "params", "0.5", "0.9"]
    assert [r[0] for r in rows if r[0] in {l["name"] for l in d["layers"]}] == [l["name"] for l in d["layers"]]
    printed = json.loads(capsys.readouterr().out)
    assert printed["layers"] == 5 and printed["dense_accuracy"] == d["dense_accuracy"]


@pytest.mark.parametrize("argv", [
    ["--sparsities", "0,2"],
    ["--sparsities", ""],
    ["--sparsities", "0.5,0.5"],
    ["--sparsities", "0.5", "--layers", "nope"],
    ["--sparsities", "0.5", "--granularity", "channel", "--layers", "classifier"],
    ["--sparsities", "0.5", "--dataset", "synthetic"],
    ["--sparsities", "0.5", "--latency"],
])
def test_cli_sensitivity_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, argv):
    from explorer.cli import main

    f = tmp_path / "S.json"
    assert main(["sensitivity", "--out", str(f), *argv]) == 2
    assert not f.exists()
    assert "error" in capsys.readouterr().err
