"""Discover prunable layers and count MACs with one traced forward.

The forward runs under a ``TorchDispatchMode`` that sees every aten op; each
op's multiply-accumulates are counted with torchprofile's conventions
(convolutions, matrix products, affine normalisation, average pooling/mean
and element-wise products count; additions, activations and max-pooling are
free) and attributed to the prunable layer whose weight the op reads. That
works for plain modules and TorchScript alike, and needs no per-architecture
code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import ExplorerError, ShapeMismatchError

PRUNABLE_TYPES: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_SCRIPT_NAMES = {"Conv1d", "Conv2d", "Conv3d", "Linear", "NonDynamicallyQuantizableLinear"}


@dataclass(frozen=True)
class LayerInfo:
    """One prunable layer: a Conv or Linear weight with its place in the forward pass."""

    name: str
    kind: str                      # "Conv2d", "Linear", ...
    weight_shape: tuple[int, ...]  # (out, in/groups, *kernel) or (out, in)
    params: int                    # prunable weights (weight.numel())
    bias: bool
    macs: int                      # dense multiply-accumulates per sample
    order: int                     # position in the forward pass
    groups: int = 1
    output_shape: tuple[int, ...] = ()
    is_output: bool = False

    @property
    def uses(self) -> int:
        """How many MACs each weight takes part in per sample (output positions)."""
        return self.macs // self.params if self.params else 0

    @property
    def is_conv(self) -> bool:
        return self.kind.startswith("Conv")

    @property
    def out_channels(self) -> int:
        return self.weight_shape[0]

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """The weight viewed as a matrix: out-channels x (in * kernel)."""
        return self.weight_shape[0], self.params // self.weight_shape[0]


@dataclass
class ModelProfile:
    layers: list[LayerInfo]
    total_params: int
    total_macs: int                 # per sample, all counted ops (torchprofile conventions)
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    skipped: list[str] = field(default_factory=list)  # prunable modules not used by the forward pass

    def layer(self, name: str) -> LayerInfo:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [l.name for l in self.layers]

    @property
    def prunable_params(self) -> int:
        return sum(l.params for l in self.layers)


def _storage(t) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except Exception:
        return None


def _numel(shape) -> int:
    return int(prod(shape)) if shape is not None else 0


def _op_macs(func, args, kwargs, out) -> int:
    name = func.__name__.split(".")[0] if hasattr(func, "__name__") else str(func)
    outs = out if isinstance(out, (list, tuple)) else (out,)
    o = outs[0] if outs and isinstance(outs[0], torch.Tensor) else None
    if name in ("convolution", "_convolution"):
        w, o_shape = args[1], o.shape
        transposed = bool(args[6]) if len(args) > 6 else False
        if transposed:
            in_ch, kernel = w.shape[0] // (args[8] if len(args) > 8 else 1), w.shape[2:]
            return _numel(o_shape) * in_ch * _numel(kernel) // max(1, 1)
        return _numel(o_shape) * w.shape[1] * _numel(w.shape[2:])
    if name in ("addmm", "mm"):
        a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
        return a.shape[0] * a.shape[1] * b.shape[1]
    if name in ("bmm", "baddbmm"):
        a, b = (args[0], args[1]) if name == "bmm" else (args[1], args[2])
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    if name == "addmv":
        return args[1].shape[0] * args[1].shape[1]
    if name in ("_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm",
                "batch_norm", "cudnn_batch_norm", "_batch_norm_with_update", "_batch_norm_no_update"):
        return _numel(o.shape) if len(args) > 1 and args[1] is not None else 0
    if name in ("native_layer_norm", "layer_norm"):
        return _numel(o.shape) if len(args) > 2 and args[2] is not None else 0
    if name in ("native_group_norm", "group_norm"):
        return _numel(o.shape) if len(args) > 1 and args[1] is not None else 0
    if name in ("mean", "avg_pool1d", "avg_pool2d", "avg_pool3d", "_adaptive_avg_pool2d",
                "_adaptive_avg_pool3d", "adaptive_avg_pool1d"):
        return _numel(o.shape)
    if name in ("mul", "mul_"):
        return _numel(o.shape) if o is not None else 0
    if name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
                "_scaled_dot_product_flash_attention", "scaled_dot_product_attention"):
        q, k = args[0], args[1]
        return 2 * _numel(q.shape[:-1]) * k.shape[-2] * q.shape[-1]
    return 0


class _MacCounter(TorchDispatchMode):
    def __init__(self, weight_owner: dict[int, str]):
        super().__init__()
        self.weight_owner = weight_owner
        self.total = 0
        self.per_layer: dict[str, int] = {}
        self.out_shape: dict[str, tuple[int, ...]] = {}
        self.order: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            macs = _op_macs(func, args, kwargs, out)
        except Exception:
            macs = 0
        if macs:
            self.total += macs
            owner = None
            for a in args:
                if isinstance(a, torch.Tensor):
                    owner = self.weight_owner.get(_storage(a))
                    if owner:
                        break
            if owner:
                self.per_layer[owner] = self.per_layer.get(owner, 0) + macs
                if owner not in self.out_shape and isinstance(out, torch.Tensor):
                    self.out_shape[owner] = tuple(out.shape)
                    self.order.append(owner)
        return out


# TorchDispatchMode wraps __torch_dispatch__ in torch._disable_dynamo, which imports torch._dynamo (1-3 s) on
# the first call just to turn TorchDynamo off. Counting never runs under dynamo, so mark it already disabled:
# the first profile (on every start-up) no longer pays for that import.
_raw_dispatch = getattr(_MacCounter.__torch_dispatch__, "__wrapped__", None)
if _raw_dispatch is not None:
    _raw_dispatch.__dynamo_disable = _raw_dispatch


def prunable_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) for every Conv/Linear with a weight, plain or TorchScript."""
    found = []
    for name, m in module.named_modules():
        if not name:
            continue
        if isinstance(m, PRUNABLE_TYPES):
            ok = isinstance(getattr(m, "weight", None), torch.Tensor)
        elif isinstance(m, torch.jit.ScriptModule):
            ok = getattr(m, "original_name", "") in _SCRIPT_NAMES and hasattr(m, "weight")
        else:
            ok = False
        if ok and m.weight is not None and m.weight.dim() >= 2:
            found.append((name, m))
    return found


