"""The sparse runtime: the pruned model with each layer that runs faster as sparse replaced by a CSR kernel.

:func:`build_sparse_runtime` starts from a copy of the pruned model (or of its compacted version, so channel-
pruned layers stay the smaller dense layers compaction made) and, for every prunable layer, times the layer
dense and as CSR (``analyse.sparse_kernels``: ``CsrLinear``, ``CsrConv``) on the layer's real input at the
chosen batch (the example's), runs interleaved, at the layer's actual sparsity. A layer is replaced only when
its CSR kernel measured faster; every other layer stays dense and ``kept_dense`` says why (no sparse kernel for
its type, below 50 % sparsity -- where CSR stores more bytes than the dense weight, so it is not even timed --,
an unfolded input too big, or measured slower with the speedup). The result's outputs are checked against the
pruned (masked) model: relative error ``max|Δ| / max|y|`` at most :data:`RTOL` in float32.

:func:`save_sparse_runtime` writes it as **TorchScript** (``torch.jit.script``: the CSR modules script, their
weights are CSR buffers), reloaded and compared before the file is renamed into place, so it runs with torch
alone: ``torch.jit.load("model_sparse_runtime.ts")(x)``. A model that does not script is traced instead (the
CSR kernels' batch-1 branch is then fixed to the example's batch).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..analyse import sparse_kernels as sk
from ..analyse.latency import measure_latencies
from ..analyse.speed import no_kernel_reason
from ..errors import ExplorerError
from ..fileio import atomic_write
from ..jobs import CancelToken, ProgressFn, ProgressMeter

FILE = "model_sparse_runtime.ts"
MIN_SPARSITY = 0.5
RTOL = 1e-5
DEFAULT_RUNS = 20


@dataclass
class SparseRuntime:
    module: nn.Module
    layers: list[str]                                   # run with the CSR kernel
    kept_dense: dict[str, str]                          # name -> why it stays dense
    max_output_difference: float
    relative_difference: float
    speedups: dict[str, float] = field(default_factory=dict)   # every layer timed: dense median / CSR median
    batch: int = 1
    file_format: str = "torchscript (scripted)"

    def report(self, file: str = FILE) -> dict:
        """The ``sparse_runtime`` block of report.json."""
        return {"file": file, "layers": list(self.layers), "max_output_difference": self.max_output_difference,
                "kept_dense": dict(self.kept_dense)}


def _capture_inputs(model: nn.Module, names: list[str], example: torch.Tensor) -> dict[str, torch.Tensor]:
    got: dict[str, torch.Tensor] = {}
    hooks = []
    for n in names:
        def hook(_m, args, n=n):
            if args and isinstance(args[0], torch.Tensor) and n not in got:
                got[n] = args[0].detach().clone()
        hooks.append(model.get_submodule(n).register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return got


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _differences(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
    scale = float(b.float().abs().max()) if b.numel() else 0.0
    return d, d / max(scale, 1e-30)


def _output(y):
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, (tuple, list)) and y and isinstance(y[0], torch.Tensor):
        return y[0]
    if hasattr(y, "logits"):
        return y.logits
    raise ExplorerError("The sparse runtime needs a model whose output is a tensor (or a tuple starting with one).")


def build_sparse_runtime(model: nn.Module, example: torch.Tensor, names: list[str], base: nn.Module | None = None,
                         runs: int = DEFAULT_RUNS, threads: int | None = None, progress: ProgressFn | None = None,
                         cancel: CancelToken | None = None, warmup: int = 3) -> SparseRuntime:
    """``model``: the pruned (masked) model, the reference; ``base``: what to start from (its compacted version,
    same layer names), default ``model``; ``names``: the prunable layers. Nothing of ``model``/``base`` changes."""
    model = model.eval()
    work = copy.deepcopy(base if base is not None else model).eval()
    device = next(work.parameters()).device
    example = example.to(device)
    kept: dict[str, str] = {}
    todo: dict[str, float] = {}
    for n in names:
        why = no_kernel_reason(work, n, device)
        if why is None:
            w = work.get_submodule(n).weight.detach()
            sparsity = float((w == 0).sum()) / max(1, w.numel())
            if sparsity < MIN_SPARSITY:
                why = (f"{sparsity:.1%} sparse: below {MIN_SPARSITY:.0%} CSR stores more bytes than the dense weight "
                       "(values and column indices), so it is not timed")
            else:
                todo[n] = sparsity
        if why is not None:
            kept[n] = why
    inputs = _capture_inputs(work, list(todo), example)
    meter = ProgressMeter(progress, max(1, len(todo)), "sparse runtime: timing layers")
    speedups: dict[str, float] = {}
    chosen: list[str] = []
    with torch.inference_mode():
        for n, sparsity in todo.items():
            if cancel is not None:
                cancel.check()
            layer, x = work.get_submodule(n), inputs.get(n)
            if x is None:
                kept[n] = "not called as a module in the forward pass"
            elif sk.unfold_bytes(layer, x) > sk.UNFOLD_LIMIT_BYTES:
                kept[n] = (f"the CSR convolution's unfolded input at batch {x.shape[0]} would take "
                           f"{sk.unfold_bytes(layer, x) / 2**20:.0f} MiB (limit {sk.UNFOLD_LIMIT_BYTES >> 20} MiB)")
            else:
                csr = sk.csr_module(layer)
                lat = measure_latencies({"dense": layer, "csr": csr}, x, runs=runs, warmup=warmup, threads=threads,
                                        cancel=cancel)
                sp = lat["dense"].median_ms / lat["csr"].median_ms if lat["csr"].median_ms > 0 else 0.0
                speedups[n] = round(sp, 4)
                if sp > 1.0:
                    chosen.append(n)
                    _set(work, n, csr)
                else:
                    kept[n] = f"measured slower as CSR: {sp:.2f}× the dense speed at {sparsity:.1%} sparsity, " \
                              f"batch {x.shape[0]}"
            meter.step(message=f"sparse runtime: {n}")
        ref = _output(model(example))
        got = _output(work(example))
    diff, rel = _differences(got, ref)
    if rel > RTOL:
        raise ExplorerError(f"The sparse runtime's outputs differ from the pruned model's by {diff:.3g} (relative "
                            f"{rel:.2g}, limit {RTOL:g}); not exporting it.")
    order = {n: i for i, n in enumerate(names)}
    return SparseRuntime(work, sorted(chosen, key=order.get), {n: kept[n] for n in names if n in kept}, diff, rel,
                         speedups, int(example.shape[0]))


def save_sparse_runtime(rt: SparseRuntime, path: str | Path, example: torch.Tensor) -> Path:
    """Write ``rt.module`` as TorchScript (scripted, else traced), reloaded and compared before it is renamed into
    place; ``rt.file_format`` says which."""
    module = rt.module.eval()
    example = example.to(next(module.parameters()).device)
    with torch.inference_mode():
        ref = _output(module(example))
    import warnings

    warnings.filterwarnings("ignore", message=r".*torch\.jit\.(script|load|trace).* is deprecated", category=FutureWarning)
    try:
        ts = torch.jit.script(module)
        rt.file_format = "torchscript (scripted)"
    except Exception:      # models with Python-only code: trace (the CSR kernels' branches fixed to this batch)
        with torch.no_grad():
            ts = torch.jit.trace(module, example, check_trace=False, strict=False)
        rt.file_format = f"torchscript (traced at batch {example.shape[0]})"

    def verify(tmp: str) -> None:
        loaded = torch.jit.load(tmp, map_location=example.device)
        with torch.inference_mode():
            _, rel = _differences(_output(loaded(example)), ref)
        if rel > RTOL:
            raise ExplorerError(f"The reloaded sparse runtime differs from the model it was saved from (relative "
                                f"{rel:.2g}); not writing it.")

    return atomic_write(path, lambda tmp: ts.save(tmp), verify)
