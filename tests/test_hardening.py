"""Issue 9: hostile, broken and unlucky inputs. Each case ends in one clear refusal (exit 2 from the CLI, an
ExplorerError from core), loses nothing, and never runs code from a file that was not trusted."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.core.errors import DatasetError, ExplorerError, ModelLoadError, PlanError, UntrustedFileError
from explorer.core.model import nets, zoo
from explorer.core.prune.recipe import read_recipe

ROOT = Path(__file__).resolve().parent.parent


def cli(capsys, *argv) -> tuple[int, str]:
    from explorer.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out + err


def one_paragraph(text: str) -> None:
    assert text.strip() and "Traceback" not in text and "internal error" not in text, text
    assert "\n\n" not in text.strip()


@pytest.fixture
def mlp_file(tmp_path):
    f = tmp_path / "mlp.pt"
    torch.save(zoo.seeded(nets.DigitsMLP).state_dict(), f)
    return f


# ------------------------------------------------------------------------------------------ security

class _System:
    def __reduce__(self):
        return (os.system, ("echo pwned > /nonexistent/x",))


def test_hostile_pickle_is_named_as_code_not_corrupt(tmp_path, capsys):
    f = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": _System()}, f)
    with pytest.raises(UntrustedFileError) as ei:
        zoo.load_model(str(f), arch="digits-mlp")
    msg = str(ei.value)
    assert "run code" in msg and "system" in msg and "--trust" in msg and "corrupt" not in msg
    one_paragraph(msg)
    rc, out = cli(capsys, "info", "--model", f, "--arch", "digits-mlp")
    assert rc == 2 and "run code" in out


def test_trusted_pickle_of_an_unimportable_class_names_the_class(tmp_path):
    code = textwrap.dedent("""
        import sys, torch
        sys.path.insert(0, sys.argv[2])
        import mymodels
        torch.save(mymodels.Net(), sys.argv[1])
    """)
    pkg = tmp_path / "src"
    pkg.mkdir()
    (pkg / "mymodels.py").write_text("import torch\nclass Net(torch.nn.Linear):\n"
                                     "    def __init__(self):\n        super().__init__(4, 2)\n")
    f = tmp_path / "whole.pt"
    subprocess.run([sys.executable, "-c", code, str(f), str(pkg)], check=True)
    with pytest.raises(ModelLoadError) as ei:
        zoo.load_model(str(f), trust=True)
    msg = str(ei.value)
    assert "mymodels" in msg and "cannot be imported" in msg and "PYTHONPATH" in msg
    one_paragraph(msg)


# ------------------------------------------------------------------------------------------ endless / huge input

def _run_child(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(ROOT))


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_endless_files_are_refused_not_read(capsys):
    rc, out = cli(capsys, "info", "--model", "/dev/zero", "--arch", "digits-cnn")
    assert rc == 2 and "not a regular file" in out
    for argv in (["prune", "--recipe", "/dev/zero", "--out", "/tmp/never"],
                 ["prune", "--from-sensitivity", "/dev/zero", "--max-drop", "1", "--out", "/tmp/never"]):
        rc, out = cli(capsys, *argv)
        assert rc == 2 and "not a regular file" in out
    assert not Path("/tmp/never").exists()


def test_a_huge_file_is_sniffed_not_read_whole(tmp_path):
    """A 3 GiB file of zeros named like a checkpoint: refused after reading its first bytes."""
    f = tmp_path / "huge.pt"
    with open(f, "wb") as fh:
        fh.truncate(3 * 2**30)                       # sparse: no disk used
    code = ("import resource, sys\nfrom explorer.core.model import zoo\nzoo.load_model('digits-cnn')\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"try:\n    zoo.load_model({str(f)!r}, arch='digits-cnn')\nexcept Exception as e:\n    print(type(e).__name__)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    p = _run_child(code)
    name, grew_kb = p.stdout.split()
    assert name == "ModelLoadError"
    assert int(grew_kb) < 500_000, f"peak RSS grew {int(grew_kb) // 1024} MiB: the file was read whole"


def _npz_with_header(path: Path, shape, real_bytes: int = 64):
    """An .npz whose one array declares ``shape`` but holds only ``real_bytes`` of data."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    buf.write(b"\0" * real_bytes)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w::dense.npy", buf.getvalue())
        meta = io.BytesIO()
        np.save(meta, np.frombuffer(b'{"format": "pruning-explorer-sparse"}', dtype=np.uint8))
        z.writestr("__meta__.npy", meta.getvalue())


