"""Timing onnxruntime next to PyTorch: the runtime many people deploy with.

:func:`onnx_runner` exports a model to ONNX (``formats``: checked against PyTorch within 1e-4) and
wraps an onnxruntime session as a module, so ``analyse.latency.measure_latencies`` times it interleaved with the
PyTorch models, on the same input and the same number of threads.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn


class OnnxRunner(nn.Module):
    """An onnxruntime session that looks like a module: ``runner(x)`` returns the model's output tensor."""

    def __init__(self, session, input_name: str):
        super().__init__()
        self.session = session
        self.input_name = input_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: x.detach().cpu().numpy()})[0])


def onnx_runner(module: nn.Module, example: torch.Tensor, threads: int | None = None) -> OnnxRunner:
    """``module`` exported to ONNX (and checked), in an onnxruntime session with ``threads`` intra-op threads
    (default: torch's current number, so both runtimes get the same)."""
    from .formats import export_onnx, onnx_session

    with tempfile.TemporaryDirectory(prefix="explorer-onnx-") as d:
        path = export_onnx(module, example, Path(d) / "model.onnx")
        session = onnx_session(path, threads or torch.get_num_threads())
    return OnnxRunner(session, session.get_inputs()[0].name).eval()
