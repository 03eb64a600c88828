"""Measured latency: warm-up, many timed runs, median and spread, fixed threads, same input."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..device import module_device, synchronize
from ..jobs import CancelToken, ProgressFn, ProgressMeter

DEFAULT_RUNS = 30
DEFAULT_WARMUP = 5


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    batch: int
    threads: int

    @property
    def spread_ms(self) -> float:
        return self.p90_ms - self.p10_ms

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.median_ms:.3g} ms (p10–p90 {self.p10_ms:.3g}–{self.p90_ms:.3g})"


@contextmanager
def torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _Clock:
    """Times one forward pass in milliseconds: wall time on the CPU; on a GPU, CUDA events recorded around the
    call on the model's stream and read after a synchronisation (kernels run asynchronously, so wall time
    around the call would measure only the launch)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def time(self, module: nn.Module, example: torch.Tensor) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            module(example)
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        if self.device.type != "cpu":
            synchronize(self.device)
        t0 = time.perf_counter()
        module(example)
        if self.device.type != "cpu":
            synchronize(self.device)
        return (time.perf_counter() - t0) * 1000.0


def _quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def measure_latency(module: nn.Module, example: torch.Tensor, runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP,
                    threads: int | None = None, progress: ProgressFn | None = None,
                    cancel: CancelToken | None = None, label: str = "latency") -> Latency:
    """Median time of ``module(example)`` in inference mode, on the module's device (``example`` is moved there
    once)."""
    runs = max(1, int(runs))
    device = module_device(module)
    example = example.to(device)
    clock = _Clock(device)
    was = module.training
    module.eval()
    meter = ProgressMeter(progress, warmup + runs, f"measuring {label}")
    times: list[float] = []
    try:
        with torch_threads(threads), torch.inference_mode():
            for _ in range(warmup):
                if cancel is not None:
                    cancel.check()
                module(example)
                meter.step()
            synchronize(device)
            for _ in range(runs):
                if cancel is not None:
                    cancel.check()
                times.append(clock.time(module, example))
                meter.step()
            used = torch.get_num_threads()
    finally:
        module.train(was)
    return Latency(median_ms=_quantile(times, 0.5), p10_ms=_quantile(times, 0.1), p90_ms=_quantile(times, 0.9),
                   runs=runs, batch=int(example.shape[0]), threads=used)


def latency_input(dataset, input_shape, batch: int) -> torch.Tensor:
    """The one input every compared model gets: real samples when there are any, else seeded noise."""
    try:
        return dataset.example_input(batch)
    except Exception:
        g = torch.Generator().manual_seed(0)
        return torch.randn(batch, *input_shape, generator=g)


def measure_latencies(models: dict[str, nn.Module], example: torch.Tensor, runs: int = DEFAULT_RUNS,
                      warmup: int = DEFAULT_WARMUP, threads: int | None = None, progress: ProgressFn | None = None,
                      cancel: CancelToken | None = None) -> dict[str, Latency]:
    """Latency of several models on the same input, runs interleaved (A B C A B C ...) so that drift
    in machine load affects all of them alike; medians and spread per model. The models share one device
    (the first model's); ``example`` is moved there once."""
    runs = max(1, int(runs))
    modes = {k: m.training for k, m in models.items()}
    for m in models.values():
        m.eval()
    meter = ProgressMeter(progress, (warmup + runs) * len(models), "measuring latency")
    times: dict[str, list[float]] = {k: [] for k in models}
    try:
        return _interleaved(models, example, runs, warmup, threads, meter, times, cancel)
    finally:
        for k, m in models.items():
            m.train(modes[k])


def _interleaved(models, example, runs, warmup, threads, meter, times, cancel) -> dict[str, Latency]:
    device = module_device(next(iter(models.values())))
    example = example.to(device)
    clock = _Clock(device)
    with torch_threads(threads), torch.inference_mode():
        for _ in range(warmup):
            for m in models.values():
                if cancel is not None:
                    cancel.check()
                m(example)
                meter.step()
        synchronize(device)
        for _ in range(runs):
            for k, m in models.items():
                if cancel is not None:
                    cancel.check()
                times[k].append(clock.time(m, example))
                meter.step()
        used = torch.get_num_threads()
    return {k: Latency(_quantile(v, 0.5), _quantile(v, 0.1), _quantile(v, 0.9), runs, int(example.shape[0]), used)
            for k, v in times.items()}


SPREAD_LIMIT = 0.5    # p10-p90 wider than half the median: the machine was too busy for a fair comparison


def spread_note(lat: dict[str, "Latency"]) -> str | None:
    """A sentence when the runs varied so much that the medians cannot be compared, else None."""
    noisy = [k for k, v in lat.items() if v.median_ms > 0 and v.spread_ms / v.median_ms > SPREAD_LIMIT]
    if not noisy:
        return None
    return (f"the latency of {', '.join(noisy)} varied by more than {SPREAD_LIMIT:.0%} of its median between runs "
            "(p10-p90), so the comparison is not meaningful: the machine was busy. Measure again with more "
            "--latency-runs on a quiet machine.")


@dataclass(frozen=True)
class LatencyComparison:
    """Dense vs masked (vs compacted) latency on one input, runs interleaved."""

    dense: object                 # Latency
    masked: object
    compact: object | None
    dense_macs: int
    masked_macs: int
    compact_macs: int | None
    compact_params: int | None
    batch: int
    onnx: dict | None = None      # {"dense": Latency, "masked"/"compacted": Latency} under onnxruntime, if timed

    @property
    def best(self):
        return self.compact or self.masked


def scan_point_latency(session, members, lp, sparsity, variant, example, runs: int, cancel=None) -> float:
    """Median latency (ms) of the model with one scanned point's layers pruned (``variant``: their masked tensors)
    and its pruned channels removed (the latency sensitivity scan's measurement)."""
    from ..device import on_device
    from ..prune.compact import compact_model

    pruned = session.layer_mask(members[0], lp).pruned_rows(sparsity)
    removals = {members[0]: pruned} if pruned else {}
    state = dict(session.applied_state())
    state.update({k: t.cpu() for k, t in variant.items()})
    m = compact_model(session.module, state, removals, example.cpu(), cancel=cancel)
    return measure_latency(on_device(m, example.device), example, runs=runs, cancel=cancel).median_ms
