"""timm:<arch>, your own class (--arch module.path:ClassName, only with --trust), .safetensors state_dicts,
and the deploy exports (safetensors, ONNX through onnxruntime); a missing extra names itself."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explorer.core.errors import ExplorerError, ModelLoadError, UntrustedFileError
from explorer.core.session import Session

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "explorer.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------- your own class

def test_user_class_needs_trust_and_the_refusal_says_so():
    with pytest.raises(UntrustedFileError, match="--trust"):
        Session.open(None, "synthetic", arch="tests.tiny_models:TinyViT")
    p = cli("info", "--arch", "tests.tiny_models:TinyViT")
    assert p.returncode == 2 and "--trust" in p.stderr and "Traceback" not in p.stderr


def test_user_class_builds_and_takes_its_weights(tmp_path):
    s = Session.open(None, "synthetic", arch="tests.tiny_models:TinyViT", trust=True)
    assert s.model_spec == "tests.tiny_models:TinyViT" and s.require().input_shape == (3, 32, 32)
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in s.module.state_dict().items()}
    f = tmp_path / "w.pt"
    torch.save(sd, f)
    s2 = Session.open(str(f), "synthetic", arch="tests.tiny_models:TinyViT", trust=True)
    assert all(torch.equal(s2.module.state_dict()[k], v) for k, v in sd.items())


@pytest.mark.parametrize("spec, match", [("tests.tiny_models:Nope", "has no 'Nope'"),
                                         ("tests.no_such_module:Net", "cannot be found"),
                                         ("tests.tiny_models:NeedsArgs", "without arguments"),
                                         ("tests.tiny_models:write_text", "not an nn.Module class")])
def test_user_class_errors_are_clear(spec, match):
    with pytest.raises(ModelLoadError, match=match):
        Session.open(None, "synthetic", arch=spec, trust=True)


# ---------------------------------------------------------------- safetensors

def test_safetensors_state_dict_works_wherever_a_pt_does(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    base = Session.open("torchvision:resnet18", "synthetic", input_shape=(3, 32, 32))
    sd = {k: (v + 0.5 if v.is_floating_point() else v) for k, v in base.module.state_dict().items()}
    f = tmp_path / "r18.safetensors"
    st.save_file({k: v.contiguous() for k, v in sd.items()}, str(f))
    as_model = Session.open(str(f), "synthetic", arch="torchvision:resnet18", input_shape=(3, 32, 32))   # no --trust
    as_weights = Session.open("torchvision:resnet18", "synthetic", weights=str(f), input_shape=(3, 32, 32))
    for s in (as_model, as_weights):
        assert all(torch.equal(s.module.state_dict()[k], v) for k, v in sd.items())
    renamed = tmp_path / "weights.bin"                       # recognised by its header, not only its name
    renamed.write_bytes(f.read_bytes())
    s = Session.open(str(renamed), "synthetic", arch="torchvision:resnet18", input_shape=(3, 32, 32))
    assert torch.equal(s.module.state_dict()["fc.weight"], sd["fc.weight"])
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(f.read_bytes()[:2000])
    with pytest.raises(ModelLoadError, match="not a readable"):
        Session.open(str(broken), "synthetic", arch="torchvision:resnet18")


def test_builtin_arch_guessed_from_a_safetensors_file(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    s = Session.open("digits-cnn")
    f = tmp_path / "cnn.safetensors"
    st.save_file({k: v.contiguous() for k, v in s.module.state_dict().items()}, str(f))
    s2 = Session.open(str(f))
    assert s2.require().model.arch == "digits-cnn"


# ---------------------------------------------------------------- timm

def test_timm_random_init_and_weights(tmp_path):
    pytest.importorskip("timm")
    st = pytest.importorskip("safetensors.torch")
    s = Session.open("timm:test_efficientnet", "synthetic", input_shape=(3, 64, 64))
    assert s.require().model.source == "timm" and len(s.layer_names) > 10
    again = Session.open("timm:test_efficientnet", "synthetic", input_shape=(3, 64, 64))
    assert all(torch.equal(a, b) for a, b in zip(s.module.state_dict().values(), again.module.state_dict().values()))
    sd = {k: (v * 2 if v.is_floating_point() else v).contiguous() for k, v in s.module.state_dict().items()}
    f = tmp_path / "t.safetensors"
    st.save_file(sd, str(f))
    w = Session.open("timm:test_efficientnet", "synthetic", weights=str(f), input_shape=(3, 64, 64))
    assert all(torch.equal(w.module.state_dict()[k], v) for k, v in sd.items())
    with pytest.raises(ModelLoadError, match="timm has no architecture"):
        Session.open("timm:no_such_net_xyz")


# ---------------------------------------------------------------- exports and extras

def test_prune_exports_safetensors_and_onnx_of_the_compacted_model(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from safetensors.torch import load_file

    from explorer.cli import main
    from explorer.core.deploy.formats import onnx_session

    out = tmp_path / "out"          # the command in this process (the user-class test above runs one of its own)
    rc = main(["prune", "--model", "torchvision:resnet18", "--dataset", "synthetic", "--input-shape", "3,32,32",
               "--sparsity", "0.5", "--granularity", "channel", "--compact", "--export", "safetensors,onnx",
               "--no-latency", "--out", str(out)])
    p = capsys.readouterr()
    assert rc == 0, p.err[-2000:]
    files = json.loads(p.out)["files"]
    assert {"model.safetensors", "model.onnx"} <= set(files)
    pt = torch.load(out / "model.pt", weights_only=True)
    st = load_file(str(out / "model.safetensors"))
    assert set(pt) == set(st) and all(torch.equal(pt[k], st[k]) for k in pt)
    compact = torch.load(out / "model_compact.pt", weights_only=False).eval()
    sess = onnx_session(out / "model.onnx")
    x = torch.randn(3, 3, 32, 32)                              # another batch size than the export's example
    got = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        ref = compact(x)
    assert float((got - ref).abs().max() / ref.abs().max()) <= 1e-4
    rc = main(["prune", "--model", "digits-mlp", "--sparsity", "0.5", "--export", "tflite", "--out", str(tmp_path / "b")])
    assert rc == 2 and "Unknown export format 'tflite'" in capsys.readouterr().err


def test_onnx_export_refuses_a_model_whose_graph_differs(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from explorer.core.deploy import formats

    s = Session.open("digits-mlp")
    monkeypatch.setattr(formats, "ONNX_RTOL", -1.0)             # nothing can pass: the check must refuse
    with pytest.raises(ExplorerError, match="differ from PyTorch"):
        formats.export_onnx(s.module, s.dataset.example_input(2), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_missing_extra_names_the_extra_to_install(monkeypatch):
    from explorer.core.extras import MissingExtraError, require

    monkeypatch.setitem(sys.modules, "timm", None)            # import timm now fails, as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'pruning-explorer\[timm\]'"):
        require("timm", "The model timm:resnet18")
    with pytest.raises(MissingExtraError, match=r"timm:test_resnet needs the optional package 'timm'"):
        Session.open("timm:test_resnet")


def test_extras_are_declared_and_installed_by_make_test():
    import tomllib

    d = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, pkgs in {"hf": ("transformers", "safetensors"), "timm": ("timm",), "onnx": ("onnx", "onnxruntime"),
                        "safetensors": ("safetensors",)}.items():
        assert extra in d and all(any(r.startswith(p) for r in d[extra]) for p in pkgs), extra
    test = " ".join(d["test"])
    assert all(p in test for p in ("transformers", "timm", "safetensors", "onnx", "onnxruntime"))