def _kind(m: nn.Module) -> str:
    if isinstance(m, torch.jit.ScriptModule):
        k = getattr(m, "original_name", type(m).__name__)
        return "Linear" if k == "NonDynamicallyQuantizableLinear" else k
    return "Linear" if isinstance(m, nn.Linear) else type(m).__name__


def profile_model(module: nn.Module, input_shape: tuple[int, ...], example: torch.Tensor | None = None) -> ModelProfile:
    """Run one forward pass (batch 1) and return the prunable layers with their MACs.

    Raises :class:`ShapeMismatchError` when the model cannot take inputs of ``input_shape``.
    """
    mods = prunable_modules(module)
    owner = {}
    for name, m in mods:
        p = _storage(m.weight)
        if p is not None:
            owner[p] = name
    x = example[:1] if example is not None else torch.zeros(1, *input_shape)
    counter = _MacCounter(owner)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), counter:
            out = module(x)
    except Exception as e:  # the model's own error, e.g. a shape mismatch deep inside
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = msg[:300].rstrip(" .") + "."
        raise ShapeMismatchError(
            f"The model cannot take inputs of shape {tuple(input_shape)} (C,H,W): {msg}",
            "Choose a dataset that matches the model, or give the model's input shape with --input-shape C,H,W.") from None
    finally:
        module.train(was_training)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "logits"):
        out = out.logits
    if not isinstance(out, torch.Tensor):
        raise ExplorerError(f"The model returned a {type(out).__name__}, not a tensor of class scores.")
    layers: list[LayerInfo] = []
    skipped = []
    used = [n for n in counter.order]
    by_name = dict(mods)
    out_dim = out.shape[1] if out.dim() >= 2 else out.shape[-1]
    output_layer = None
    for name in reversed(used):
        if by_name[name].weight.shape[0] == out_dim:
            output_layer = name
            break
    if output_layer is None and used:
        output_layer = used[-1]
    for name, m in mods:
        if name not in counter.per_layer:
            skipped.append(name)
            continue
        w = m.weight
        layers.append(LayerInfo(
            name=name, kind=_kind(m), weight_shape=tuple(w.shape), params=w.numel(),
            bias=getattr(m, "bias", None) is not None, macs=int(counter.per_layer[name]),
            order=used.index(name), groups=int(getattr(m, "groups", 1)),
            output_shape=tuple(counter.out_shape.get(name, ()))[1:], is_output=(name == output_layer)))
    layers.sort(key=lambda l: l.order)
    total_params = sum(p.numel() for p in module.parameters())
    return ModelProfile(layers=layers, total_params=total_params, total_macs=int(counter.total),
                        input_shape=tuple(input_shape), output_shape=tuple(out.shape[1:]), skipped=skipped)
