"""Granularities: the structure in which weights are pruned together.

The lecture's taxonomy, irregular -> regular:

- ``element``: single weights (fine-grained);
- ``n:m`` (e.g. ``2:4``): in every run of m consecutive weights along the
  input dimension at most n survive (the pattern sparse tensor cores run);
- ``vector``: one kernel row (kw weights) of a conv, a block of 4
  consecutive input weights of a Linear (and of a 1x1 conv);
- ``kernel``: one kh x kw kernel, i.e. one input->output channel connection;
- ``channel``: a whole output filter of a conv / output neuron of a Linear.

Each granularity describes groups as a permutation of the weight's
dimensions followed by a reshape to ``(groups, group_size)``; group values
expand back to element masks the same way. Layouts are written for the logical
``(out, in, *kernel)`` order; a weight stored inputs x outputs (transformers'
``Conv1D``, ``LayerInfo.transposed``) gets the same groups through its stored order
(:func:`stored`), so n:m runs and channels follow its input and output dimensions.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from math import prod

import numpy as np
import torch

from ..errors import PlanError
from ..model.layers import LayerInfo
from .named import Named

VECTOR_BLOCK = 4  # inputs per vector group of a Linear / 1x1 conv


@dataclass(frozen=True)
class GroupLayout:
    """How a weight tensor splits into equal groups."""

    weight_shape: tuple[int, ...]
    perm: tuple[int, ...]
    num_groups: int
    group_size: int

    @property
    def permuted_shape(self) -> tuple[int, ...]:
        return tuple(self.weight_shape[d] for d in self.perm)

    @property
    def inverse_perm(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.argsort(self.perm))

    def group_view(self, t: torch.Tensor) -> torch.Tensor:
        """(groups, group_size) view/copy of a tensor of the weight's shape."""
        return t.permute(*self.perm).reshape(self.num_groups, self.group_size)

    def expand(self, per_group: torch.Tensor) -> torch.Tensor:
        """A tensor of the weight's shape in which every element takes its group's value."""
        full = per_group.reshape(-1, 1).expand(self.num_groups, self.group_size)
        return full.reshape(self.permuted_shape).permute(*self.inverse_perm).contiguous()

    def groups_of(self, flat_index: np.ndarray) -> np.ndarray:
        """Group id of each element given by its flat (row-major) index in the weight."""
        coords = np.unravel_index(flat_index, self.weight_shape)
        permuted = tuple(coords[d] for d in self.perm)
        return np.ravel_multi_index(permuted, self.permuted_shape) // self.group_size


class Granularity(Named):
    """A granularity (see :mod:`named`: it is its name); the engine asks it for ``layout`` and ``check``."""

    structured: bool = False   # removing a group shrinks the dense network (compactable)

    def __new__(cls, name: str | None = None):
        return str.__new__(cls, cls.NAME if name is None else name)

    def layout(self, layer: LayerInfo) -> GroupLayout:
        raise NotImplementedError

    def check(self, layer: LayerInfo) -> None:
        self.layout(layer)

    def fits(self, layer: LayerInfo) -> bool:
        try:
            self.check(layer)
            return True
        except PlanError:
            return False


def stored(layer: LayerInfo, lay: GroupLayout) -> GroupLayout:
    """A layout written for the logical (out, in, ...) order, applied to the weight as it is stored."""
    if not layer.transposed:
        return lay
    swap = {0: 1, 1: 0}
    return GroupLayout(tuple(layer.weight_shape), tuple(swap.get(d, d) for d in lay.perm), lay.num_groups,
                       lay.group_size)


def _refuse(g: str, layer: LayerInfo, why: str) -> PlanError:
    return PlanError(f"'{g}' granularity does not fit layer {layer.name} {tuple(layer.weight_shape)}: {why}.")


class Element(Granularity):
    NAME, label = "element", "Element (fine-grained)"
    tooltip = ("Fine-grained: any single weight can go. Highest compression, but irregular zeros give no speedup "
               "on dense hardware.")

    def layout(self, layer):
        return GroupLayout(layer.weight_shape, tuple(range(len(layer.weight_shape))), layer.params, 1)



