"""Writing results: atomic file writes (more exports arrive with the pruning issue)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def _atomic_write(path: Path, write, verify=None) -> Path:
    """Write to a temp file in the same folder, check it (``verify(tmp)`` may raise), then rename over
    ``path``: a failed write or check leaves the previous file untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        write(tmp)
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, _file_mode(path))   # mkstemp makes 0600 files; exports get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _file_mode(path: Path) -> int:
    """The destination's current mode if it exists, else 0666 minus the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def read_json(path: str | Path, what: str, hint: str | None = None):
    """Parse a JSON file the user chose; missing or malformed files are a clear PlanError."""
    from ..errors import PlanError

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanError(f"The {what} file '{path}' does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError) as e:
        raise PlanError(f"'{path.name}' is not valid JSON, so not a {what} ({e}).", hint) from None


def atomic_torch_save(obj, path: Path, verify=None) -> Path:
    return _atomic_write(path, lambda tmp: torch.save(obj, tmp), verify)


def atomic_write_json(path: Path, obj, verify=None) -> Path:
    text = json.dumps(obj, indent=2) + "\n"

    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return _atomic_write(path, w, verify)


# ---------------------------------------------------------------- pruned model exports

def _check_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    from ..errors import ExplorerError

    if set(a) != set(b):
        raise ExplorerError(f"The exported {what} did not reload with the same tensors: "
                            f"{sorted(set(a) ^ set(b))[:5]}")
    for k in a:
        if not bit_equal(a[k], b[k]):
            raise ExplorerError(f"The exported {what} did not reload identically (tensor {k}).")


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bits (so -0.0 != +0.0 and NaN payloads count)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point() and a.element_size() in (2, 4, 8):
        view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.contiguous().view(view), b.contiguous().view(view))
    return torch.equal(a, b)


def export_checkpoint(state: dict[str, torch.Tensor], path: Path) -> Path:
    """state_dict with exact zeros; reloads with plain torch.load(weights_only=True) and is checked."""
    def verify(tmp):
        _check_equal(state, torch.load(tmp, map_location="cpu", weights_only=True), f"checkpoint {Path(path).name}")
    return atomic_torch_save(state, Path(path), verify)


def export_sparse_archive(state: dict[str, torch.Tensor], prunable: list[str], meta: dict, path: Path) -> Path:
    from .sparse_archive import load_sparse_archive, write_sparse_archive

    return _atomic_write(Path(path), lambda tmp: write_sparse_archive(Path(tmp), state, prunable, meta),
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
                a, b = module.eval()(example), back.eval()(example)
            if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
                from ..errors import ExplorerError
                raise ExplorerError(f"The exported module {Path(path).name} does not reproduce the model's outputs.")
    return atomic_torch_save(module, Path(path), verify)


def export_torchscript(module: torch.nn.Module, path: Path, example: torch.Tensor) -> Path:
    """TorchScript (traced) archive; reloaded with torch.jit.load and compared on the example."""
    module = module.eval()
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
    return _atomic_write(Path(path), save, verify)
