"""Weight sharing per layer: bits per layer, and each layer's kept weights clustered into shared values.

Bits are chosen per layer: defaults 8 for convolutions and 5 for fully connected layers (the paper's), a
global setting, and per-layer overrides, written as ``5``, ``conv=8,linear=5`` or ``conv=8,linear=5,fc3=4``.
The same syntax sets the relative-index width (``index_bits``, defaults 8 conv / 5 linear).

A layer's *kept* weights are its nonzero ones; pruned weights stay exactly 0 and are never a cluster. A
layer with b bits has 2^b codes. When its relative indices need filler entries (a gap longer than 2^b_idx),
one code is the filler's zero, so its kept weights share 2^b - 1 values; otherwise all 2^b.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import PlanError
from ..formats.relindex import MAX_INDEX_BITS, filler_count
from ..jobs import CancelToken, ProgressFn, ProgressMeter
from ..model.layers import state_weight_key
from .kmeans import check_init, kmeans_1d

MAX_BITS = 8
KINDS = ("conv", "linear")
DEFAULT_BITS = {"conv": 8, "linear": 5}
DEFAULT_INDEX_BITS = {"conv": 8, "linear": 5}


def layer_kind(kind: str) -> str:
    """'conv' for Conv1d/2d/3d, 'linear' for everything else that is prunable (Linear)."""
    return "conv" if kind.startswith("Conv") else "linear"


def _bits_value(text, what: str, hi: int) -> int:
    try:
        v = int(str(text).strip())
        ok = str(text).strip().lstrip("+").isdigit()
    except ValueError:
        ok = False
    if not ok or not 1 <= v <= hi:
        raise PlanError(f"{what}: '{text}' is not a whole number of bits from 1 to {hi}.")
    return v


def parse_bits(text: str | int | dict | None, what: str = "--bits", hi: int = MAX_BITS) -> dict[str, int]:
    """A bits setting as {"*": b} (global), {"conv": b, "linear": b} and/or {layer: b} entries.

    Accepts ``5``, ``"conv=8,linear=5"``, ``"conv=8,linear=5,fc3=4"``, or such a dict (from a recipe).
    """
    if text is None:
        return {}
    if isinstance(text, dict):
        return {str(k): _bits_value(v, f"{what} {k}", hi) for k, v in text.items()}
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        return {"*": _bits_value(text, what, hi)}
    s = str(text).strip()
    if not s:
        raise PlanError(f"{what} is empty; give a number of bits (e.g. 5) or conv=8,linear=5.")
    if "=" not in s:
        return {"*": _bits_value(s, what, hi)}
    out: dict[str, int] = {}
    for part in s.split(","):
        key, sep, val = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PlanError(f"{what}: '{part.strip()}' is not KEY=BITS; write e.g. conv=8,linear=5 or fc1=6.")
        if key in out:
            raise PlanError(f"{what}: '{key}' is given twice.")
        out[key] = _bits_value(val, f"{what} {key}", hi)
    return out


def resolve_bits(spec: dict[str, int], layers: list, defaults: dict[str, int], what: str = "--bits") -> dict[str, int]:
    """Bits of every layer: a layer's own entry, else its kind's (conv/linear), else the global, else the default.
    ``layers`` are LayerInfo objects (name and kind). Unknown layer names are refused."""
    names = {l.name for l in layers}
    unknown = [k for k in spec if k not in names and k not in KINDS and k != "*"]
    if unknown:
        raise PlanError(f"{what}: unknown layer(s) {', '.join(unknown)}.",
                        "Use conv=, linear= or the name of a prunable layer (pruning-explorer info lists them).")
    out = {}
    for l in layers:
        k = layer_kind(l.kind)
        out[l.name] = spec.get(l.name, spec.get(k, spec.get("*", defaults[k])))
    return out


@dataclass(frozen=True)
class QuantSettings:
    """Resolved per-layer weight bits and index bits, and the k-means initialisation."""

    bits: dict[str, int]
    index_bits: dict[str, int]
    init: str = "linear"
    seed: int = 0

    @classmethod
    def build(cls, layers: list, bits=None, index_bits=None, init: str = "linear", seed: int = 0) -> "QuantSettings":
        """From user settings (strings, numbers or dicts as :func:`parse_bits` takes them) for these layers."""
        return cls(resolve_bits(parse_bits(bits, "--bits"), layers, DEFAULT_BITS, "--bits"),
                   resolve_bits(parse_bits(index_bits, "--index-bits", MAX_INDEX_BITS), layers, DEFAULT_INDEX_BITS,
                                "--index-bits"),
                   check_init(init), int(seed))

    def to_dict(self) -> dict:
        return {"bits": dict(self.bits), "index_bits": dict(self.index_bits), "init": self.init, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict, layers: list) -> "QuantSettings":
        if not isinstance(d, dict):
            raise PlanError("The recipe's 'quantize' entry must be an object.")
        bad = set(d) - {"bits", "index_bits", "init", "seed", "finetune"}
        if bad:
            raise PlanError(f"The recipe's 'quantize' entry has unknown key(s): {', '.join(sorted(bad))}.")
        seed = d.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise PlanError(f"The recipe's quantize seed must be an integer (got {seed!r}).")
        return cls.build(layers, d.get("bits"), d.get("index_bits"), d.get("init", "linear"), seed)


@dataclass
class LayerQuant:
    """One layer's weight sharing: where the kept weights are, which shared value each one takes, the values."""

    name: str
    shape: tuple[int, ...]
    positions: np.ndarray     # int64 flat positions of the kept (nonzero) weights, ascending
    labels: np.ndarray        # int32 per kept weight: index into ``centroids``
    centroids: np.ndarray     # float32 shared values (ascending after k-means; training may reorder them)
    bits: int
    index_bits: int
    initial: np.ndarray = field(default=None)   # the centroids k-means gave, before any training

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def kept(self) -> int:
        return len(self.positions)

    def weight(self) -> torch.Tensor:
        """The layer's quantized weight: shared values at the kept positions, +0.0 elsewhere."""
        flat = np.zeros(self.numel, dtype=np.float32)
        flat[self.positions] = self.centroids[self.labels]
        return torch.from_numpy(flat).reshape(self.shape)

    def with_centroids(self, centroids: np.ndarray) -> "LayerQuant":
        c = np.asarray(centroids, dtype=np.float32) + np.float32(0.0)     # -0.0 + 0.0 = +0.0: never a negative zero
        return LayerQuant(self.name, self.shape, self.positions, self.labels, c, self.bits, self.index_bits,
                          self.initial)


