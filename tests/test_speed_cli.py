"""``pruning-explorer speed`` (issue 22): the JSON contract and its refusals."""
from __future__ import annotations

import json

import pytest

from explorer.cli import main


def test_speed_json_contract(tmp_path, capsys):
    out = tmp_path / "s.json"
    rc = main(["speed", "--model", "digits-mlp", "--layers", "fc1", "fc3", "--sparsities", "0.5,0.95",
               "--batch", "1", "--runs", "1", "--threads", "1", "--out", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert set(d) == {"model", "device", "threads", "batch", "layers"}
    assert d["model"] == "digits-mlp" and d["batch"] == 1 and d["threads"] == 1 and d["device"] == "CPU"
    assert [l["name"] for l in d["layers"]] == ["fc1", "fc3"]
    assert d["layers"][0]["shape"] == [300, 64]
    for layer in d["layers"]:
        assert set(layer) == {"name", "shape", "kernels"}
        assert [k["kernel"] for k in layer["kernels"]] == ["csr", "channel"]     # no 2:4 on a CPU
        for k in layer["kernels"]:
            assert set(k) == {"kernel", "sparsities", "speedup", "break_even"}
            assert k["sparsities"] == [0.5, 0.95] and len(k["speedup"]) == 2
            assert k["break_even"] in (None, 0.5, 0.95)
    assert "fc1 300x64: csr" in capsys.readouterr().out


@pytest.mark.parametrize("args,words", [
    (["--sparsities", "0.5,1.2"], "between 0 and 1"),
    (["--sparsities", "x"], "not a number"),
    (["--layers", "nope"], "Unknown layer 'nope'"),
    (["--batch", "0"], "--batch"),
])
def test_speed_refusals(tmp_path, capsys, args, words):
    rc = main(["speed", "--model", "digits-mlp", *args, "--runs", "1", "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "s.json").exists()


def test_speed_layer_without_sparse_kernel_says_why(tmp_path, capsys):
    from explorer.core.session import Session

    s = Session.open(None, "synthetic", arch="tests.tiny_models:TinyViT", trust=True)
    mha = next(l.name for l in s.layers if l.name.endswith("self_attention.in_proj"))
    rc = main(["speed", "--arch", "tests.tiny_models:TinyViT", "--trust", "--dataset", "synthetic", "--layers", mha,
               "--sparsities", "0.9", "--runs", "1", "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "no sparse kernel for a part of MultiheadAttention" in err
    assert not (tmp_path / "s.json").exists()
