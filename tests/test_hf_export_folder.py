"""model_hf/ is complete: the source folder's tokenizer and processor files (and its generation config, model card)
travel with the exported folder, so AutoTokenizer / AutoImageProcessor load it offline and a text-generation
pipeline runs on it as it is."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from explorer.core.flows.prune import run as run_prune  # noqa: E402
from explorer.core.model.hf import companion_files  # noqa: E402
from explorer.core.session import Session  # noqa: E402
from tests import tiny_models as tiny  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _llama_with_tokenizer(d: Path, text: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, PreTrainedTokenizerFast

    folder = tiny.llama_folder(d)
    words = sorted(set(text.read_text().split()))
    names = ["[UNK]", "</s>"] + words
    names += [f"w{i}" for i in range(tiny.VOCAB - len(names))]    # every id the model may emit is a word
    vocab = {w: i for i, w in enumerate(names)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()          # joins words with spaces
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>").save_pretrained(str(folder))
    GenerationConfig(max_new_tokens=4, do_sample=False, eos_token_id=1).save_pretrained(str(folder))
    (folder / "README.md").write_text("a tiny llama\n")
    return folder


def test_companion_files_are_everything_but_the_model(tmp_path):
    d = tmp_path / "f"
    d.mkdir()
    for n in ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
              "modeling_x.py", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
              "merges.txt", "preprocessor_config.json", "generation_config.json", "chat_template.jinja", ".hidden"):
        (d / n).write_text("{}")
    (d / "onnx").mkdir()
    assert [f.name for f in companion_files(d)] == [
        "chat_template.jinja", "generation_config.json", "merges.txt", "preprocessor_config.json",
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.json"]


def test_model_hf_loads_tokenizer_processor_and_runs_a_pipeline_offline(tmp_path):
    from transformers import ViTImageProcessor

    text = tiny.write_text(tmp_path / "text.txt", words=600)
    llama = _llama_with_tokenizer(tmp_path / "llama", text)
    s = Session.open(f"hf:{llama}", f"text:{text}")
    assert any("tokenized with the tokenizer" in n for n in s.require().notes)
    s.set_uniform(s.layer_names, 0.3)
    run_prune(s.snapshot(), tmp_path / "lm", measure=False)
    lm_out = tmp_path / "lm" / "model_hf"

    vit = tiny.vit_folder(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(vit))
    v = Session.open(f"hf:{vit}", "synthetic")
    v.set_uniform(v.layer_names, 0.3)
    run_prune(v.snapshot(), tmp_path / "im", measure=False)
    im_out = tmp_path / "im" / "model_hf"

    for src, out in ((llama, lm_out), (vit, im_out)):
        for f in companion_files(src):
            assert (out / f.name).is_file(), f.name
    assert (lm_out / "README.md").read_text() == "a tiny llama\n"
    assert json.loads((lm_out / "generation_config.json").read_text())["max_new_tokens"] == 4

    # a fresh process, offline, as a user would: nothing but the folder
    code = f"""
import json, sys
from transformers import AutoImageProcessor, AutoTokenizer, pipeline
tok = AutoTokenizer.from_pretrained({str(lm_out)!r})
ids = tok("the quick brown fox")["input_ids"]
gen = pipeline("text-generation", model={str(lm_out)!r}, device="cpu")
text = gen("the quick brown fox", max_new_tokens=3, min_new_tokens=3, do_sample=False)[0]["generated_text"]
proc = AutoImageProcessor.from_pretrained({str(im_out)!r})
print(json.dumps({{"ids": ids, "text": text, "proc": type(proc).__name__}}))
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    words = sorted(set(text.read_text().split()))
    assert r["ids"] == [2 + words.index(w) for w in "the quick brown fox".split()]   # the folder's word ids
    assert r["text"].startswith("the quick brown fox") and len(r["text"]) > len("the quick brown fox ")   # it generated
    assert r["proc"].startswith("ViTImageProcessor")
