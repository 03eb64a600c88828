"""Pruning by hand: the ``manual`` criterion, whose plan names the pruned units instead of a sparsity.

A manual layer plan holds the units a person chose (``LayerPlan.units``), in the granularity's own terms:

- ``channel``: output channels of the layer, ``[0, 5, 9]`` (recipe key ``channels``);
- ``kernel``: (output channel, input channel) pairs of a convolution, ``[[0, 3], [2, 1]]`` (key ``kernels``);
- ``element``: full weight indices, ``[[0, 3, 1, 2]]`` for a conv, ``[[4, 17]]`` for a Linear (key ``weights``).

Exactly those units are pruned -- the ranking puts them first, ties by position -- so the mask engine, counts,
apply, export, fine-tuning's re-masks and ``prune --recipe`` treat a hand-made plan like any other, and its
sparsity is the chosen share of the layer's units.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import PlanError
from ..model.groups import ChannelGroup
from ..model.layers import LayerInfo

MANUAL = "manual"
RECIPE_KEYS = {"channel": "channels", "kernel": "kernels", "element": "weights"}
MAX_UNITS = 1_000_000   # a hand-made plan names at most this many units per layer


def recipe_key(granularity: str) -> str:
    key = RECIPE_KEYS.get(str(granularity))
    if key is None:
        raise PlanError(f"The manual criterion works with channel, kernel or element granularity, not "
                        f"'{granularity}'.", "Click a channel row (or a kernel or a weight in Detail view).")
    return key


def normalize_units(granularity: str, raw, where: str = "") -> tuple:
    """The units as a sorted tuple without repeats: ints for channels, int tuples for kernels and weights."""
    key = recipe_key(granularity)
    if isinstance(raw, (str, bytes)) or not hasattr(raw, "__iter__"):
        raise PlanError(f"The manual {key}{where} must be a list, not {raw!r}.")
    items = list(raw)
    if len(items) > MAX_UNITS:
        raise PlanError(f"The manual plan{where} names {len(items):,} {key}; at most {MAX_UNITS:,} are allowed.")
    out = set()
    for x in items:
        if key == "channels":
            out.add(_index(x, key, where))
        else:
            if isinstance(x, (str, bytes)) or not hasattr(x, "__iter__"):
                raise PlanError(f"Each of the manual {key}{where} is a list of indices, not {x!r}.")
            t = tuple(_index(v, key, where) for v in x)
            if key == "kernels" and len(t) != 2:
                raise PlanError(f"A manual kernel{where} is [output channel, input channel], not {list(t)}.")
            out.add(t)
    return tuple(sorted(out))


def _index(v, key: str, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise PlanError(f"The manual {key}{where} must be whole numbers >= 0, not {v!r}.")
    return int(v)


def unit_count(layer: LayerInfo, granularity: str) -> int:
    """How many units the layer has under ``granularity`` (channels, kernels or weights)."""
    key = recipe_key(granularity)
    shape = layer.weight_shape
    if key == "channels":
        return int(shape[0])
    if key == "kernels":
        return int(shape[0] * shape[1])
    return int(layer.params)


def unit_ids(layer: LayerInfo, granularity: str, units: tuple) -> torch.Tensor:
    """Flat unit ids (the granularity layout's group order) of the chosen units; out of range is an error."""
    key = recipe_key(granularity)
    shape = tuple(layer.weight_shape)
    if not units:
        return torch.zeros(0, dtype=torch.long)
    if key == "channels":
        ids = np.asarray(units, dtype=np.int64)
        dims = shape[:1]
        coords = (ids,)
    else:
        arr = np.asarray(units, dtype=np.int64)
        dims = shape[:2] if key == "kernels" else shape
        if arr.ndim != 2 or arr.shape[1] != len(dims):
            raise PlanError(f"Layer {layer.name} {shape} takes {len(dims)} indices per manual "
                            f"{key[:-1]}, not {arr.shape[1] if arr.ndim == 2 else '?'}.")
        coords = tuple(arr[:, d] for d in range(len(dims)))
    for d, (c, size) in enumerate(zip(coords, dims)):
        if c.size and int(c.max()) >= size:
            raise PlanError(f"The manual {key} of layer {layer.name} name index {int(c.max())} in dimension {d}, "
                            f"but that dimension has {size} entries.",
                            "Check that the recipe was written for this model.")
    return torch.as_tensor(np.ravel_multi_index(coords, dims), dtype=torch.long)


def manual_scores(layer: LayerInfo, granularity: str, units: tuple, group: ChannelGroup | None) -> torch.Tensor:
    """Unit scores that rank exactly the chosen units first: 0 for them, 1 for the rest (ties by position).
    Channels of a linked group are scored in the group's shared channel order."""
    n = unit_count(layer, granularity)
    ids = unit_ids(layer, granularity, units)
    if recipe_key(granularity) == "channels" and group is not None and group.linked:
        own = group.member_index[layer.name]
        shared_of_row = {int(r): c for c, r in enumerate(own)}
        ids = torch.as_tensor([shared_of_row[int(r)] for r in ids.tolist()], dtype=torch.long)
        n = len(own)
    scores = torch.ones(n, dtype=torch.float32)
    scores[ids] = 0.0
    return scores


def linked_rows(group: ChannelGroup, name: str, rows: tuple, member: str) -> tuple:
    """The output rows of ``member`` that go with ``rows`` of ``name`` in a linked channel group."""
    own = group.member_index[name]
    shared_of_row = {int(r): c for c, r in enumerate(own)}
    target = group.member_index[member]
    return tuple(sorted(int(target[shared_of_row[r]]) for r in rows if r in shared_of_row))


def toggled(units: tuple, unit) -> tuple:
    """``units`` with ``unit`` added, or removed if it was there."""
    s = set(units)
    s.symmetric_difference_update({unit})
    return tuple(sorted(s))


def units_of_mask(view, sparsity: float) -> tuple:
    """The pruned units of an ordinary (ranked) layer mask in manual form: what the heatmap shows as pruned
    becomes the starting point of a hand edit."""
    gran = view.granularity.name
    key = recipe_key(gran)
    if key == "channels":
        return tuple(view.pruned_rows(sparsity))
    keep = view.kept_units(sparsity)
    if view.unit_of_own is not None:
        keep = keep[view.unit_of_own]
    gone = torch.nonzero(~keep).flatten().numpy()
    shape = tuple(view.layer.weight_shape)
    dims = shape[:2] if key == "kernels" else shape
    coords = np.unravel_index(gone, dims)
    return tuple(tuple(int(c[i]) for c in coords) for i in range(gone.size))
