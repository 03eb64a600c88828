"""Writing results: atomic file writes (more exports arrive with the pruning issue)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def _atomic_write(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_torch_save(obj, path: Path) -> Path:
    return _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path: Path, text: str) -> Path:
    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return _atomic_write(path, w)


def atomic_write_json(path: Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


# ---------------------------------------------------------------- pruned model exports

def _check_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    from .errors import ExplorerError

    if set(a) != set(b):
        raise ExplorerError(f"The exported {what} did not reload with the same tensors: "
                            f"{sorted(set(a) ^ set(b))[:5]}")
    for k in a:
        if a[k].shape != b[k].shape or not torch.equal(a[k], b[k]):
            if a[k].is_floating_point() and torch.isnan(a[k]).any() and \
                    torch.equal(torch.nan_to_num(a[k], nan=1.2345), torch.nan_to_num(b[k], nan=1.2345)):
                continue
            raise ExplorerError(f"The exported {what} did not reload identically (tensor {k}).")


def export_checkpoint(state: dict[str, torch.Tensor], path: Path) -> Path:
    """state_dict with exact zeros; reloads with plain torch.load(weights_only=True) and is checked."""
    path = atomic_torch_save(state, Path(path))
    back = torch.load(path, map_location="cpu", weights_only=True)
    _check_equal(state, back, f"checkpoint {Path(path).name}")
    return path


def export_sparse_archive(state: dict[str, torch.Tensor], prunable: list[str], meta: dict, path: Path) -> Path:
    from .sparse_archive import load_sparse_archive, write_sparse_archive

    path = _atomic_write(Path(path), lambda tmp: write_sparse_archive(Path(tmp), state, prunable, meta))
    _check_equal(state, load_sparse_archive(path), f"sparse archive {Path(path).name}")
    return path


def export_recipe(recipe: dict, path: Path) -> Path:
    from .recipe import recipe_to_plan

    path = atomic_write_json(Path(path), recipe)
    recipe_to_plan(json.loads(Path(path).read_text()))  # must parse back
    return path


def export_module(module: torch.nn.Module, path: Path, example: torch.Tensor | None = None) -> Path:
    """A whole module (e.g. the compacted network) via torch.save; reloaded (trusted: we just wrote it) and run."""
    path = atomic_torch_save(module, Path(path))
    back = torch.load(path, map_location="cpu", weights_only=False)
    if example is not None:
        with torch.inference_mode():
            a, b = module.eval()(example), back.eval()(example)
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
            from .errors import ExplorerError
            raise ExplorerError(f"The exported module {Path(path).name} does not reproduce the model's outputs.")
    return path


def export_torchscript(module: torch.nn.Module, path: Path, example: torch.Tensor) -> Path:
    """TorchScript (traced) archive; reloaded with torch.jit.load and compared on the example."""
    module = module.eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)

    def save(tmp):
        torch.jit.save(traced, tmp)
    path = _atomic_write(Path(path), save)
    back = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        a, b = module(example), back(example)
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        from .errors import ExplorerError
        raise ExplorerError(f"The TorchScript export {Path(path).name} does not reproduce the model's outputs.")
    return path