def test_sparse_archive_declaring_37_gib_is_refused_before_allocating(tmp_path):
    f = tmp_path / "bomb.npz"
    _npz_with_header(f, (37 * 2**28,))                 # 37 GiB of float32 declared, 64 bytes present
    code = ("import resource\nfrom explorer.core.formats.sparse_archive import load_sparse_archive\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"try:\n    load_sparse_archive({str(f)!r})\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
            "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    p = _run_child(code)
    assert p.returncode == 0, p.stderr
    assert "ModelLoadError" in p.stdout and "damaged" in p.stdout
    assert int(p.stdout.split("RSS")[1]) < 500_000


def test_sparse_archive_with_metadata_that_is_not_json(tmp_path, capsys):
    import io
    import zipfile

    f = tmp_path / "bad.npz"
    with zipfile.ZipFile(f, "w") as z:
        meta = io.BytesIO()
        np.save(meta, np.frombuffer(b"{not json", dtype=np.uint8))
        z.writestr("__meta__.npy", meta.getvalue())
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        zoo.load_model(str(f))


def test_huge_input_shape_is_refused(capsys):
    rc, out = cli(capsys, "info", "--model", "torchvision:resnet18", "--input-shape", "3,100000,100000")
    assert rc == 2 and "too large" in out


def test_deeply_nested_json_is_refused(tmp_path):
    f = tmp_path / "deep.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(PlanError, match="nests too deeply"):
        read_recipe(f)


@pytest.mark.parametrize("finetune,match", [
    ({"epochs": 1_000_000_000}, "outside"),
    ({"epochs": 1.5}, "whole number"),
    ({"epochs": True}, "whole number"),
    ({"eval_split": "nope"}, "nope"),
    ({"lr": -1}, "outside"),
    ({"batch_size": 0}, "outside"),
    ({"optimizer": "rmsprop"}, "rmsprop"),
    ({"surprise": 1}, "unknown key"),
])
def test_recipe_finetune_values_are_checked_like_flags(tmp_path, capsys, finetune, match):
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"model": "digits-mlp", "layers": {"fc1": {"sparsity": 0.5}}, "finetune": finetune}))
    rc, out = cli(capsys, "prune", "--model", "digits-mlp", "--recipe", f, "--no-latency", "--out", tmp_path / "o")
    assert rc == 2 and match in out, out
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ silent wrong results

def test_flipped_bytes_in_a_checkpoint_are_refused(tmp_path, mlp_file):
    raw = bytearray(mlp_file.read_bytes())
    start = raw.find(b"data/0") + 200               # inside the first tensor's bytes
    raw[start:start + 4096] = bytes(b ^ 0xFF for b in raw[start:start + 4096])
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelLoadError, match="checksum"):
        zoo.load_model(str(bad), arch="digits-mlp")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_scan_with_a_non_finite_dense_accuracy_is_refused(tmp_path, capsys, value):
    f = tmp_path / "scan.json"
    f.write_text('{"model": "digits-mlp", "dataset": "digits", "sparsities": [0.5], "dense_accuracy": %s, '
                 '"layers": [{"name": "fc1", "params": 1, "accuracy": [90.0]}]}' % value)
    rc, out = cli(capsys, "prune", "--model", "digits-mlp", "--from-sensitivity", f, "--max-drop", "1",
                  "--no-latency", "--out", tmp_path / "o")
    assert rc == 2, out
    assert not (tmp_path / "o").exists()


