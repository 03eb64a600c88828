"""What follows each prunable layer in the forward pass: its BatchNorm and the zeros after its ReLU.

One forward under a ``TorchDispatchMode`` sees every aten op, for plain modules and TorchScript alike. The
output of a conv / linear op that reads a prunable layer's weight is tagged with that layer; the tag follows
the value through per-channel ops (BatchNorm, a bias add, views that keep a Linear's last dimension) until an
activation consumes it. A BatchNorm on the way is the layer's *following BatchNorm* (what ``bn-scale`` reads);
a ReLU (or ReLU6) is the layer's *ReLU*, and the share of its outputs that are exactly zero, per output channel,
is the APoZ (what ``apoz`` reads). Anything else -- a residual add, a pooling, another activation -- ends the
trail, so "no ReLU follows" and "no BatchNorm follows" are answered without per-architecture code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

_PRODUCERS = {"convolution", "_convolution", "addmm", "mm", "linear", "matmul", "bmm"}
_BATCHNORM = {"_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm",
              "batch_norm", "cudnn_batch_norm", "_batch_norm_with_update", "_batch_norm_no_update"}
_RELU = {"relu", "relu_", "hardtanh", "hardtanh_", "clamp_min", "clamp_min_"}
_SAME = {"clone", "contiguous", "alias", "detach", "add", "add_", "_to_copy", "dropout", "native_dropout"}
_VIEWS = {"view", "_unsafe_view", "reshape"}


def _storage(t) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except Exception:
        return None


def _op(func) -> str:
    return func.__name__.split(".")[0] if hasattr(func, "__name__") else str(func)


@dataclass
class Followers:
    """Per layer: the BatchNorm weight parameter after it (if any), whether a ReLU follows, and APoZ counts."""

    batchnorm: dict[str, str] = field(default_factory=dict)        # layer -> "<bn module>.weight"
    relu: set[str] = field(default_factory=set)
    zeros: dict[str, torch.Tensor] = field(default_factory=dict)   # layer -> zero count per output channel (f64)
    counts: dict[str, int] = field(default_factory=dict)           # layer -> values seen per channel

    def apoz(self, layer: str) -> torch.Tensor | None:
        """Average percentage of zeros per output channel after the layer's ReLU, as a fraction in [0, 1]."""
        z = self.zeros.get(layer)
        n = self.counts.get(layer, 0)
        return None if z is None or n == 0 else (z / n).float()


class _Tracer(TorchDispatchMode):
    def __init__(self, weight_owner: dict[int, tuple[str, int]], bn_owner: dict[int, str], out: Followers):
        super().__init__()
        self.weight_owner = weight_owner   # storage -> (layer, channel dim of its output)
        self.bn_owner = bn_owner           # storage -> BatchNorm weight parameter name
        self.out = out
        self.tags: dict[int, tuple[str, int, torch.Tensor]] = {}   # id(tensor) -> (layer, dim, tensor kept alive)

    def _tag(self, t, layer: str, dim: int) -> None:
        if isinstance(t, torch.Tensor):
            self.tags[id(t)] = (layer, dim, t)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = _op(func)
        if name in _PRODUCERS:
            for a in args:
                if isinstance(a, torch.Tensor):
                    owner = self.weight_owner.get(_storage(a))
                    if owner is not None:
                        self._tag(out, *owner)
                        break
            return out
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        tag = self.tags.get(id(first)) if first is not None else None
        if tag is None:
            return out
        layer, dim, _ = tag
        if name.endswith("_"):      # an in-place op returns its input: the old tag must not stay on it
            self.tags.pop(id(first), None)
        result = out[0] if isinstance(out, (tuple, list)) else out
        if name in _BATCHNORM:
            bn = self.bn_owner.get(_storage(args[1])) if len(args) > 1 and isinstance(args[1], torch.Tensor) else None
            if bn is not None:
                self.out.batchnorm.setdefault(layer, bn)
            self._tag(result, layer, dim)
        elif name in _RELU:
            self.out.relu.add(layer)
            self._count_zeros(layer, dim, result)
        elif name in _SAME:
            other = args[1] if len(args) > 1 else None
            if name.startswith("add") and isinstance(other, torch.Tensor) and other.dim() > 1 \
                    and other.shape == first.shape:
                return out            # a residual add mixes two layers' channels: the trail ends
            self._tag(result, layer, dim)
        elif name in _VIEWS and dim == -1 and isinstance(result, torch.Tensor) and result.dim() > 0 \
                and result.shape[-1] == first.shape[-1]:
            self._tag(result, layer, dim)
        return out

    def _count_zeros(self, layer: str, dim: int, t: torch.Tensor) -> None:
        d = dim % t.dim()
        moved = t.detach().movedim(d, 0).reshape(t.shape[d], -1)
        zeros = (moved == 0).sum(dim=1, dtype=torch.float64)
        prev = self.out.zeros.get(layer)
        self.out.zeros[layer] = zeros if prev is None else prev + zeros
        self.out.counts[layer] = self.out.counts.get(layer, 0) + moved.shape[1]


def trace_followers(module: nn.Module, layer_names: list[str], inputs, batch_size: int = 64,
                    cancel=None) -> Followers:
    """Run ``inputs`` (a tensor, batched here) through ``module`` in eval mode and record what follows each
    layer. With a single example input the result says only *which* BatchNorm/ReLU follows; with calibration
    data the zero counts give each layer's APoZ."""
    mods = dict(module.named_modules())
    owner: dict[int, tuple[str, int]] = {}
    for n in layer_names:
        m = mods[n]
        p = _storage(m.weight)
        if p is not None:
            owner[p] = (n, -1 if m.weight.dim() == 2 else 1)
    bn_owner: dict[int, str] = {}
    for n, m in mods.items():
        is_bn = isinstance(m, nn.modules.batchnorm._BatchNorm) or \
            (isinstance(m, torch.jit.ScriptModule) and "BatchNorm" in getattr(m, "original_name", ""))
        if is_bn and getattr(m, "weight", None) is not None:
            p = _storage(m.weight)
            if p is not None:
                bn_owner[p] = f"{n}.weight"
    result = Followers()
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            for i in range(0, inputs.shape[0], batch_size):
                if cancel is not None:
                    cancel.check()
                with _Tracer(owner, bn_owner, result):
                    module(inputs[i:i + batch_size])
    finally:
        module.train(was)
    return result
