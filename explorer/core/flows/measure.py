"""The evaluate and latency flows: test quality and measured latency of a snapshot's plan, on copies of the model.

The work behind Run ▸ Evaluate and Measure latency, the lessons' live numbers and the dense baseline measured on
open. Nothing here applies a plan or reads a session: the flows return their results, and the caller records them
on its own thread (the window and lessons through the session's results part).
"""
from __future__ import annotations

import time

from ..analyse import latency as timing
from ..jobs import CancelToken, Progress, ProgressFn
from ..prune.compact import channel_removals, compact_checked, has_structure
from ..train.evaluate import EvalResult, evaluate
from .snapshot import Snapshot

DENSE_ON_OPEN_S = 1.0   # the dense baseline is evaluated on open when that is expected to take about this long


def evaluate_plan(snap: Snapshot, need_dense: bool, progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None) -> tuple[EvalResult, EvalResult | None]:
    """Test quality of the snapshot's plan over its kept weights (and of the dense loaded weights if
    ``need_dense``)."""
    progress = progress or (lambda p: None)
    dense = None
    if need_dense and not snap.plan.active() and _same_tensors(snap.base, snap.original):
        # the dense plan over the loaded weights: one evaluation is both numbers
        dense = evaluate(snap.job_model(snap.original), snap.dataset, "test", progress=lambda p: progress(
            Progress(p.fraction or 0, "evaluating dense model")), cancel=cancel)
        return dense, dense
    if need_dense:
        dense = evaluate(snap.job_model(snap.original), snap.dataset, "test", progress=lambda p: progress(
            Progress((p.fraction or 0) * 0.5, "evaluating dense model")), cancel=cancel)
    current = evaluate(snap.job_model(snap.masked_state()), snap.dataset, "test", progress=lambda p: progress(
        Progress(0.5 + (p.fraction or 0) * 0.5, "evaluating current model")), cancel=cancel)
    return current, dense


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] is b[k] for k in a)


def measure_latency(snap: Snapshot, batch: int = 1, runs: int = 30, threads: int | None = None,
                    with_onnx: bool = False, progress: ProgressFn | None = None,
                    cancel: CancelToken | None = None) -> timing.LatencyComparison:
    """Dense vs masked (vs compacted, when the plan removes channels) latency, interleaved on one input.
    ``with_onnx``: onnxruntime is timed next to PyTorch (the dense model and the best pruned one)."""
    from ..model.layers import profile_model

    progress = progress or (lambda p: None)
    plan = snap.plan
    example = timing.latency_input(snap.dataset, snap.input_shape, batch)
    totals = snap.totals(plan)
    state = snap.masked_state(plan)
    models = {"dense": snap.model(snap.original), "masked": snap.model(state)}
    compact_macs = compact_params = None
    if has_structure(plan):
        progress(Progress(None, "compacting"))
        models["compact"], _ = compact_checked(models["masked"], state, channel_removals(snap, plan), example,
                                               cancel=cancel)
        compact_macs = profile_model(models["compact"], snap.input_shape, example=example[:1]).total_macs
        compact_params = sum(p.numel() for p in models["compact"].parameters())
    if with_onnx:
        from ..deploy.onnx_latency import onnx_runner

        best = "compact" if "compact" in models else "masked"
        progress(Progress(None, "exporting to ONNX for onnxruntime"))
        with timing.torch_threads(threads):
            models["onnx:dense"] = onnx_runner(models["dense"], example, threads)
            models[f"onnx:{best}"] = onnx_runner(models[best], example, threads)
    # built on the CPU, the PyTorch ones timed on the device (onnxruntime runs on the CPU)
    models = {k: (m if k.startswith("onnx:") else m.to(snap.device)) for k, m in models.items()}
    lat = timing.measure_latencies(models, example, runs, threads=threads, progress=progress, cancel=cancel)
    onnx = {k[5:]: v for k, v in lat.items() if k.startswith("onnx:")} or None
    return timing.LatencyComparison(lat["dense"], lat["masked"], lat.get("compact"), totals.macs, totals.nonzero_macs,
                             compact_macs, compact_params, batch, onnx)


def dense_eval_seconds(snap: Snapshot) -> float:
    """How long evaluating the dense model on the test split is expected to take: one timed batch, scaled."""
    import torch

    ds = snap.dataset
    n = ds.size("test") if ds.has_labels else 0
    if not n:
        return float("inf")
    x = ds.example_input(min(16, n)).to(snap.device)
    m = snap.job_model(snap.original)
    with torch.no_grad():
        m(x)                                  # first call: allocations
        t0 = time.perf_counter()
        m(x)
        dt = time.perf_counter() - t0
    return dt * n / len(x)