def quantize_layer(name: str, weight: torch.Tensor, bits: int, index_bits: int, init: str = "linear",
                   seed: int = 0) -> LayerQuant:
    """Cluster one layer's kept weights into at most 2^bits shared values (one fewer when fillers are needed)."""
    w = weight.detach().cpu()
    if w.dtype != torch.float32:
        raise PlanError(f"Layer {name} has {w.dtype} weights; weight sharing handles float32 weights only.")
    flat = w.contiguous().reshape(-1).numpy()
    if not np.isfinite(flat).all():
        raise PlanError(f"Layer {name} has NaN or inf weights; they cannot be shared. Fix or reload the model.")
    positions = np.flatnonzero(flat)
    k = (1 << bits) - (1 if filler_count(positions, flat.size, index_bits) else 0)
    km = kmeans_1d(flat[positions], max(k, 1), init, seed)
    c = km.centroids + np.float32(0.0)
    return LayerQuant(name, tuple(w.shape), positions.astype(np.int64), km.labels, c, bits, index_bits, c.copy())


def quantize_state(state: dict[str, torch.Tensor], settings: QuantSettings, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None) -> dict[str, LayerQuant]:
    """Weight sharing for every layer of ``settings`` on the weights in ``state`` (largest layers first)."""
    key = {n: state_weight_key(state, n) for n in settings.bits}
    names = sorted(settings.bits, key=lambda n: -state[key[n]].numel())
    meter = ProgressMeter(progress, sum(state[key[n]].numel() for n in names) + 1, "clustering weights")
    out = {}
    for n in names:
        if cancel is not None:
            cancel.check()
        w = state[key[n]]
        out[n] = quantize_layer(n, w, settings.bits[n], settings.index_bits[n], settings.init, settings.seed)
        meter.step(w.numel(), f"clustering {n}")
    return {n: out[n] for n in settings.bits}


def quantized_state(state: dict[str, torch.Tensor], quants: dict[str, LayerQuant]) -> dict[str, torch.Tensor]:
    """``state`` with every quantized layer's weight replaced by its shared values."""
    out = dict(state)
    for n, q in quants.items():
        out[state_weight_key(state, n)] = q.weight()
    return out
