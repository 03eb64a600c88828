"""--device (issue 13): resolving device specs, data moved once, and the CUDA paths (skipped without a GPU)."""
from __future__ import annotations

import pytest
import torch

from explorer.cli import main
from explorer.core.device import available_devices, on_device, resolve_device
from explorer.core.errors import ExplorerError
from explorer.core.model.data import load_dataset

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")


def test_device_specs_resolve_or_are_refused_in_one_sentence():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("auto").type == ("cuda" if CUDA else resolve_device("auto").type)
    for bad in ("tpu", "cuda:x", "gpu0", ""):
        if bad == "":
            assert resolve_device(bad) == resolve_device("auto")
            continue
        with pytest.raises(ExplorerError, match="Unknown device"):
            resolve_device(bad)
    if not CUDA:
        with pytest.raises(ExplorerError, match="not available.*(CPU-only|no GPU)"):
            resolve_device("cuda")
    n = torch.cuda.device_count() if CUDA else 0
    with pytest.raises(ExplorerError):
        resolve_device(f"cuda:{n + 3}")
    assert available_devices()[0] == "auto" and available_devices()[-1] == "cpu"


def test_the_cli_refuses_an_absent_device_before_any_work(tmp_path, capsys):
    if CUDA:
        pytest.skip("this machine has CUDA")
    assert main(["prune", "--sparsity", "0.5", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "not available" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["sensitivity", "--device", "mps:1", "--out", str(tmp_path / "s.json")]) == 2


def test_in_memory_splits_move_to_a_device_once():
    ds = load_dataset("digits")
    meta = torch.device("meta")               # a device without memory: enough to see what moves where
    first = ds._tensors("val", meta)
    assert first[0].device == meta and ds._tensors("val", meta)[0] is first[0]      # cached: moved once
    x, y = next(ds.batches("val", 16, device=meta))
    assert x.device == meta and y.device == meta and x.shape[0] == 16
    cpu = ds._tensors("val", torch.device("cpu"))
    assert cpu[0].device.type == "cpu" and ("val", "cpu") not in ds._device_tensors   # no second host copy


def test_on_device_leaves_cpu_modules_alone():
    m = torch.nn.Linear(2, 2)
    assert on_device(m, torch.device("cpu")) is m and on_device(m, None) is m


@needs_cuda
def test_cuda_evaluation_matches_the_cpu(cnn):
    from explorer.core.train.evaluate import evaluate

    cpu = evaluate(cnn.model_copy(), cnn.dataset, "test")
    gpu = evaluate(cnn.model_copy().to("cuda"), cnn.dataset, "test")
    assert gpu.accuracy == pytest.approx(cpu.accuracy, abs=0.3)


@needs_cuda
def test_cuda_fine_tuning_keeps_zeros_and_returns_cpu_weights(cnn):
    from explorer.core.prune.plan import LayerPlan, Plan
    from explorer.core.train.distributed import Runtime
    from explorer.core.train.finetune import FinetuneConfig, finetune

    plan = Plan({n: LayerPlan(0.8) for n in cnn.layer_names})
    cnn.set_plan(plan)
    cnn.apply(plan)
    r = finetune(cnn.module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state,
                 FinetuneConfig(epochs=1, max_batches=10), runtime=Runtime(device=torch.device("cuda")))
    for n in cnn.layer_names:
        w = r.state[f"{n}.weight"]
        assert w.device.type == "cpu"
        assert bool((w[cnn.module.state_dict()[f"{n}.weight"] == 0] == 0).all())


@needs_cuda
def test_cuda_latency_uses_events(cnn, monkeypatch):
    from explorer.core.analyse import latency

    made = []
    real = torch.cuda.Event

    def event(*a, **kw):
        made.append(kw)
        return real(*a, **kw)
    monkeypatch.setattr(torch.cuda, "Event", event)
    lat = latency.measure_latency(cnn.model_copy().to("cuda"), torch.randn(1, 1, 8, 8), runs=5, warmup=1)
    assert lat.median_ms > 0 and len(made) == 10 and all(k.get("enable_timing") for k in made)


@needs_cuda
def test_cuda_scan_matches_the_cpu_scan(cnn):
    from explorer.core.analyse.sensitivity import ScanSpec, scan

    spec = ScanSpec(sparsities=[0.5, 0.9], layers=["backbone.conv1"])
    a = scan(cnn, spec)
    b = scan(cnn, spec, device=torch.device("cuda"))
    for x, y in zip(a.layers[0]["accuracy"], b.layers[0]["accuracy"]):
        assert x == pytest.approx(y, abs=0.6)
