"""Discover prunable layers and count MACs with one traced forward.

The forward runs under a ``TorchDispatchMode`` that sees every aten op; each
op's multiply-accumulates are counted with torchprofile's conventions
(convolutions, matrix products, affine normalisation, average pooling/mean
and element-wise products count; additions, activations and max-pooling are
free) and attributed to the prunable layer whose weight the op reads. That
works for plain modules and TorchScript alike, and needs no per-architecture
code.

Besides Conv/Linear modules, two weights that are not a module's ``weight`` are listed:
``nn.MultiheadAttention``'s fused ``in_proj_weight`` (as the layer ``<attention>.in_proj``; its
``out_proj`` is a Linear) -- the fused fast path is turned off while counting so every projection is
seen as the matrix product it is -- and transformers' ``Conv1D`` (GPT-2), whose weight is stored
inputs x outputs (``LayerInfo.transposed``). A prunable layer whose weight is tied to another parameter
(a language model's output layer sharing the token embedding) is not listed: pruning one would prune both.
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
    param: str = ""                # state_dict key of the weight when it is not f"{name}.weight" (MHA in_proj)
    transposed: bool = False       # weight stored inputs x outputs (transformers' Conv1D)
    bias_param: str = ""           # state_dict key of the bias when it is not f"{name}.bias"

    @property
    def key(self) -> str:
        """The weight's key in the model's state_dict."""
        return self.param or f"{self.name}.weight"

    @property
    def bias_key(self) -> str | None:
        if not self.bias:
            return None
        return self.bias_param or f"{self.name}.bias"

    @property
    def logical_shape(self) -> tuple[int, ...]:
        """(out, in, *kernel) whatever the storage order."""
        s = self.weight_shape
        return (s[1], s[0], *s[2:]) if self.transposed else s

    @property
    def uses(self) -> int:
        """How many MACs each weight takes part in per sample (output positions)."""
        return self.macs // self.params if self.params else 0

    @property
    def is_conv(self) -> bool:
        return self.kind.startswith("Conv")

    @property
    def out_channels(self) -> int:
        return self.logical_shape[0]

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """The weight viewed as a matrix: out-channels x (in * kernel)."""
        return self.out_channels, self.params // self.out_channels

    def flat_index(self, rows, cols):
        """Flat (storage-order) index of the element at (output row, input*kernel column) of matrix_shape."""
        return cols * self.out_channels + rows if self.transposed else rows * self.matrix_shape[1] + cols


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

    def weight_key(self, name: str) -> str:
        """The state_dict key of a prunable layer's weight."""
        return self.layer(name).key

    @property
    def weight_keys(self) -> dict[str, str]:
        """{layer name: state_dict key of its weight} in forward order."""
        return {l.name: l.key for l in self.layers}


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


def is_conv1d_transposed(m: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2): a Linear whose weight is stored inputs x outputs (no import needed)."""
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and isinstance(getattr(m, "weight", None), torch.Tensor)


@dataclass(frozen=True)
class WeightRef:
    """A prunable weight: the module that owns it, the parameter's attribute name, and how it is stored."""

    name: str              # the layer's name
    module: nn.Module
    attr: str = "weight"
    bias_attr: str | None = "bias"
    transposed: bool = False
    kind: str = ""
    owner: str = ""        # the module's own name when the weight is not its ``weight`` (attention)

    @property
    def weight(self) -> torch.Tensor:
        return getattr(self.module, self.attr)

    def _key(self, attr: str) -> str:
        if self.attr == "weight":
            return f"{self.name}.{attr}"
        return f"{self.owner}.{attr}" if self.owner else attr

    @property
    def key(self) -> str:
        return self._key(self.attr)

    @property
    def bias_key(self) -> str | None:
        return self._key(self.bias_attr) if self.has_bias else None

    @property
    def has_bias(self) -> bool:
        return self.bias_attr is not None and getattr(self.module, self.bias_attr, None) is not None


