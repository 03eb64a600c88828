"""The built-in language model tiny-lm and its text tiny-text: it loads like the digits models, its splits are
the text in order, it is trained (far below a unigram byte model's perplexity), it prunes through the CLI, and
train-builtin reproduces it bit for bit."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from explorer import RESOURCES
from explorer.core.errors import DatasetError
from explorer.core.model import data, zoo
from explorer.core.model.text_data import TINY_TEXT_FILE
from explorer.core.model.tiny_lm import TinyLM
from explorer.core.train.builtin_training import train_builtin
from explorer.core.train.evaluate import evaluate

TOKENS = {"vocab_size": 256, "tokenizer": None}


@pytest.fixture(scope="module")
def text():
    return data.load_dataset("tiny-text", (128,), tokens=TOKENS)


def test_tiny_lm_loads_as_a_builtin_causal_lm_shaped_like_llama():
    lm = zoo.load_model("tiny-lm")
    assert (lm.source, lm.task, lm.vocab_size, lm.input_shape, lm.default_dataset) == \
        ("builtin", "causal-lm", 256, (128,), "tiny-text")
    assert lm.weights.endswith("tiny-lm.pt") and "random weights" not in lm.notes
    m = lm.module
    assert isinstance(m, TinyLM) and isinstance(m.layers, nn.ModuleList) and not m.training
    names = {n for n, _ in m.named_modules()}
    for part in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                 "mlp.down_proj"):
        assert f"layers.0.{part}" in names and m.get_submodule(f"layers.0.{part}").bias is None
    assert m.lm_head.weight.data_ptr() != m.embed_tokens.weight.data_ptr()     # not tied
    assert 2_000_000 < sum(p.numel() for p in m.parameters()) < 6_000_000
    assert (RESOURCES / "models" / "tiny-lm.pt").stat().st_size < 12 * 2**20
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        out = m(x)
        assert out.shape == (2, 16, 256)
        # causal: changing a later token leaves the earlier positions' logits as they were
        y = x.clone()
        y[:, 10] = (y[:, 10] + 1) % 256
        assert torch.allclose(m(y)[:, :10], out[:, :10], atol=1e-5)
        assert not torch.allclose(m(y)[:, 10:], out[:, 10:], atol=1e-5)


def test_tiny_text_splits_are_the_text_in_order_and_disjoint(text):
    raw = (RESOURCES / "data" / TINY_TEXT_FILE).read_bytes()
    raw.decode("utf-8")
    assert text.spec == "tiny-text" and text.metric == "perplexity" and text.input_shape == (128,)
    xs = [text.split(s).tensors[0] for s in ("train", "val", "test")]
    ys = [text.split(s).tensors[1] for s in ("train", "val", "test")]
    assert [len(x) for x in xs] == [2914, 364, 364]
    joined = torch.cat([x.reshape(-1) for x in xs])
    assert bytes(joined.to(torch.uint8).tolist()) == raw[:joined.numel()]     # consecutive, no overlap, no gap
    for x, y in zip(xs, ys):
        assert torch.equal(y[:, :-1], x[:, 1:])                                 # labels: the next byte


def test_tiny_text_is_for_language_models_only():
    with pytest.raises(DatasetError, match="language model"):
        data.load_dataset("tiny-text", (1, 8, 8))


def unigram_perplexity(text) -> float:
    """A unigram byte model fitted on the train split (add-one smoothing), on the test split."""
    counts = torch.bincount(text.split("train").tensors[1].reshape(-1), minlength=256).double() + 1
    logp = (counts / counts.sum()).log()
    test = text.split("test").tensors[1].reshape(-1)
    return math.exp(-float(logp[test].mean()))


def test_tiny_lm_is_trained_far_below_a_unigram_byte_model(text):
    unigram = unigram_perplexity(text)
    assert 20 < unigram < 30
    ppl = evaluate(zoo.load_model("tiny-lm").module, text, "test").perplexity
    assert ppl < 6.0 < unigram / 3, (ppl, unigram)


def test_prune_tiny_lm_through_the_cli_reports_perplexity_on_test(tmp_path, capsys, short_tiny_text):
    from explorer.cli import main

    out = tmp_path / "p"
    assert main(["prune", "--model", "tiny-lm", "--sparsity", "0.5", "--criterion", "wanda", "--no-latency",
                 "--out", str(out)]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["metric"] == "perplexity" and r["split"] == "test" and r["dataset"] == "tiny-text"
    assert r["dense"]["accuracy"] is None
    assert 1.0 < r["dense"]["perplexity"] < r["pruned"]["perplexity"]
    assert abs(r["sparsity"] - 0.5) < 0.02
    pruned = zoo.load_model(str(out / "model.pt"))          # the architecture is recognised from the keys
    assert (pruned.arch, pruned.task, pruned.default_dataset) == ("tiny-lm", "causal-lm", "tiny-text")
    sd = torch.load(out / "model.pt", weights_only=True)
    assert float((sd["layers.0.mlp.up_proj.weight"] == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


def test_train_builtin_reproduces_tiny_lm_bit_for_bit(tmp_path):
    few = {"steps": 2, "eval_every": 2, "eval_limit": 4, "batch_size": 2, "warmup": 1}
    a = train_builtin("tiny-lm", tmp_path / "a", seed=0, log=lambda m: None, settings=few)
    b = train_builtin("tiny-lm", tmp_path / "b", seed=0, log=lambda m: None, settings=few)
    sa = torch.load(tmp_path / "a" / "tiny-lm.pt", weights_only=True)
    sb = torch.load(tmp_path / "b" / "tiny-lm.pt", weights_only=True)
    assert a["steps"] == 2 and a["test_perplexity"] == b["test_perplexity"]
    assert set(sa) == set(zoo.load_model("tiny-lm").module.state_dict())
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.manual_seed(0)
    init = TinyLM().state_dict()
    assert any(not torch.equal(sa[k], init[k].half()) for k in sa)       # the steps changed the weights


def test_latency_of_tiny_lm_dense_and_masked():
    from explorer.core.flows.measure import measure_latency
    from explorer.core.session import Session

    s = Session.open("tiny-lm")
    s.set_layer("layers.0.mlp.up_proj", 0.5)
    lat = measure_latency(s.snapshot(), batch=1, runs=3)
    assert lat.dense.median_ms > 0 and lat.masked.median_ms > 0 and lat.compact is None


def test_sensitivity_of_tiny_lm_through_the_cli_is_in_perplexity(tmp_path, capsys, short_tiny_text):
    from explorer.cli import main

    out = tmp_path / "s.json"
    assert main(["sensitivity", "--model", "tiny-lm", "--sparsities", "0.9", "--layers", "layers.0.attn.q_proj",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    scan = json.loads(out.read_text())
    assert scan["metric"] == "perplexity" and printed["dense_perplexity"] == scan["dense_perplexity"]
    assert scan["layers"][0]["perplexity"][0] > scan["dense_perplexity"]
