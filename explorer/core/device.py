"""Where the work runs: ``--device auto|cpu|cuda[:N]|mps`` resolved to a torch device, with clear refusals.

``auto`` picks the first CUDA device when there is one, else Apple's MPS when it is there, else the CPU. The
session's module and everything the window draws stay on the CPU; jobs (evaluation, fine-tuning, quantization
training, scans, latency) copy the model to the chosen device and move the data there once.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from .errors import ExplorerError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
_SPEC = re.compile(r"^(auto|cpu|mps|cuda(?::(\d+))?)$")


def cuda_count() -> int:
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:   # a broken driver install: no CUDA, said once where it matters
        return 0


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    try:
        return bool(backend is not None and backend.is_available())
    except Exception:
        return False


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """The device a spec names; ``None`` and ``auto`` pick the fastest one present."""
    if isinstance(spec, torch.device):
        return spec
    text = (spec or "auto").strip().lower()
    m = _SPEC.match(text)
    if not m:
        raise ExplorerError(f"Unknown device '{spec}'.", f"Use {DEVICE_CHOICES}.")
    if text == "auto":
        if cuda_count():
            return torch.device("cuda", 0)
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not mps_available():
            raise ExplorerError("The device 'mps' (Apple GPU) is not available here.",
                                "Use --device cpu, or auto to take whatever is present.")
        return torch.device("mps")
    n = cuda_count()
    index = int(m.group(2)) if m.group(2) is not None else 0
    if n == 0:
        built = torch.version.cuda is not None
        why = ("this torch has CUDA support but finds no GPU (no device, or no driver)" if built else
               "this torch is a CPU-only build")
        raise ExplorerError(f"The device '{text}' is not available: {why}.",
                            "Use --device cpu, or auto to take whatever is present.")
    if index >= n:
        raise ExplorerError(f"The device '{text}' does not exist: this machine has {n} CUDA device(s) "
                            f"(cuda:0..cuda:{n - 1}).")
    return torch.device("cuda", index)


def available_devices() -> list[str]:
    """The devices a user can choose here, best first after ``auto``."""
    out = ["auto"] + [f"cuda:{i}" for i in range(cuda_count())]
    if mps_available():
        out.append("mps")
    return out + ["cpu"]


def describe(device: torch.device) -> str:
    """A short name for the status bar: 'CPU', 'cuda:0 (NVIDIA H100)', 'mps'."""
    if device.type == "cuda":
        index = device.index or 0
        try:
            return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        except Exception:
            return f"cuda:{index}"
    return "CPU" if device.type == "cpu" else str(device)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for a module with neither."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (GPU kernels run asynchronously; timing needs this)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def on_device(module: nn.Module, device: torch.device | None) -> nn.Module:
    """``module`` itself on the CPU; a copy of it on any other device (the session's module stays on the CPU)."""
    if device is None or device.type == "cpu" or module_device(module) == device:
        return module
    import copy

    return copy.deepcopy(module).to(device)


def cpu_has_bf16_matrix_units() -> bool:
    """Does this CPU multiply bfloat16 matrices in hardware (Intel AMX tiles)? There a bfloat16 forward of a
    convolutional network runs about 2x faster than float32; elsewhere bfloat16 is emulated and slower."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() and torch.cpu._is_avx512_bf16_supported())
    except Exception:       # an older torch without the probes: assume not
        return False
