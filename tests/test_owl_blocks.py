"""Issue 23 items 3 and 4: OWL / alpha layer sparsity (analyse/owl.py) and the block granularity (model/blocks.py,
analyse/depth.py, flows/depth.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explorer.core.analyse.depth import analyse_blocks, blocks_to_drop
from explorer.core.analyse.owl import allocate, hill_alpha, layer_alpha, meet_target
from explorer.core.errors import PlanError
from explorer.core.model.blocks import find_blocks, skipping, without_blocks
from explorer.core.session import Session
from tests import tiny_models as tiny


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    d = tmp_path_factory.mktemp("owl")
    return tiny.llama_folder(d / "llama"), tiny.write_text(d / "t.txt")


@pytest.fixture(scope="module")
def llama_session(llama):
    folder, text = llama
    return Session.open(f"hf:{folder}", f"text:{text}")


# ---------------------------------------------------------------- OWL and alpha

@pytest.mark.parametrize("method", ["owl", "alpha", "uniform"])
def test_allocation_meets_its_target_by_weight_count(llama_session, method):
    s = llama_session
    a = allocate(s, method, 0.6, criterion="wanda")
    assert all(0.0 <= v <= 1.0 for v in a.sparsities.values())
    assert set(a.sparsities) == set(s.layer_names)
    # the real masks: round(s·N) per layer, so the overall sparsity is S within that rounding
    assert s.totals(a.plan).sparsity == pytest.approx(0.6, abs=len(s.layer_names) / s.profile.prunable_params)
    if method != "uniform":
        assert len(set(round(v, 9) for v in a.sparsities.values())) > 1      # not the uniform plan
        # per block, like the paper: every layer of a decoder block shares its block's sparsity
        assert len({a.sparsities[n] for n in s.layer_names if n.startswith("model.layers.0.")}) == 1
        assert a.record()["level"] == "block"


def test_meet_target_clips_to_0_1_and_still_meets_the_target():
    params = {"a": 100, "b": 1000, "c": 10}
    for target, dev in ((0.95, {"a": -0.5, "b": 0.0, "c": 0.5}), (0.02, {"a": 0.3, "b": -0.3, "c": 0.0})):
        s = meet_target(target, dev, params)
        assert all(0.0 <= v <= 1.0 for v in s.values())
        assert sum(params[u] * s[u] for u in s) / sum(params.values()) == pytest.approx(target, abs=1e-9)


def test_more_outliers_get_less_sparsity(tmp_path):
    """fc2 of a digits MLP gets a few huge weights: its share of wanda scores above M x mean rises, and OWL
    gives it the lowest sparsity (layer level: the MLP has no blocks)."""
    base = Session.open("digits-mlp", "digits")
    state = {k: v.clone() for k, v in base.base_state().items()}
    w = state["fc2.weight"]
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(w.numel(), generator=g)[: w.numel() // 20]
    w.view(-1)[idx] *= 40.0
    f = tmp_path / "w.pt"
    torch.save(state, f)
    s = Session.open("digits-mlp", "digits", weights=str(f))
    a = allocate(s, "owl", 0.7, criterion="wanda", m=5.0, lam=0.08)
    assert a.record()["level"] == "layer"
    ratios = a.statistic
    assert max(ratios, key=ratios.get) == "fc2"
    assert min(a.sparsities, key=a.sparsities.get) == "fc2"
    order_r = sorted(ratios, key=ratios.get)
    order_s = sorted(a.sparsities, key=a.sparsities.get, reverse=True)
    assert order_r == order_s          # monotone: more outliers -> less sparsity
    assert max(a.sparsities.values()) - min(a.sparsities.values()) <= 2 * 0.08 + 1e-9


def test_alpha_orders_heavy_tailed_before_gaussian():
    rng = np.random.default_rng(0)
    gauss = torch.from_numpy(rng.standard_normal((200, 400))).float()
    heavy = torch.from_numpy(rng.standard_t(2.0, size=(200, 400))).float()
    a_g, a_h = layer_alpha(gauss), layer_alpha(heavy)
    assert a_h < a_g            # heavier tail: smaller power-law exponent
    assert 1.0 < a_h < 4.0 and a_g > 4.0
    # a pure power law with exponent 3: the Hill/Clauset fit finds it
    pl = (1 - rng.random(5000)) ** (-1 / (3.0 - 1))
    assert hill_alpha(pl) == pytest.approx(3.0, abs=0.15)
    assert hill_alpha([1.0, 2.0]) is None


def test_allocation_refuses_bad_settings(llama_session):
    with pytest.raises(PlanError, match="λ"):
        allocate(llama_session, "owl", 0.5, lam=0.9)
    with pytest.raises(PlanError, match="M"):
        allocate(llama_session, "owl", 0.5, m=0)
    with pytest.raises(PlanError, match="Unknown allocation"):
        allocate(llama_session, "fancy", 0.5)


# ---------------------------------------------------------------- blocks

def test_find_blocks_llama_resnet_digits(llama_session):
    import torchvision

    from explorer.core.model.nets import DigitsCNN, DigitsMLP

    st = find_blocks(llama_session.module)
    assert st.kind == "transformer" and st.paths == ["model.layers.0", "model.layers.1"]
    assert all(b.skippable for b in st.blocks)
    r = torchvision.models.resnet18()
    for stack in (find_blocks(r), find_blocks(r, torch.randn(1, 3, 32, 32))):
        assert stack.kind == "residual" and len(stack.blocks) == 8
        assert [b.path for b in stack.skippable] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert find_blocks(DigitsCNN()) is None and find_blocks(DigitsMLP()) is None


def test_dropping_blocks_equals_skipping_them(llama_session):
    import torchvision

    m = llama_session.snapshot().model()
    st = find_blocks(m)
    x = torch.randint(0, tiny.VOCAB, (2, 12))
    short = without_blocks(m, st, ["model.layers.0"])
    assert len(short.model.layers) == 1 and short.config.num_hidden_layers == 1
    assert short.model.layers[0].self_attn.layer_idx == 0
    with torch.no_grad(), skipping(m, ["model.layers.0"]):
        ref = m(x).logits
    assert torch.allclose(short(x).logits, ref, atol=1e-6)
    assert short.generate(x[:1], max_new_tokens=3, do_sample=False).shape[1] == 15   # runs with a cache
    r = torchvision.models.resnet18().eval()
    st = find_blocks(r)
    drop = ["layer1.1", "layer3.1"]
    xi = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with skipping(r, drop):
            ref = r(xi)
        out = without_blocks(r, st, drop)(xi)
    assert torch.equal(out, ref) and not torch.equal(out, r(xi))
    assert len(without_blocks(r, st, drop).layer1) == 1
    with pytest.raises(ValueError):
        without_blocks(r, st, ["layer2.0"])     # a downsampling block cannot be skipped


def test_blocks_to_drop_rounding():
    assert [blocks_to_drop(8, s) for s in (0.0, 0.06, 0.0625, 0.25, 0.3, 1.0)] == [0, 0, 1, 2, 2, 8]
    with pytest.raises(PlanError):
        blocks_to_drop(4, 1.5)


def test_depth_analysis_and_curve(llama_session):
    a = analyse_blocks(llama_session.snapshot(), measure_skipped=True, curve=True)
    assert a.metric == "perplexity" and a.split == "val"
    assert all(b.influence is not None and 0.0 <= b.influence <= 2.0 for b in a.blocks)
    assert all(b.metric_when_skipped is not None for b in a.blocks)
    assert [c["dropped"] for c in a.curve] == [0, 1, 2]
    assert a.curve[0]["metric"] == a.dense_metric
    first = a.order()[0]
    assert a.curve[1]["metric"] == pytest.approx(next(b.metric_when_skipped for b in a.blocks if b.path == first))


class _Run:
    def __init__(self, rc, err):
        self.returncode, self.stderr = rc, err


@pytest.fixture
def _cli(capsys):
    from explorer.cli import main

    def run(*args):
        capsys.readouterr()
        rc = main(list(args))
        return _Run(rc, capsys.readouterr().err)
    return run


def test_cli_block_prune_exports_a_shallower_model_that_reloads(llama, tmp_path, _cli):
    from transformers import AutoModelForCausalLM

    folder, text = llama
    out = tmp_path / "blk"
    r = _cli("prune", "--model", f"hf:{folder}", "--dataset", f"text:{text}", "--granularity", "block",
             "--sparsity", "0.5", "--latency-runs", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    b = rep["blocks"]
    assert len(b["dropped"]) == 1 and b["skippable"] == 2
    assert all(x["influence"] is not None and x["metric_when_skipped"] is not None for x in b["blocks"])
    assert rep["compact"]["latency_ms"] is not None and rep["dense"]["latency_ms"] is not None
    assert rep["compact"]["params"] < rep["dense"]["params"]
    dense = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    x = torch.randint(0, tiny.VOCAB, (1, 10))
    with torch.no_grad(), skipping(dense, b["dropped"]):
        ref = dense(x).logits
    back = torch.load(out / "model_compact.pt", weights_only=False).eval()     # trusted: written by this test
    hf = AutoModelForCausalLM.from_pretrained(str(out / "model_hf")).eval()
    assert hf.config.num_hidden_layers == 1
    with torch.no_grad():
        assert torch.allclose(back(x).logits, ref, atol=1e-5)
        assert torch.allclose(hf(x).logits, ref, atol=1e-5)
    assert set(torch.load(out / "model.pt")) == set(hf.state_dict())
    # the recipe drops the same blocks again
    r2 = _cli("prune", "--recipe", str(out / "recipe.json"), "--no-latency", "--out", str(tmp_path / "again"))
    assert r2.returncode == 0, r2.stderr
    assert json.loads((tmp_path / "again" / "report.json").read_text())["blocks"]["dropped"] == b["dropped"]


def test_cli_owl_records_the_allocation(llama, tmp_path, _cli):
    folder, text = llama
    out = tmp_path / "owl"
    r = _cli("prune", "--model", f"hf:{folder}", "--dataset", f"text:{text}", "--sparsity", "0.6", "-c", "wanda",
             "--allocation", "owl", "--no-latency", "--out", str(out))
    assert r.returncode == 0, r.stderr
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["allocation"]["method"] == "owl" and recipe["allocation"]["m"] == 5.0
    assert json.loads((out / "report.json").read_text())["sparsity"] == pytest.approx(0.6, abs=1e-3)
    sps = {n: v["sparsity"] for n, v in recipe["layers"].items()}
    assert len(set(sps.values())) > 1
    bad = _cli("prune", "--model", "digits-cnn", "--sparsity", "0.5", "-g", "block", "--out", str(tmp_path / "x"))
    assert bad.returncode != 0 and "no stack of repeated blocks" in bad.stderr and "Traceback" not in bad.stderr
