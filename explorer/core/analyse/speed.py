"""The speed map: where sparsity becomes speed on this machine, layer by layer.

For one layer (Linear, Conv2d, Conv1d) and each sparsity, the layer's own forward pass is timed dense and with
every kernel available here (``sparse_kernels``: ``csr``, ``2:4`` on CUDA GPUs with sparse tensor cores,
``channel``), on one random input of the layer's own input shape at the chosen batch, runs interleaved (dense,
csr, channel, dense, ...) and medians compared: ``speedup = dense median / kernel median``. The sparse weights
are the layer's own weights under a magnitude element mask at each sparsity (the app's ``element``/``l1`` mask;
the timing of a CSR product depends on the number and spread of the nonzeros, not on which criterion chose them).
The 2:4 kernel has one sparsity (50 %): it is timed against the same layer dense in float16.

The **break-even sparsity** of a kernel is the smallest measured sparsity from which on the kernel is faster than
dense at every larger measured sparsity (None if it never is). It depends on the layer's shape, the batch, the
threads and the machine, which is why it is measured rather than quoted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ExplorerError
from ..jobs import CancelToken, ProgressFn, ProgressMeter
from . import sparse_kernels as sk
from .latency import measure_latencies, torch_threads

if TYPE_CHECKING:
    from ..prune.state_view import StateView

DEFAULT_SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
DEFAULT_RUNS = 20
WARMUP = 3


@dataclass
class KernelCurve:
    kernel: str
    sparsities: list[float]
    speedup: list[float]
    break_even: float | None

    def as_dict(self) -> dict:
        return {"kernel": self.kernel, "sparsities": list(self.sparsities), "speedup": list(self.speedup),
                "break_even": self.break_even}

    def speedup_at(self, sparsity: float) -> float | None:
        """The speedup at the measured sparsity nearest ``sparsity`` (linear between two measured ones)."""
        xs, ys = self.sparsities, self.speedup
        if not xs:
            return None
        if sparsity <= xs[0]:
            return ys[0]
        for i in range(1, len(xs)):
            if sparsity <= xs[i]:
                t = (sparsity - xs[i - 1]) / (xs[i] - xs[i - 1])
                return ys[i - 1] + t * (ys[i] - ys[i - 1])
        return ys[-1]


@dataclass
class LayerSpeed:
    name: str
    shape: list[int]
    kernels: list[KernelCurve]
    unavailable: dict[str, str] = field(default_factory=dict)     # kernel -> why it was not measured
    dense_ms: list[float] = field(default_factory=list)           # the dense medians, per sparsity

    def as_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "kernels": [k.as_dict() for k in self.kernels]}

    def kernel(self, name: str) -> KernelCurve | None:
        return next((k for k in self.kernels if k.kernel == name), None)


@dataclass
class SpeedMap:
    model: str
    device: str
    threads: int
    batch: int
    layers: list[LayerSpeed]

    def as_dict(self) -> dict:
        return {"model": self.model, "device": self.device, "threads": self.threads, "batch": self.batch,
                "layers": [l.as_dict() for l in self.layers]}


def parse_sparsities(text) -> tuple[float, ...]:
    """'0.5,0.9' (or a sequence) -> sorted unique sparsities, each strictly between 0 and 1; refused clearly."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for it in items:
        try:
            v = float(str(it).strip())
        except ValueError:
            raise ExplorerError(f"--sparsities: '{str(it).strip()}' is not a number; give fractions like "
                                "0.5,0.9,0.95.") from None
        if not 0.0 < v < 1.0 or v != v:
            raise ExplorerError(f"--sparsities: {v:g} is not a sparsity; each must be between 0 and 1 (exclusive), "
                                "e.g. 0.5,0.9,0.95.")
        out.append(round(v, 6))
    if not out:
        raise ExplorerError("--sparsities: give at least one sparsity, e.g. 0.5,0.9,0.95.")
    return tuple(sorted(set(out)))


def break_even(sparsities, speedups) -> float | None:
    """Smallest measured sparsity from which on every measured speedup is above 1 (None: never)."""
    found = None
    for s, v in sorted(zip(sparsities, speedups), reverse=True):
        if v > 1.0:
            found = s
        else:
            break
    return found


