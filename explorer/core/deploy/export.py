"""Exports of a pruned model: checkpoint, sparse archive, recipe, whole modules, TorchScript.

Each is written atomically, reloaded and compared with what was meant before it is renamed into place."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..fileio import atomic_torch_save, atomic_write, atomic_write_json, bit_equal

# ---------------------------------------------------------------- pruned model exports

def _check_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    from ..errors import ExplorerError

    if set(a) != set(b):
        raise ExplorerError(f"The exported {what} did not reload with the same tensors: "
                            f"{sorted(set(a) ^ set(b))[:5]}")
    for k in a:
        if not bit_equal(a[k], b[k]):
            raise ExplorerError(f"The exported {what} did not reload identically (tensor {k}).")


def with_metadata(state: dict[str, torch.Tensor], like: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    """``state`` as an OrderedDict carrying a state_dict's ``_metadata`` (each module's version, which some
    modules, e.g. torchvision's MNASNet, need to load with ``load_state_dict``): the metadata ``state`` already
    has, else that of ``like`` (a module of the architecture the state belongs to). The tensors are not copied."""
    from collections import OrderedDict

    meta = getattr(state, "_metadata", None)
    if meta is None and like is not None:
        meta = getattr(like.state_dict(keep_vars=True), "_metadata", None)
    out = OrderedDict(state)
    if meta is not None:
        out._metadata = OrderedDict((k, dict(v)) for k, v in meta.items())
    return out


def export_checkpoint(state: dict[str, torch.Tensor], path: Path, like: torch.nn.Module | None = None) -> Path:
    """state_dict with exact zeros; reloads with plain torch.load(weights_only=True) and is checked (memory-mapped,
    in chunks: the check does not hold a second copy of the model, see reload_check.py). It keeps the state_dict's
    ``_metadata`` (``state``'s own, else ``like``'s: see :func:`with_metadata`), so it loads with
    ``load_state_dict(strict=True)`` into a fresh instance of the model's class."""
    from ..errors import ExplorerError
    from .reload_check import mismatching_tensors

    state = with_metadata(state, like)

    def verify(tmp):
        odd, differ = mismatching_tensors(state, tmp)
        if odd:
            raise ExplorerError(f"The exported checkpoint {Path(path).name} did not reload with the same tensors: "
                                f"{odd[:5]}")
        if differ:
            raise ExplorerError(f"The exported checkpoint {Path(path).name} did not reload identically "
                                f"(tensor {differ[0]}).")
    return atomic_torch_save(state, Path(path), verify)


def export_sparse_archive(state: dict[str, torch.Tensor], prunable: list[str], meta: dict, path: Path) -> Path:
    from ..formats.sparse_archive import load_sparse_archive
    from .sparse_archive import write_sparse_archive

    return atomic_write(Path(path), lambda tmp: write_sparse_archive(Path(tmp), state, prunable, meta),
                         lambda tmp: _check_equal(state, load_sparse_archive(tmp), f"sparse archive {Path(path).name}"))


def export_recipe(recipe: dict, path: Path) -> Path:
    from ..prune.recipe import recipe_to_plan

    return atomic_write_json(Path(path), recipe, lambda tmp: recipe_to_plan(json.loads(Path(tmp).read_text())))


def export_module(module: torch.nn.Module, path: Path, example: torch.Tensor | None = None) -> Path:
    """A whole module (e.g. the compacted network) via torch.save; reloaded (trusted: we just wrote it) and run."""
    def verify(tmp):
        back = torch.load(tmp, map_location="cpu", weights_only=False)   # trusted: we just wrote it
        if example is not None:
            with torch.inference_mode():
                a, b = _logits(module.eval()(example)), _logits(back.eval()(example))
            if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
                from ..errors import ExplorerError
                raise ExplorerError(f"The exported module {Path(path).name} does not reproduce the model's outputs.")
    return atomic_torch_save(module, Path(path), verify)


def _logits(out) -> torch.Tensor:
    if hasattr(out, "logits"):
        return out.logits
    return out[0] if isinstance(out, (tuple, list)) else out


def export_torchscript(module: torch.nn.Module, path: Path, example: torch.Tensor) -> Path:
    """TorchScript (traced) archive; reloaded with torch.jit.load and compared on the example."""
    from .formats import graph_module

    module = graph_module(module)
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)

    def save(tmp):
        torch.jit.save(traced, tmp)

    def verify(tmp):
        back = torch.jit.load(str(tmp), map_location="cpu")
        with torch.inference_mode():
            a, b = module(example), back(example)
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
            from ..errors import ExplorerError
            raise ExplorerError(f"The TorchScript export {Path(path).name} does not reproduce the model's outputs.")
    return atomic_write(Path(path), save, verify)
