"""Hugging Face folders (hf:DIR): tiny Llama, GPT-2 and ViT built from configs, saved with save_pretrained and
opened through hf:DIR; text:FILE and perplexity; GPT-2's Conv1D layouts; exports and the folder written back."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from explorer.core.errors import ExplorerError, ModelLoadError, UntrustedFileError  # noqa: E402
from explorer.core.session import Session  # noqa: E402
from explorer.core.train.evaluate import evaluate  # noqa: E402
from tests import tiny_models as tiny  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf")
    return {"llama": tiny.llama_folder(d / "llama"), "gpt2": tiny.gpt2_folder(d / "gpt2"),
            "vit": tiny.vit_folder(d / "vit"), "text": tiny.write_text(d / "text.txt")}


def lm(folders, name: str) -> Session:
    return Session.open(f"hf:{folders[name]}", f"text:{folders['text']}")


def test_llama_folder_lists_attention_and_mlp_projections(folders):
    s = lm(folders, "llama")
    names = s.layer_names
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert sum(n.endswith(proj) for n in names) == 2, proj
    assert names[-1] == "lm_head" and s.layer("lm_head").is_output
    assert s.profile.total_params == sum(p.numel() for p in s.module.parameters())
    assert s.dataset.metric == "perplexity" and s.dataset.input_shape == (64,)


def test_text_blocks_are_next_token_pairs_split_in_order(folders):
    s = lm(folders, "llama")
    ds = s.dataset
    x, y = next(ds.batches("train", batch_size=4))
    assert x.dtype == torch.long and x.shape == (4, 64)
    assert torch.equal(x[:, 1:], y[:, :-1])            # labels are the inputs shifted by one token
    raw = folders["text"].read_bytes()
    assert bytes(x[0].tolist()) == raw[:64]             # no tokenizer: the UTF-8 bytes are the tokens
    n = ds.size("train") + ds.size("val") + ds.size("test")
    assert n == (len(raw) - 1) // 64 and ds.size("test") == n // 10


def test_perplexity_is_exp_of_mean_token_cross_entropy(folders):
    s = lm(folders, "llama")
    r = evaluate(s.module, s.dataset, "test")
    assert r.accuracy is None and r.perplexity == pytest.approx(math.exp(r.loss), rel=1e-9)
    xs, ys = zip(*s.dataset.batches("test", batch_size=1000))
    with torch.no_grad():
        logits = s.module(torch.cat(xs)).logits
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, tiny.VOCAB), torch.cat(ys).reshape(-1))
    assert r.perplexity == pytest.approx(math.exp(float(ce)), rel=1e-4)
    assert 100 < r.perplexity < 1000                    # a random byte model is about as unsure as 256 choices


def test_gpt2_conv1d_is_listed_transposed_and_tied_head_is_not(folders):
    s = lm(folders, "gpt2")
    c_attn = s.layer("transformer.h.0.attn.c_attn")
    assert c_attn.kind == "Conv1D" and c_attn.transposed
    assert c_attn.weight_shape == (32, 96) and c_attn.out_channels == 96 and c_attn.matrix_shape == (96, 32)
    assert "lm_head" not in s.layer_names               # tied to the token embedding: pruning it would prune both
    assert any("tied" in n for n in s.require().notes)


def test_gpt2_nm_runs_and_channels_follow_the_input_and_output_dimensions(folders):
    s = lm(folders, "gpt2")
    name = "transformer.h.0.mlp.c_fc"                    # Conv1D weight: (in 32, out 128)
    s.set_layer(name, sparsity=0.5, granularity="2:4")
    w = s.masked_state()[f"{name}.weight"]
    kept = (w != 0).reshape(8, 4, 128)                  # runs of 4 consecutive inputs, per output
    assert bool((kept.sum(dim=1) == 2).all())
    s.set_layer(name, sparsity=0.25, granularity="channel")
    w = s.masked_state()[f"{name}.weight"]
    dead_cols = (w == 0).all(dim=0)                     # a channel is an output: a column of the stored weight
    assert int(dead_cols.sum()) == 32 and not bool((w == 0).all(dim=1).any())
    b = s.masked_state()[f"{name}.bias"]
    assert bool((b[dead_cols] == 0).all())


def test_attention_channel_compaction_is_refused_with_a_reason_and_mlp_is_removed(folders):
    from explorer.core.arch_check import check_session

    for name in ("llama", "gpt2"):
        r = check_session(lm(folders, name), granularities=("element", "2:4", "channel"))
        assert all(g.ok for g in r.granularities.values()), r.granularities
        c = r.compact
        assert c.ok and c.rel_error <= 1e-4 and c.params_after < c.params_before
        assert c.kept_masked and all(c.kept_masked.values())     # attention: zeroed, with the reason


def test_vit_image_classifier_takes_images(folders):
    s = Session.open(f"hf:{folders['vit']}", "synthetic")
    assert s.require().input_shape == (3, 32, 32)
    assert sum(".attention." in n for n in s.layer_names) >= 8 and s.layer("classifier").is_output
    with pytest.raises(ExplorerError, match="language model reads text|text, for a causal language model"):
        Session.open(f"hf:{folders['vit']}", f"text:{folders['text']}")


def test_folders_that_need_code_or_lack_files_are_refused(folders, tmp_path):
    bad = tmp_path / "remote"
    bad.mkdir()
    cfg = json.loads((folders["llama"] / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "model.safetensors").write_bytes((folders["llama"] / "model.safetensors").read_bytes())
    with pytest.raises(UntrustedFileError, match="trust_remote_code"):
        Session.open(f"hf:{bad}", "synthetic")
    empty = tmp_path / "noweights"
    empty.mkdir()
    (empty / "config.json").write_text((folders["llama"] / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="no weights"):
        Session.open(f"hf:{empty}")
    with pytest.raises(ModelLoadError, match="no config.json"):
        Session.open(f"hf:{tmp_path}")
    with pytest.raises(ModelLoadError, match="does not exist"):
        Session.open(f"hf:{tmp_path / 'missing'}")


def test_folder_tokenizer_is_used_for_text(folders, tmp_path):
    pytest.importorskip("tokenizers")
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    d = tmp_path / "withtok"
    shutil.copytree(folders["llama"], d)
    words = sorted(set(folders["text"].read_text().split()))
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["[UNK]"] + words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(str(d))
    s = Session.open(f"hf:{d}", f"text:{folders['text']}")
    x, _ = next(s.dataset.batches("train", batch_size=1))
    assert int(x.max()) <= len(words)                    # word ids, not bytes
    assert any("tokenized with the tokenizer" in n for n in s.require().notes)


def test_lm_fine_tuning_selects_by_validation_perplexity(folders):
    from explorer.core.train.finetune import FinetuneConfig, finetune

    s = lm(folders, "llama")
    s.set_uniform(s.layer_names, 0.5, "element")
    plan = s.plan
    r = finetune(s.model_copy(s.masked_state(plan)), s.dataset, s.layer_names, plan, plan, s.masks_for_state,
                 FinetuneConfig(epochs=2, lr=3e-3, optimizer="adam", batch_size=8, max_batches=6))
    vals = [h.val_perplexity for h in r.history]
    assert all(v is not None and v > 1 for v in vals) and all(h.val_accuracy is None for h in r.history)
    assert r.best_epoch == 1 + vals.index(min(vals))


def test_lm_sensitivity_scan_and_allocation_use_perplexity(folders, tmp_path):
    from explorer.core.analyse.allocate import allocate_by_drop
    from explorer.core.analyse.sensitivity import ScanSpec, read_scan, scan

    s = lm(folders, "gpt2")
    names = ["transformer.h.0.mlp.c_fc", "transformer.h.1.attn.c_attn"]
    r = scan(s, ScanSpec(sparsities=[0.5, 0.9], layers=names))
    assert r.metric == "perplexity" and r.dense_accuracy > 1
    d = r.to_json()
    assert d["metric"] == "perplexity" and "dense_perplexity" in d and "dense_accuracy" not in d
    assert all("perplexity" in l and "accuracy" not in l for l in d["layers"])
    f = tmp_path / "scan.json"
    f.write_text(json.dumps(d))
    back = read_scan(f)
    assert back.metric == "perplexity" and back.layers[0]["accuracy"] == r.layers[0]["accuracy"]
    worst = max(back.measure.drop(back.dense_accuracy, v) for l in back.layers for v in l["accuracy"])
    a = allocate_by_drop(s, back, max_drop=worst + 1.0)     # a budget every point meets: the top sparsity
    assert all(a.sparsities[n] == 0.9 for n in names)
    a0 = allocate_by_drop(s, back, max_drop=0.0)
    assert a0.predicted_drop == 0.0


def test_prune_cli_writes_perplexity_report_exports_and_a_loadable_folder(folders, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from explorer.cli import main

    out = tmp_path / "out"          # the command in this process: a subprocess only added its imports
    rc = main(["prune", "--model", f"hf:{folders['llama']}", "--dataset", f"text:{folders['text']}",
               "--sparsity", "0.3", "--granularity", "channel", "--compact", "--export", "safetensors,onnx",
               "--no-latency", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["metric"] == "perplexity"
    for block in ("dense", "pruned", "compact"):
        assert rep[block]["accuracy"] is None and rep[block]["perplexity"] > 1
    assert rep["compact"]["params"] < rep["dense"]["params"]
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    pt = torch.load(out / "model.pt", weights_only=True)
    st = load_file(str(out / "model.safetensors"))
    assert set(pt) == set(st) and all(torch.equal(pt[k], st[k]) for k in pt)
    back = AutoModelForCausalLM.from_pretrained(str(out / "model_hf"), local_files_only=True).eval()
    s = lm(folders, "llama")
    s.module.load_state_dict(pt)
    x, _ = next(s.dataset.batches("test", batch_size=2))
    with torch.no_grad():
        assert torch.allclose(back(x).logits, s.module(x).logits, atol=1e-5)
    assert (out / "model.onnx").stat().st_size > 0
