"""``pruning-explorer info``: the layer table, its JSON form, and how user errors are reported.

The CLI runs in-process (``explorer.cli.main``) so output is captured with capsys.
User errors exit with status 2 and print one paragraph on stderr, never a
traceback (unless ``--debug``, which re-raises).
"""
from __future__ import annotations

import json

import pytest
import torch

from explorer.cli import EXIT_USER_ERROR, main
from explorer.core.errors import ModelLoadError
from explorer.core.model import nets

LAYER_KEYS = {"name", "type", "shape", "params", "macs", "sparsity"}


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_user_error(rc, out, err):
    assert rc == EXIT_USER_ERROR == 2
    text = err.strip()
    assert text.startswith("error:"), err
    assert "Traceback" not in err and "Traceback" not in out
    assert 'File "' not in err
    assert "\n\n" not in text, "more than one paragraph"
    assert "internal error" not in err
    return text


def test_info_json_resnet18(capsys):
    rc, out, err = _run(capsys, "info", "--model", "torchvision:resnet18", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["model"] == "torchvision:resnet18"
    assert d["input_shape"] == [3, 224, 224]
    layers = d["layers"]
    assert len(layers) == 21
    for l in layers:
        assert LAYER_KEYS <= set(l), l.keys()
        assert isinstance(l["params"], int) and isinstance(l["macs"], int)
        assert l["params"] == int(torch.tensor(l["shape"]).prod())
        # nothing is pruned; random init may hold a handful of exact zeros, which count as sparsity
        assert 0.0 <= l["sparsity"] < 1e-4
    assert layers[0]["name"] == "conv1" and layers[0]["type"] == "Conv2d" and layers[0]["shape"] == [64, 3, 7, 7]
    assert layers[-1]["name"] == "fc" and layers[-1]["type"] == "Linear" and layers[-1]["shape"] == [1000, 512]
    assert layers[0]["macs"] == 118_013_952
    t = d["totals"]
    assert t["params"] == 11_689_512
    assert t["layers"] == 21
    assert t["prunable_params"] == sum(l["params"] for l in layers)
    assert t["macs"] >= sum(l["macs"] for l in layers)
    assert t["size_bytes"] == 11_689_512 * 4


def test_info_table_default_model(capsys):
    rc, out, err = _run(capsys, "info")
    assert rc == 0, err
    lines = out.splitlines()
    assert "digits-cnn" in lines[0] and "digits" in lines[0]
    header = lines[1].split()
    assert header == ["layer", "type", "shape", "params", "MACs", "sparsity"]
    rows = [ln.split() for ln in lines[2:] if ln.startswith(("backbone.", "classifier"))]
    assert [r[0] for r in rows] == ["backbone.conv0", "backbone.conv1", "backbone.conv2", "backbone.conv3",
                                    "classifier"]
    assert rows[0][1:3] == ["Conv2d", "32x1x3x3"]
    assert rows[-1][1:3] == ["Linear", "10x256"]
    assert all(r[-1] == "0.0%" for r in rows)
    expected_params = sum(p.numel() for p in nets.DigitsCNN().parameters())
    assert f"{expected_params:,} parameters" in out
    assert "5 prunable layers" in out


def test_info_json_default_model_matches_table(capsys):
    rc, out, _ = _run(capsys, "info", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["model"] == "digits-cnn" and d["dataset"] == "digits"
    assert [l["name"] for l in d["layers"]] == ["backbone.conv0", "backbone.conv1", "backbone.conv2",
                                                  "backbone.conv3", "classifier"]
    assert [l["name"] for l in d["layers"] if l["is_output"]] == ["classifier"]


def test_list_models_json(capsys):
    rc, out, _ = _run(capsys, "info", "--list-models", "--json")
    assert rc == 0
    d = json.loads(out)
    assert "digits-cnn" in d["builtin"] and "digits-mlp" in d["builtin"]
    assert "resnet18" in d["torchvision"] and "mobilenet_v2" in d["torchvision"]


def test_list_models_text(capsys):
    rc, out, _ = _run(capsys, "info", "--list-models")
    assert rc == 0
    assert "digits-cnn" in out and "resnet18" in out


def test_nonexistent_model_file(capsys, tmp_path):
    missing = tmp_path / "missing.pt"
    rc, out, err = _run(capsys, "info", "--model", str(missing))
    text = _assert_user_error(rc, out, err)
    assert str(missing) in text
    assert out == ""


def test_text_file_as_pt(capsys, tmp_path):
    f = tmp_path / "notes.pt"
    f.write_text("hello world\nthis is not a checkpoint\n")
    rc, out, err = _run(capsys, "info", "--model", str(f))
    text = _assert_user_error(rc, out, err)
    assert "notes.pt" in text


def test_untrusted_pickle(capsys, tmp_path):
    f = tmp_path / "whole.pt"
    torch.save(nets.DigitsMLP(), f)
    rc, out, err = _run(capsys, "info", "--model", str(f))
    text = _assert_user_error(rc, out, err)
    assert "--trust" in text
    assert "whole.pt" in text


def test_trusted_pickle_with_dataset(capsys, tmp_path):
    f = tmp_path / "whole.pt"
    torch.save(nets.DigitsMLP(), f)
    rc, out, err = _run(capsys, "info", "--model", str(f), "--trust", "--dataset", "digits", "--json")
    assert rc == 0, err
    assert [l["name"] for l in json.loads(out)["layers"]] == ["fc1", "fc2", "fc3"]


def test_wrong_arch_state_dict(capsys, tmp_path):
    f = tmp_path / "mlp.pt"
    torch.save(nets.DigitsMLP().state_dict(), f)
    rc, out, err = _run(capsys, "info", "--model", str(f), "--arch", "digits-cnn")
    text = _assert_user_error(rc, out, err)
    assert "fc1.weight" in text


def test_missing_dataset_root(capsys, tmp_path):
    rc, out, err = _run(capsys, "info", "--dataset", f"mnist:{tmp_path / 'nope'}")
    _assert_user_error(rc, out, err)


def test_bad_input_shape(capsys):
    rc, out, err = _run(capsys, "info", "--model", "digits-cnn", "--dataset", "synthetic", "--input-shape", "a,b")
    _assert_user_error(rc, out, err)


def test_shape_mismatch(capsys):
    rc, out, err = _run(capsys, "info", "--model", "digits-cnn", "--dataset", "synthetic",
                        "--input-shape", "3,32,32")
    text = _assert_user_error(rc, out, err)
    assert "(3, 32, 32)" in text


def test_debug_reraises(capsys, tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(ModelLoadError):
        main(["info", "--model", str(missing), "--debug"])