def supported_kernels(layer: nn.Module, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """(kernels measurable for ``layer`` on ``device``, {kernel: why not} for the others)."""
    ok, why = [], {}
    r = sk.csr_reason(layer)
    if r is None and device.type not in ("cpu", "cuda"):
        r = f"PyTorch has no CSR matrix product on {device.type}"
    (why.__setitem__("csr", r) if r else ok.append("csr"))
    r = sk.semi_structured_reason(layer, device)
    (why.__setitem__("2:4", r) if r else ok.append("2:4"))
    if isinstance(layer, nn.Linear) or (isinstance(layer, (nn.Conv1d, nn.Conv2d)) and layer.groups == 1):
        ok.append("channel")
    else:
        why["channel"] = f"no channel kernel for {type(layer).__name__}" + (
            " with groups" if isinstance(layer, nn.Conv2d) else "")
    return ok, why


def layer_speed(name: str, layer: nn.Module, input_shape, batch: int = 1, sparsities=DEFAULT_SPARSITIES,
                kernels=sk.KERNELS, runs: int = DEFAULT_RUNS, warmup: int = WARMUP, threads: int | None = None,
                progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                meter: ProgressMeter | None = None) -> LayerSpeed:
    """The speed map of one layer (on its own device) at ``batch``; ``input_shape`` is one sample's input."""
    sparsities = parse_sparsities(sparsities)
    if batch < 1:
        raise ExplorerError(f"--batch must be at least 1 (got {batch}).")
    device = next(layer.parameters()).device
    avail, why = supported_kernels(layer, device)
    use = [k for k in kernels if k in avail]
    if not any(k in ("csr", "2:4") for k in use):
        raise ExplorerError(f"Layer {name} has no sparse kernel here: {why.get('csr', 'csr not requested')}.")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *input_shape, generator=g).to(device=device, dtype=layer.weight.dtype)
    if "csr" in use and sk.unfold_bytes(layer, x) > sk.UNFOLD_LIMIT_BYTES:
        use.remove("csr")
        why["csr"] = (f"the unfolded input at batch {batch} would take {sk.unfold_bytes(layer, x) / 2**20:.0f} MiB "
                      f"(limit {sk.UNFOLD_LIMIT_BYTES >> 20} MiB)")
        if "2:4" not in use:
            raise ExplorerError(f"Layer {name}: not measured, {why['csr']}; try a smaller --batch.")
    meter = meter or ProgressMeter(progress, len(sparsities) + ("2:4" in use), f"speed map of {name}")
    layer = layer.eval()
    curves = {k: ([], []) for k in use if k != "2:4"}
    dense_ms = []
    order = sk.magnitude_order(layer.weight) if "csr" in curves else None     # one sort for every sparsity
    with torch.inference_mode():
        for s in sparsities:
            if cancel is not None:
                cancel.check()
            models = {"dense": layer}
            if "csr" in curves:
                masked = sk.magnitude_masked(layer.weight.detach(), s, order)
                models["csr"] = sk.csr_module(sk.with_weight(layer, masked))
            if "channel" in curves:
                models["channel"] = sk.fewer_channels(layer, s)
            lat = measure_latencies(models, x, runs=runs, warmup=warmup, threads=threads, cancel=cancel)
            d = lat["dense"].median_ms
            dense_ms.append(round(d, 6))
            for k, (xs, ys) in curves.items():
                xs.append(s)
                ys.append(round(d / lat[k].median_ms, 4) if lat[k].median_ms > 0 else 0.0)
            meter.step(message=f"{name}: {s:.0%}")
        out = [KernelCurve(k, xs, ys, break_even(xs, ys)) for k, (xs, ys) in curves.items()]
        if "2:4" in use:
            try:
                dense16, ss = sk.semi_structured_linear(layer)
                lat = measure_latencies({"dense": dense16, "2:4": ss}, x.to(torch.float16), runs=runs, warmup=warmup,
                                        threads=threads, cancel=cancel)
                v = round(lat["dense"].median_ms / lat["2:4"].median_ms, 4)
                out.insert(1 if "csr" in curves else 0, KernelCurve("2:4", [0.5], [v], 0.5 if v > 1 else None))
            except ExplorerError as e:
                why["2:4"] = str(e)
            meter.step(message=f"{name}: 2:4")
    shape = [int(d) for d in layer.weight.shape]
    return LayerSpeed(name, shape, out, {k: v for k, v in why.items() if k in kernels}, dense_ms)


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def no_kernel_reason(model: nn.Module, name: str, device: torch.device) -> str | None:
    """Why layer ``name`` of ``model`` has no sparse kernel to time or to run (None: it has one)."""
    parent = _submodule(model, name.rpartition(".")[0]) if "." in name else None
    if isinstance(parent, nn.MultiheadAttention):
        return (f"no sparse kernel for a part of MultiheadAttention ({name}: the attention's fused code uses this "
                "weight directly, so no module call can be replaced)")
    layer = _submodule(model, name)
    if layer is None:
        return f"no sparse kernel: {name} is not a module of its own"
    avail, why = supported_kernels(layer, device)
    if not any(k in avail for k in ("csr", "2:4")):
        return why.get("csr", "no sparse kernel")
    return None