class NM(Granularity):
    """n:m pattern: ranked per element, but at most n of every m consecutive inputs survive."""

    structured = False

    def __new__(cls, n: int, m: int):
        self = str.__new__(cls, f"{n}:{m}")
        self.n, self.m = n, m
        self.label = f"{n}:{m} pattern"
        self.tooltip = (f"Pattern-based: in every run of {m} consecutive input weights at most {n} survive "
                        f"({(m - n) / m:.0%} sparse); {n}:{m} runs on sparse tensor cores (NVIDIA Ampere, ~2x peak).")
        return self

    @property
    def pattern_sparsity(self) -> float:
        return (self.m - self.n) / self.m

    def layout(self, layer):
        shape = layer.logical_shape
        cin = shape[1]
        if cin % self.m:
            raise _refuse(self.name, layer, f"its input width {cin} is not divisible by {self.m}")
        # groups of m consecutive weights along the input dimension: move 'in' last
        perm = (0, *range(2, len(shape)), 1)
        return stored(layer, GroupLayout(shape, perm, layer.params // self.m, self.m))


class Vector(Granularity):
    NAME, label = "vector", "Vector (kernel row)"
    tooltip = ("Vector-level: one row of a conv kernel (kw weights), or a block of 4 consecutive inputs of a "
               "Linear, goes at once.")

    def layout(self, layer):
        shape = layer.logical_shape
        kernel = prod(shape[2:]) if len(shape) > 2 else 1
        if kernel > 1:
            return GroupLayout(shape, tuple(range(len(shape))), layer.params // shape[-1], shape[-1])
        if shape[1] % VECTOR_BLOCK:
            raise _refuse(self.name, layer, f"its input width {shape[1]} is not divisible by {VECTOR_BLOCK}")
        return stored(layer, GroupLayout(shape, tuple(range(len(shape))), layer.params // VECTOR_BLOCK, VECTOR_BLOCK))


class Kernel(Granularity):
    NAME, label = "kernel", "Kernel"
    tooltip = "Kernel-level: a whole kh×kw kernel, i.e. one input→output channel connection of a conv, goes at once."

    def layout(self, layer):
        shape = layer.weight_shape
        if len(shape) < 3:
            raise _refuse(self.name, layer, "it is not a convolution (a Linear has no kernels)")
        k = prod(shape[2:])
        return GroupLayout(shape, tuple(range(len(shape))), shape[0] * shape[1], k)


class Channel(Granularity):
    NAME, label = "channel", "Channel (filter)"
    tooltip = ("Channel-level: a whole output filter / neuron goes, with its BatchNorm entries; after compaction "
               "the network is smaller and really faster, at lower compression.")
    structured = True

    def layout(self, layer):
        shape = layer.logical_shape
        return stored(layer, GroupLayout(shape, tuple(range(len(shape))), shape[0], layer.params // shape[0]))

    def check(self, layer):
        if layer.is_output:
            raise _refuse(self.name, layer, "it is the network's output layer, whose outputs (classes) must all stay")


GRANULARITY_NAMES = ("element", "2:4", "vector", "kernel", "channel")
_FIXED = {g.name: g for g in (Element(), Vector(), Kernel(), Channel())}
_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def get_granularity(name: str) -> Granularity:
    """Parse a granularity name: element, n:m (e.g. 2:4), vector, kernel, channel (a Granularity passes through)."""
    if isinstance(name, Granularity):
        return name
    if not isinstance(name, str):
        raise PlanError(f"A granularity must be a name such as element or 2:4, not {name!r}.")
    name = name.strip().lower()
    if name in _FIXED:
        return _FIXED[name]
    m = _NM.match(name)
    if m:
        n, mm = int(m.group(1)), int(m.group(2))
        if not (0 < n < mm <= 64):
            raise PlanError(f"Invalid n:m pattern '{name}': need 0 < n < m <= 64 (e.g. 2:4).")
        return NM(n, mm)
    if name == "block":     # not a per-layer granularity: the prune command drops whole blocks (flows/depth.py)
        raise PlanError("The block granularity drops whole blocks of the model, not weights of a layer; only the "
                        "prune command takes it (prune --granularity block --sparsity S).",
                        "Here use element, n:m (e.g. 2:4), vector, kernel or channel.")
    raise PlanError(f"Unknown granularity '{name}'.", "Use element, n:m (e.g. 2:4), vector, kernel or channel.")


Granularity.parse = staticmethod(get_granularity)