def _mha_refs(name: str, m: nn.MultiheadAttention) -> list[WeightRef]:
    if getattr(m, "in_proj_weight", None) is not None:
        return [WeightRef(f"{name}.in_proj" if name else "in_proj", m, "in_proj_weight", "in_proj_bias",
                          kind="Linear", owner=name)]
    return [WeightRef(f"{name}.{p}" if name else p, m, f"{p}_weight", None, kind="Linear", owner=name)
            for p in ("q_proj", "k_proj", "v_proj") if getattr(m, f"{p}_weight", None) is not None]


def prunable_weights(module: nn.Module) -> list[WeightRef]:
    """Every prunable weight: Conv/Linear modules (plain or TorchScript), transformers' Conv1D, and the
    q/k/v projections of nn.MultiheadAttention (which are parameters of the attention module itself)."""
    found = []
    for name, m in module.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            found += _mha_refs(name, m)
            continue
        if not name:
            continue
        transposed = False
        if isinstance(m, PRUNABLE_TYPES):
            ok = isinstance(getattr(m, "weight", None), torch.Tensor)
        elif isinstance(m, torch.jit.ScriptModule):
            ok = getattr(m, "original_name", "") in _SCRIPT_NAMES and hasattr(m, "weight")
        else:
            ok = transposed = is_conv1d_transposed(m)
        if ok and m.weight is not None and m.weight.dim() >= 2:
            found.append(WeightRef(name, m, transposed=transposed, kind=_kind(m)))
    return found