def test_a_model_with_nan_weights_can_be_pruned(tmp_path, capsys):
    sd = zoo.seeded(nets.DigitsMLP).state_dict()
    sd["fc2.weight"][0, :3] = float("nan")
    f = tmp_path / "nan.pt"
    torch.save(sd, f)
    rc, out = cli(capsys, "prune", "--model", f, "--arch", "digits-mlp", "--sparsity", "0.5", "--no-latency",
                  "--out", tmp_path / "o")
    assert rc == 0, out
    assert "non-finite" in out
    w = torch.load(tmp_path / "o" / "model.pt", weights_only=True)["fc2.weight"]
    assert torch.isnan(w).sum() == 3                 # reported, never pruned silently


def test_refusals_instead_of_silent_no_ops(tmp_path, capsys):
    rc, out = cli(capsys, "prune", "--model", "digits-mlp", "--dataset", "synthetic", "--criterion", "taylor",
                  "--sparsity", "0.5", "--no-latency", "--out", tmp_path / "a")
    assert rc == 2 and "labels" in out
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"model": "digits-mlp", "dataset": "digits", "sparsities": [0.5],
                                 "dense_accuracy": 98.0, "layers": []}))
    rc, out = cli(capsys, "prune", "--model", "digits-mlp", "--from-sensitivity", empty, "--max-drop", "1",
                  "--no-latency", "--out", tmp_path / "b")
    assert rc == 2 and "no layers" in out
    for flag, value in (("--latency-runs", "-3"), ("--latency-batch", "0")):
        rc, out = cli(capsys, "prune", "--model", "digits-mlp", "--sparsity", "0.5", flag, value, "--out",
                      tmp_path / "c")
        assert rc == 2 and flag in out
    r = tmp_path / "true.json"
    r.write_text(json.dumps({"layers": {"fc1": {"sparsity": True}}}))
    with pytest.raises(PlanError, match="number"):
        read_recipe(r)
    r.write_text(json.dumps({"layers": {"fc1": True}}))
    with pytest.raises(PlanError):
        read_recipe(r)
    assert not any((tmp_path / n).exists() for n in "abc")


def test_cli_latency_is_interleaved(tmp_path, capsys, monkeypatch):
    import explorer.core.analyse.latency as lat

    calls = []
    real = lat.measure_latencies

    def spy(models, *a, **kw):
        calls.append(sorted(models))
        return real(models, *a, **kw)
    monkeypatch.setattr(lat, "measure_latencies", spy)
    monkeypatch.setattr(lat, "measure_latency", lambda *a, **k: pytest.fail("timed alone, not interleaved"))
    rc, out = cli(capsys, "prune", "--model", "digits-cnn", "--sparsity", "0.5", "--granularity", "channel",
                  "--compact", "--latency-runs", "5", "--out", tmp_path / "o")
    assert rc == 0, out
    assert calls == [["compact", "dense", "pruned"]]
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["latency"]["interleaved"] is True and report["compact"]["latency_ms"] > 0


def test_spread_note_flags_a_meaningless_comparison():
    from explorer.core.analyse.latency import Latency, spread_note

    calm = {"dense": Latency(1.0, 0.95, 1.05, 30, 1, 1), "pruned": Latency(1.0, 0.9, 1.1, 30, 1, 1)}
    noisy = dict(calm, dense=Latency(1.0, 0.2, 9.0, 30, 1, 1))
    assert spread_note(calm) is None and "dense" in spread_note(noisy)


# ------------------------------------------------------------------------------------------ user mistakes: exit 2

