"""Evaluate and measure the latency of a plan on copies of the model: the work behind Run ▸ Evaluate and Measure
latency, the lessons' live numbers and the dense baseline measured on open. Nothing here applies a plan; the
results go to ``Session.record_evaluation`` / ``record_latency`` (on the caller's thread of choice)."""
from __future__ import annotations

import time

from .analyse.latency import latency_input, measure_latencies
from .jobs import Progress
from .measurements import LatencyComparison
from .prune.compact import channel_removals, compact_checked, has_structure
from .prune.plan import Plan
from .train.evaluate import EvalResult, evaluate

DENSE_ON_OPEN_S = 1.0   # the dense baseline is evaluated on open when that is expected to take about this long


def evaluate_plan(session, plan: Plan, need_dense: bool, progress=None, cancel=None
                  ) -> tuple[EvalResult, EvalResult | None]:
    """Test accuracy of ``plan`` over the kept weights (and of the dense loaded weights if ``need_dense``)."""
    progress = progress or (lambda p: None)
    state = session.masked_state(plan)
    original = session.original_state()
    dense = None
    if need_dense:   # job_copy: on the session's device
        dense = evaluate(session.job_copy(original), session.dataset, "test", progress=lambda p: progress(
            Progress((p.fraction or 0) * 0.5, "evaluating dense model")), cancel=cancel)
    current = evaluate(session.job_copy(state), session.dataset, "test", progress=lambda p: progress(
        Progress(0.5 + (p.fraction or 0) * 0.5, "evaluating current model")), cancel=cancel)
    return current, dense


def latency_job(session, plan: Plan, batch: int = 1, runs: int = 30, threads: int | None = None,
                with_onnx: bool = False):
    """The latency comparison of ``plan`` as a job ``work(progress, cancel)``; what needs the session's current
    state (channel removals, the example input, totals) is read now, on the caller's thread. ``with_onnx``:
    onnxruntime is timed next to PyTorch (the dense model and the best pruned one, interleaved)."""
    original = session.original_state()
    structured = has_structure(plan)
    removals = channel_removals(session, plan) if structured else {}
    example = latency_input(session.dataset, session.require().input_shape, batch)
    totals = session.totals(plan)
    shape = session.require().input_shape

    def work(progress=None, cancel=None) -> LatencyComparison:
        from .model.layers import profile_model

        progress = progress or (lambda p: None)
        state = session.masked_state(plan)
        models = {"dense": session.model_copy(original), "masked": session.model_copy(state)}
        compact_macs = compact_params = None
        if structured:
            progress(Progress(None, "compacting"))
            models["compact"], _ = compact_checked(models["masked"], state, removals, example, cancel=cancel)
            compact_macs = profile_model(models["compact"], shape, example=example[:1]).total_macs
            compact_params = sum(p.numel() for p in models["compact"].parameters())
        if with_onnx:
            from .analyse.latency import torch_threads
            from .deploy.onnx_latency import onnx_runner

            best = "compact" if "compact" in models else "masked"
            progress(Progress(None, "exporting to ONNX for onnxruntime"))
            with torch_threads(threads):
                models["onnx:dense"] = onnx_runner(models["dense"], example, threads)
                models[f"onnx:{best}"] = onnx_runner(models[best], example, threads)
        # built on the CPU, the PyTorch ones timed on the device (onnxruntime runs on the CPU)
        models = {k: (m if k.startswith("onnx:") else m.to(session.device)) for k, m in models.items()}
        lat = measure_latencies(models, example, runs, threads=threads, progress=progress, cancel=cancel)
        onnx = {k[5:]: v for k, v in lat.items() if k.startswith("onnx:")} or None
        return LatencyComparison(lat["dense"], lat["masked"], lat.get("compact"), totals.macs,
                                 totals.nonzero_macs, compact_macs, compact_params, batch, onnx)

    return work


def dense_eval_seconds(session) -> float:
    """How long evaluating the dense model on the test split is expected to take: one timed batch, scaled."""
    import torch

    ds = session.dataset
    n = ds.size("test") if ds.has_labels else 0
    if not n:
        return float("inf")
    x = ds.example_input(min(16, n))
    m = session.job_copy()
    x = x.to(session.device)
    with torch.no_grad():
        m(x)                                  # first call: allocations
        t0 = time.perf_counter()
        m(x)
        dt = time.perf_counter() - t0
    return dt * n / len(x)


def evaluate_dense_if_quick(session, limit_s: float = DENSE_ON_OPEN_S) -> bool:
    """Evaluate the dense loaded model (the baseline every card compares with) right away when that takes about
    ``limit_s`` or less; returns whether it did. Bigger models wait for Evaluate."""
    if session.measurements.dense is not None or not session.dataset.has_labels:
        return False
    if session.plan.active() or session.base_label != "loaded weights":
        return False
    if dense_eval_seconds(session) > limit_s:
        return False
    plan, base_id = session.plan.copy(), session.base_id
    current, _ = evaluate_plan(session, plan, need_dense=False)    # no plan, loaded weights: this is the dense model
    session.record_evaluation(plan, base_id, current, current)
    return True