def prunable_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) for every Conv/Linear module with a weight (the weights of prunable_weights that are a
    module's own ``weight``)."""
    return [(r.name, r.module) for r in prunable_weights(module) if r.attr == "weight"]


_ATTENTION_PROJ = {"in_proj": "in_proj_weight", "q_proj": "q_proj_weight", "k_proj": "k_proj_weight",
                   "v_proj": "v_proj_weight"}


def weight_key(module: nn.Module, name: str) -> str:
    """The state_dict key of the weight of the prunable layer ``name`` of ``module`` (its ``weight``, or the
    projection parameter of an nn.MultiheadAttention for ``<attention>.in_proj`` and its kind)."""
    owner, _, last = name.rpartition(".")
    if last in _ATTENTION_PROJ:
        try:
            parent = module.get_submodule(owner) if owner else module
        except AttributeError:
            parent = None
        if isinstance(parent, nn.MultiheadAttention):
            return f"{owner}.{_ATTENTION_PROJ[last]}" if owner else _ATTENTION_PROJ[last]
    return f"{name}.weight"


def load_state(module: nn.Module, state: dict[str, torch.Tensor], strict: bool = True):
    """``module.load_state_dict(state)`` for a plain dict of tensors: the module's own version metadata is
    attached first (some modules, e.g. torchvision's MNASNet, refuse a state_dict without it)."""
    if getattr(state, "_metadata", None) is None:
        from collections import OrderedDict

        meta = getattr(module.state_dict(keep_vars=True), "_metadata", None)
        state = OrderedDict(state)
        if meta is not None:
            state._metadata = meta
    return module.load_state_dict(state, strict=strict)


def state_weight_key(state, name: str) -> str:
    """The key of layer ``name``'s weight in a state_dict (``name.weight``, or an attention projection's
    ``<attention>.in_proj_weight`` for ``<attention>.in_proj``)."""
    key = f"{name}.weight"
    if key in state:
        return key
    owner, _, last = name.rpartition(".")
    alt = f"{owner}.{_ATTENTION_PROJ[last]}" if owner and last in _ATTENTION_PROJ else None
    return alt if alt is not None and alt in state else key


def _kind(m: nn.Module) -> str:
    if isinstance(m, torch.jit.ScriptModule):
        k = getattr(m, "original_name", type(m).__name__)
        return "Linear" if k == "NonDynamicallyQuantizableLinear" else k
    return "Linear" if isinstance(m, nn.Linear) else type(m).__name__


def _tied(refs: list[WeightRef], module: nn.Module) -> dict[str, str]:
    """{layer: the other parameter its weight is tied to} for weights shared with a parameter of another name."""
    by_ptr: dict[int, list[str]] = {}
    for pname, p in module.named_parameters(remove_duplicate=False):
        ptr = _storage(p)
        if ptr is not None:
            by_ptr.setdefault(ptr, []).append(pname)
    out = {}
    for r in refs:
        others = [n for n in by_ptr.get(_storage(r.weight), []) if n != r.key]
        if others:
            out[r.name] = others[0]
    return out


def logits_of(out) -> torch.Tensor:
    """The class (or next-token) scores of a model's output: the first of a tuple, a transformers output's
    ``logits``, or the tensor itself."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "logits"):
        out = out.logits
    return out


def profile_model(module: nn.Module, input_shape: tuple[int, ...], example: torch.Tensor | None = None) -> ModelProfile:
    """Run one forward pass (batch 1) and return the prunable layers with their MACs.

    Raises :class:`ShapeMismatchError` when the model cannot take inputs of ``input_shape``.
    """
    refs = prunable_weights(module)
    tied = _tied(refs, module)
    refs = [r for r in refs if r.name not in tied]
    owner = {}
    for r in refs:
        p = _storage(r.weight)
        if p is not None:
            owner[p] = r.name
    x = example[:1] if example is not None else torch.zeros(1, *input_shape)
    counter = _MacCounter(owner)
    was_training = module.training
    module.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        # the fused attention kernel reads in_proj/out_proj inside one op: count them as the matmuls they are
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), counter:
            out = module(x)
    except Exception as e:  # the model's own error, e.g. a shape mismatch deep inside
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = msg[:300].rstrip(" .") + "."
        raise ShapeMismatchError(
            f"The model cannot take inputs of shape {tuple(input_shape)} (C,H,W): {msg}",
            "Choose a dataset that matches the model, or give the model's input shape with --input-shape C,H,W.") from None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        module.train(was_training)
    out = logits_of(out)
    if not isinstance(out, torch.Tensor):
        raise ExplorerError(f"The model returned a {type(out).__name__}, not a tensor of class scores.")
    layers: list[LayerInfo] = []
    skipped = []
    used = [n for n in counter.order]
    by_name = {r.name: r for r in refs}
    out_dim = out.shape[-1] if out.dim() == 3 and x.dim() == 2 else (out.shape[1] if out.dim() >= 2 else out.shape[-1])
    output_layer = None
    sequence = out.dim() == 3 and x.dim() == 2      # a language model: (batch, positions, vocabulary)
    for name in reversed(used[-1:] if sequence else used):
        r = by_name[name]
        if r.weight.shape[1 if r.transposed else 0] == out_dim:
            output_layer = name
            break
    if output_layer is None and used and not sequence:   # (a tied output layer is not listed at all)
        output_layer = used[-1]
    for name, other in tied.items():
        skipped.append(f"{name} (its weight is tied to {other})")
    for r in refs:
        name = r.name
        if name not in counter.per_layer:
            skipped.append(name)
            continue
        w, m = r.weight, r.module
        layers.append(LayerInfo(
            name=name, kind=r.kind, weight_shape=tuple(w.shape), params=w.numel(),
            bias=r.has_bias, macs=int(counter.per_layer[name]),
            order=used.index(name), groups=int(getattr(m, "groups", 1)) if r.attr == "weight" else 1,
            output_shape=tuple(counter.out_shape.get(name, ()))[1:], is_output=(name == output_layer),
            param="" if r.attr == "weight" else r.key, transposed=r.transposed,
            bias_param="" if r.attr == "weight" or not r.has_bias else r.bias_key))
    layers.sort(key=lambda l: l.order)
    total_params = sum(p.numel() for p in module.parameters())
    return ModelProfile(layers=layers, total_params=total_params, total_macs=int(counter.total),
                        input_shape=tuple(input_shape), output_shape=tuple(out.shape[1:]), skipped=skipped)