def test_output_mistakes_are_refusals(tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    rc, out = cli(capsys, "prune", "--model", "digits-mlp", "--sparsity", "0.5", "--no-latency", "--out", a_file)
    assert rc == 2 and "file, not a folder" in out
    rc, out = cli(capsys, "prune", "--model", "digits-mlp", "--sparsity", "0.5", "--no-latency",
                  "--out", a_file / "sub")
    assert rc == 2 and "is a file" in out
    rc, out = cli(capsys, "sensitivity", "--model", "digits-mlp", "--sparsities", "0.5", "--out", tmp_path)
    assert rc == 2 and "is a folder" in out
    rc, out = cli(capsys, "prune", "--model", "digits-mlp", "--sparsity", "0.5", "--no-latency",
                  "--out", "~nosuchuser_xyz/out")
    assert rc == 2 and "unknown user" in out
    assert a_file.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_folder_is_a_refusal(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, out = cli(capsys, "prune", "--model", "digits-mlp", "--sparsity", "0.5", "--no-latency",
                      "--out", ro / "out")
        assert rc == 2 and "not writable" in out
    finally:
        ro.chmod(0o700)


def test_full_disk_is_a_refusal_and_keeps_the_old_file(tmp_path, monkeypatch):
    from explorer.core.deploy import export

    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed ... unexpected pos 64 vs 0")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ExplorerError, match="disk is full"):
        export.export_checkpoint({"a": torch.zeros(2)}, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]      # no temp left behind


def test_damaged_image_and_out_of_range_label(tmp_path):
    from PIL import Image

    from explorer.core.model.data import load_dataset
    from explorer.core.train.evaluate import evaluate

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "imgs" / c / f"{i}.png")
    (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    ds = load_dataset(f"imagefolder:{tmp_path / 'imgs'}", input_shape=(3, 8, 8))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 2))
    with pytest.raises(DatasetError, match="broken.png"):
        for split in ("train", "val", "test"):
            evaluate(model, ds, split)
    from tests.test_zoo_data import _write_idx
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (40, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", np.r_[rng.integers(0, 10, 39), 12])
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (10, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 10))
    with pytest.raises(DatasetError, match="12"):
        load_dataset(f"mnist:{tmp_path}")


def test_fine_tuning_torchscript_is_a_refusal(tmp_path, capsys):
    f = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(zoo.seeded(nets.DigitsMLP)), str(f))
    rc, out = cli(capsys, "prune", "--model", f, "--trust", "--dataset", "digits", "--sparsity", "0.5",
                  "--finetune-epochs", "1", "--no-latency", "--out", tmp_path / "o")
    assert rc == 2 and "TorchScript" in out and "fine-tuned" in out


@pytest.mark.parametrize("layer", [{"name": 5, "accuracy": [90.0]}, {"name": "fc1", "group": "fc1",
                                                                     "accuracy": [90.0]}])
def test_scan_file_with_wrong_types_is_refused(tmp_path, layer):
    from explorer.core.analyse.sensitivity import read_scan

    f = tmp_path / "s.json"
    f.write_text(json.dumps({"model": "m", "dataset": "d", "sparsities": [0.5], "dense_accuracy": 90.0,
                             "layers": [layer]}))
    with pytest.raises(PlanError, match="Not a valid sensitivity scan"):
        read_scan(f)


# ------------------------------------------------------------------------------------------ results folders

KILLER = textwrap.dedent("""
    import os, sys
    import explorer.core.deploy.export as export
    real = getattr(export, sys.argv[1])
    def die(*a, **k):
        real(*a, **k)
        os._exit(9)                        # as if killed right after writing that file into the staged folder
    setattr(export, sys.argv[1], die)
    from explorer.cli import main
    main(["prune", "--model", "digits-mlp", "--sparsity", sys.argv[2], "--no-latency", "--sparse-archive",
          "--out", sys.argv[3]])
""")


