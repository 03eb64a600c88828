"""The sparse runtime (issue 22): only layers measured faster become CSR, outputs match, the file reloads with
torch alone."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from explorer.core.analyse import sparse_kernels as sk
from explorer.core.analyse.latency import Latency
from explorer.core.deploy import sparse_runtime as srt


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, groups=2), nn.Flatten(),
                      nn.Linear(4 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    with torch.no_grad():
        for i, s in ((0, 0.8), (2, 0.8), (4, 0.95), (6, 0.3)):
            m[i].weight.copy_(sk.magnitude_masked(m[i].weight, s))
    return m


def _fake_timing(faster: set[str], names: dict[int, str]):
    """measure_latencies where the CSR kernel of the layers in ``faster`` is twice as fast, others twice as slow."""
    def fake(models, example, runs=1, **kw):
        csr = models["csr"]
        name = names[id(models["dense"])]
        ms = 0.5 if name in faster else 2.0
        mk = (lambda v: Latency(v, v, v, runs, int(example.shape[0]), 1))
        assert isinstance(csr, (sk.CsrLinear, sk.CsrConv))
        return {"dense": mk(1.0), "csr": mk(ms)}
    return fake


def test_only_layers_measured_faster_are_replaced(monkeypatch):
    m = _model()
    x = torch.randn(3, 2, 8, 8)
    names = ["0", "2", "4", "6"]
    work_names: dict[int, str] = {}
    real_copy = srt.copy.deepcopy

    def deepcopy(obj):
        out = real_copy(obj)
        for n in names:
            work_names[id(out.get_submodule(n))] = n
        return out
    monkeypatch.setattr(srt.copy, "deepcopy", deepcopy)
    monkeypatch.setattr(srt, "measure_latencies", _fake_timing({"4"}, work_names))
    rt = srt.build_sparse_runtime(m, x, names, runs=2)
    assert rt.layers == ["4"]
    assert isinstance(rt.module[4], sk.CsrLinear) and isinstance(rt.module[0], nn.Conv2d)
    assert rt.speedups == {"0": 0.5, "4": 2.0}
    assert "measured slower" in rt.kept_dense["0"] and "0.50×" in rt.kept_dense["0"]
    assert "grouped" in rt.kept_dense["2"]
    assert "30.0% sparse" in rt.kept_dense["6"] and "not timed" in rt.kept_dense["6"]
    with torch.no_grad():
        torch.testing.assert_close(rt.module(x), m(x), rtol=1e-5, atol=1e-6)
    assert rt.relative_difference <= srt.RTOL
    assert set(rt.report()) == {"file", "layers", "max_output_difference", "kept_dense"}
    assert isinstance(m[4], nn.Linear)           # the reference model is untouched


def test_never_replaces_a_layer_measured_slower():
    m = _model()
    rt = srt.build_sparse_runtime(m, torch.randn(1, 2, 8, 8), ["0", "2", "4", "6"], runs=3)
    for n in rt.layers:
        assert rt.speedups[n] > 1.0
    for n, sp in rt.speedups.items():
        assert (n in rt.layers) == (sp > 1.0)


def test_file_reloads_without_the_app_and_matches(tmp_path, monkeypatch):
    m = _model()
    x = torch.randn(2, 2, 8, 8)
    rt = srt.build_sparse_runtime(m, x, ["0", "4", "6"], runs=1)
    for i in (0, 4):              # both CSR kernels in the file, whatever the timing said
        if not isinstance(rt.module[i], (sk.CsrConv, sk.CsrLinear)):
            rt.module[i] = sk.csr_module(rt.module[i])
    path = srt.save_sparse_runtime(rt, tmp_path / srt.FILE, x)
    assert rt.file_format == "torchscript (scripted)"
    torch.save({"x": x, "y": m(x).detach()}, tmp_path / "io.pt")
    code = ("import sys; sys.modules['explorer'] = None\n"        # any import of the app fails
            "import torch\n"
            f"m = torch.jit.load({str(path)!r}); io = torch.load({str(tmp_path / 'io.pt')!r})\n"
            "for b in (1, 2):\n"
            "    y = m(io['x'][:b])\n"
            "    err = float((y - io['y'][:b]).abs().max() / io['y'][:b].abs().max())\n"
            "    assert err <= 1e-5, err\n"
            "print('ok', [k for k, v in sys.modules.items() if k.startswith('explorer') and v is not None])\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "ok []"


def test_prune_sparse_runtime_report(tmp_path, capsys):
    from explorer.cli import main

    out = tmp_path / "run"
    rc = main(["prune", "--model", "digits-mlp", "--sparsity", "0.95", "--sparse-runtime", "--latency-runs", "2",
               "--out", str(out)])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    sr = rep["sparse_runtime"]
    assert set(sr) == {"file", "layers", "max_output_difference", "kept_dense"}
    assert sr["file"] == srt.FILE and (out / srt.FILE).is_file()
    assert set(sr["layers"]) | set(sr["kept_dense"]) == {"fc1", "fc2", "fc3"}
    assert not set(sr["layers"]) & set(sr["kept_dense"])
    assert sr["max_output_difference"] < 1e-3
    assert set(rep["latency"]["sparse"]) >= {"median_ms", "p10_ms", "p90_ms", "runs", "batch", "threads"}
    loaded = torch.jit.load(str(out / srt.FILE))
    assert loaded(torch.zeros(1, 64)).shape == (1, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sparse_runtime_on_cuda():
    m = _model().cuda()
    rt = srt.build_sparse_runtime(m, torch.randn(4, 2, 8, 8, device="cuda"), ["0", "4", "6"], runs=2)
    for n in rt.layers:
        assert rt.speedups[n] > 1.0
    assert rt.relative_difference <= srt.RTOL