def layer_inputs(model: nn.Module, names: list[str], example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """One sample's input shape of each named layer that is called as a module (a forward pass with hooks)."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for n in names:
        def hook(_m, args, n=n):
            if args and isinstance(args[0], torch.Tensor) and n not in shapes:
                shapes[n] = tuple(int(d) for d in args[0].shape[1:])
        m = _submodule(model, n)
        if m is not None:
            hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return shapes


def speed_map(model: nn.Module, names: list[str], example: torch.Tensor, model_name: str = "", batch: int = 1,
              sparsities=DEFAULT_SPARSITIES, kernels=sk.KERNELS, runs: int = DEFAULT_RUNS,
              threads: int | None = None, progress: ProgressFn | None = None,
              cancel: CancelToken | None = None, skipped: dict[str, str] | None = None) -> SpeedMap:
    """The speed map of the named layers of ``model`` (on its device). With ``skipped`` given, layers without a
    sparse kernel are left out and named there with the reason (refused if none is left); without it, the
    first such layer is refused with the reason."""
    sparsities = parse_sparsities(sparsities)
    shapes = layer_inputs(model, names, example)
    device = next(model.parameters()).device
    todo, why_not = [], {}
    for n in names:
        why = no_kernel_reason(model, n, device)
        if why is None and n not in shapes:
            why = "not measured: the layer is not called in the forward pass"
        if why is None:
            todo.append(n)
        else:
            why_not[n] = why
    if why_not and skipped is None:
        n, why = next(iter(why_not.items()))
        raise ExplorerError(f"Layer {n}: {why}.")
    if skipped is not None:
        skipped.update(why_not)
    if not todo:
        raise ExplorerError("No layer to measure: " + "; ".join(f"{n}: {w}" for n, w in why_not.items()))
    meter = ProgressMeter(progress, len(todo) * (len(sparsities) + 1), "speed map")
    layers = []
    for n in todo:
        try:
            layers.append(layer_speed(n, model.get_submodule(n), shapes[n], batch, sparsities, kernels, runs,
                                      threads=threads, cancel=cancel, meter=meter))
        except ExplorerError as e:
            if skipped is None:
                raise
            skipped[n] = str(e)
        meter.step(0)
    if not layers:
        raise ExplorerError("No layer could be measured: " + "; ".join(f"{n}: {w}" for n, w in skipped.items()))
    with torch_threads(threads):
        used = torch.get_num_threads()
    from ..device import describe

    return SpeedMap(model_name, describe(device), used, batch, layers)


def session_speed_map(session: StateView, names: list[str] | None = None, batch: int = 1, sparsities=DEFAULT_SPARSITIES,
                      runs: int = DEFAULT_RUNS, device=None, threads: int | None = None,
                      progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                      skipped: dict[str, str] | None = None) -> SpeedMap:
    """The speed map of a session's layers (all by default; unknown names refused) on a copy of its loaded weights,
    on ``device`` (default: the session's). What a layer has is read now, the copy is made in here."""
    from .latency import latency_input

    sparsities = parse_sparsities(sparsities)
    if batch < 1:
        raise ExplorerError(f"--batch must be at least 1 (got {batch}).")
    names = list(names) if names else list(session.layer_names)
    for n in names:
        session.layer(n)                          # refuses an unknown name with the usual sentence
    example = latency_input(session.dataset, session.require().input_shape, 1)
    # the loaded (dense) weights: the map applies its own magnitude masks at each sparsity
    model = session.model_copy(session.original_state()).to(device if device is not None else session.device)
    example = example.to(next(model.parameters()).device)
    return speed_map(model, names, example, session.model_spec, batch, sparsities, runs=runs, threads=threads,
                     progress=progress, cancel=cancel, skipped=skipped)


def lesson_speed_map(session: StateView, batch: int = 1, progress: ProgressFn | None = None,
                     cancel: CancelToken | None = None) -> SpeedMap:
    """The speed map of the session's largest layer that has a CSR kernel (what the speedup lesson measures)."""
    model = session.module
    device = next(model.parameters()).device
    ok = [l for l in session.layers if no_kernel_reason(model, l.name, device) is None]
    if not ok:
        raise ExplorerError(f"{session.model_name} has no layer with a sparse kernel to measure.")
    biggest = max(ok, key=lambda l: l.params).name
    return session_speed_map(session, [biggest], batch, runs=10, progress=progress, cancel=cancel)