@pytest.mark.parametrize("victim", ["export_checkpoint", "export_recipe", "export_sparse_archive"])
def test_a_run_killed_part_way_leaves_the_previous_results_whole(tmp_path, capsys, victim):
    out = tmp_path / "out"
    assert cli(capsys, "prune", "--model", "digits-mlp", "--sparsity", "0.3", "--no-latency", "--sparse-archive",
               "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    p = _run_child(KILLER.replace("sys.argv[1]", repr(victim)).replace("sys.argv[2]", "'0.7'")
                   .replace("sys.argv[3]", repr(str(out))))
    assert p.returncode == 9, p.stderr
    assert {q.name: q.read_bytes() for q in out.iterdir()} == before      # one run or the other, not a mix
    assert any(q.name.startswith(".out.partial-") for q in tmp_path.iterdir())
    assert cli(capsys, "prune", "--model", "digits-mlp", "--sparsity", "0.7", "--no-latency", "--out", out)[0] == 0
    assert [q.name for q in tmp_path.iterdir()] == ["out"]                 # the next run tidies up
    assert json.loads((out / "report.json").read_text())["sparsity"] > 0.6


# ------------------------------------------------------------------------------------------ data hygiene

def test_sensitivity_defaults_to_the_validation_split(tmp_path, capsys):
    rc, out = cli(capsys, "sensitivity", "--model", "digits-mlp", "--sparsities", "0.5", "--layers", "fc3",
                  "--out", tmp_path / "s.json")
    assert rc == 0
    d = json.loads((tmp_path / "s.json").read_text())
    assert d["split"] == "val" and d["samples"] == 180


def test_identical_runs_give_byte_identical_checkpoints(tmp_path, capsys):
    for name in ("a", "b"):
        assert cli(capsys, "prune", "--model", "digits-mlp", "--sparsity", "0.5", "--no-latency",
                   "--out", tmp_path / name)[0] == 0
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()


def test_train_builtin_writes_where_it_is_asked(tmp_path, capsys, monkeypatch):
    import explorer.core.train.builtin_training as bt

    monkeypatch.setitem(bt.TRAIN_SETTINGS, "digits-mlp", dict(bt.TRAIN_SETTINGS["digits-mlp"], epochs=1))
    repo_file = ROOT / "resources" / "models" / "digits-mlp.pt"
    stamp = repo_file.stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "train-builtin", "--models", "digits-mlp")[0] == 0
    assert (tmp_path / "digits-mlp.pt").exists() and repo_file.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("flag,value,match", [("--tab", "nonsense", "no tab"), ("--size", "huge", "WIDTHxHEIGHT"),
                                              ("--size", "99999x10", "outside")])
def test_gui_refuses_unknown_values(tmp_path, capsys, flag, value, match):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    rc, out = cli(capsys, "gui", flag, value, "--screenshot", tmp_path / "s.png")
    assert rc == 2 and match in out
    assert not (tmp_path / "s.png").exists()


def test_help_explains_every_flag_with_its_default(capsys):
    from explorer.cli.parser import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["sensitivity"].format_help()
    for flag in ("-g", "-c", "--layers", "--split", "--out"):
        line = next(ln for ln in text.splitlines() if flag in ln)
        assert line.strip() != flag
    flat = " ".join(text.split())
    assert "(default: val)" in flat and "(default: 0.4,0.5,0.6,0.7,0.8,0.9)" in flat
    prune = build_parser()._subparsers._group_actions[0].choices["prune"].format_help()
    assert "per step with --iterative-steps" in " ".join(prune.split())


def test_pickle_module_stays_unused_when_untrusted(tmp_path):
    """The whole-module path: without trust, pickle never instantiates anything from the file."""
    f = tmp_path / "whole.pt"
    torch.save(zoo.seeded(nets.DigitsMLP), f)
    with pytest.raises(UntrustedFileError):
        zoo.load_model(str(f))
    assert pickle.loads(pickle.dumps(1)) == 1


def test_unwritable_folder_is_a_refusal_even_as_root(tmp_path, monkeypatch):
    import errno
    import tempfile

    from explorer.core.fileio import atomic_write_json

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(ExplorerError, match="not writable"):
        atomic_write_json(tmp_path / "x.json", {"a": 1})
