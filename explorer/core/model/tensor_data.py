"""``tensors:PATH``: your own data as arrays -- audio, tabular, sensor, sequence, embeddings, images in any layout.

PATH is a ``.npz``, ``.safetensors`` or ``.pt`` file holding ``x`` (N samples of any shape: float values, or
integer token ids) and ``y``, or a folder with ``train.*``, ``val.*`` and ``test.*`` files of that kind (a folder
without them: its one data file, split 80/10/10 by a seeded permutation, like ``imagefolder``). Files are read
without running code: ``.pt`` with ``torch.load(weights_only=True)`` (memory-mapped), ``.npz`` without pickles
(``allow_pickle=False``), ``.safetensors`` as tensors only. A file that does not fit in the available memory is
refused with its size (a ``.pt`` file is memory-mapped: only a random split of one file has to copy it).

The task follows from ``y``: integer labels of shape N are **classification** (top-1 accuracy); float ``y`` shaped
like the model's output is **regression**, measured by the mean squared error (``DatasetBundle.metric`` =
``"mse"``: lower is better, a drop is its increase in percent). The input shape is ``x``'s sample shape.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..errors import DatasetError
from ..finite import all_finite

SUFFIXES = (".npz", ".safetensors", ".pt")
SPLIT_SEED = 0
HINT = ("Save x (N x ...) and y (N) with e.g. np.savez(PATH, x=x, y=y); see the README's 'Bringing your own "
        "data'.")


def available_bytes() -> int | None:
    """Memory available to this process now (Linux's MemAvailable; psutil elsewhere), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return None


def _fits(name: str, nbytes: int, how: str = "") -> None:
    free = available_bytes()
    if free is not None and nbytes > free:
        raise DatasetError(f"'{name}' holds {nbytes / 2**30:.2f} GiB of arrays{how}, more than the "
                           f"{free / 2**30:.2f} GiB of memory available.",
                           "Save it as train.pt/val.pt/test.pt in a folder (torch.save; those are memory-mapped), "
                           "or use a smaller part of the data.")


def _read_npz(p: Path) -> dict[str, torch.Tensor]:
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            _fits(p.name, sum(i.file_size for i in z.infolist()))
        with np.load(p, allow_pickle=False) as f:
            return {k: torch.from_numpy(np.ascontiguousarray(f[k])) for k in f.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DatasetError(f"'{p.name}' holds pickled Python objects (object arrays), not plain arrays; "
                               "tensors:PATH never unpickles.", HINT) from None
        raise DatasetError(f"'{p.name}' is not a readable .npz file ({e}).", HINT) from None
    except (OSError, zipfile.BadZipFile) as e:
        raise DatasetError(f"'{p.name}' is not a readable .npz file ({type(e).__name__}: {e}).", HINT) from None


def _read_safetensors(p: Path) -> dict[str, torch.Tensor]:
    from ..extras import require

    _fits(p.name, p.stat().st_size)
    st = require("safetensors.torch", f"Reading {p.name}")
    try:
        return dict(st.load_file(str(p), device="cpu"))
    except Exception as e:
        raise DatasetError(f"'{p.name}' is not a readable .safetensors file ({type(e).__name__}: {e}).",
                           HINT) from None


def _read_pt(p: Path) -> dict[str, torch.Tensor]:
    import pickle

    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise DatasetError(f"'{p.name}' holds pickled Python code or objects besides tensors, which tensors:PATH "
                           "never runs (it reads .pt files with weights_only=True).",
                           "Save plain tensors: torch.save({'x': x, 'y': y}, PATH).") from None
    except RuntimeError:
        try:   # an old (non-zip) torch.save file cannot be memory-mapped: read it whole
            _fits(p.name, p.stat().st_size)
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise DatasetError(f"'{p.name}' holds pickled Python code or objects besides tensors, which "
                               "tensors:PATH never runs (it reads .pt files with weights_only=True).",
                               "Save plain tensors: torch.save({'x': x, 'y': y}, PATH).") from None
        except Exception as e:
            raise DatasetError(f"'{p.name}' is not a readable torch.save file ({type(e).__name__}: {e}).",
                               HINT) from None
    if not isinstance(obj, dict):
        raise DatasetError(f"'{p.name}' holds a {type(obj).__name__}, not a dict with the tensors 'x' and 'y'.",
                           "Save torch.save({'x': x, 'y': y}, PATH).")
    return obj


READERS = {".npz": _read_npz, ".safetensors": _read_safetensors, ".pt": _read_pt}


def read_pair(p: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of one file, checked: both there, tensors, the same number of samples, finite, usable types."""
    arrays = READERS[p.suffix.lower()](p)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        has = ", ".join(sorted(map(str, arrays))[:6]) or "nothing"
        raise DatasetError(f"'{p.name}' has no array named {' or '.join(repr(m) for m in missing)} (it holds: {has}).",
                           HINT)
    x, y = arrays["x"], arrays["y"]
    for k, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise DatasetError(f"'{p.name}': '{k}' is a {type(t).__name__}, not a tensor.", HINT)
        if t.dim() == 0:
            raise DatasetError(f"'{p.name}': '{k}' is a single number, not N samples.", HINT)
    if x.shape[0] != y.shape[0]:
        raise DatasetError(f"In '{p.name}', x has {x.shape[0]:,} samples but y has {y.shape[0]:,}: they must be "
                           "the same length.", HINT)
    if x.shape[0] == 0:
        raise DatasetError(f"'{p.name}' holds no samples (x and y are empty).", HINT)
    if x.dim() < 2:
        x = x.unsqueeze(1)                   # N numbers: one feature per sample
    if x.dtype == torch.bool or y.dtype == torch.bool or x.is_complex() or y.is_complex():
        raise DatasetError(f"'{p.name}': x and y must be real numbers (x is {x.dtype}, y is {y.dtype}).", HINT)
    if x.is_floating_point():
        if not all_finite(x):
            raise DatasetError(f"'{p.name}': x holds NaN or infinite values.",
                               "Remove or impute those samples before saving the file.")
        x = x if x.dtype == torch.float32 else x.float()
    else:
        x = x.long()                         # token ids (an embedding's input)
    if y.is_floating_point():
        if not all_finite(y):
            raise DatasetError(f"'{p.name}': y holds NaN or infinite values.",
                               "Remove or impute those samples before saving the file.")
        y = y if y.dtype == torch.float32 else y.float()
        if y.dim() == 1:
            y = y.unsqueeze(1)               # one number per sample: a model output of shape (1,)
    else:
        if y.dim() != 1:
            raise DatasetError(f"'{p.name}': integer y must be one class label per sample (shape N), not "
                               f"{tuple(y.shape)}.", "For regression targets save y as floats.")
        y = y.long()
        if int(y.min()) < 0:
            raise DatasetError(f"'{p.name}': y holds the label {int(y.min())}; class labels are 0, 1, 2, ...",
                               HINT)
    return x, y


def data_files(path: Path) -> dict[str, Path] | Path:
    """{split: file} of a folder with train.*/val.*/test.*, or the one data file to split."""
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise DatasetError(f"'{path.name}' is not a .npz, .safetensors or .pt file.", HINT)
        return path
    if not path.is_dir():
        raise DatasetError(f"'{path}' does not exist.", "tensors:PATH takes a .npz/.safetensors/.pt file or a "
                           "folder with train.*, val.* and test.* files.")
    files = [f for f in sorted(path.iterdir()) if f.is_file() and f.suffix.lower() in SUFFIXES]
    split = {s: f for s in ("train", "val", "test") for f in files if f.stem == s}
    if split:
        if "train" not in split or len(split) < 2:
            raise DatasetError(f"'{path.name}' has {', '.join(f.name for f in split.values())} but needs train.* "
                               "and at least one of val.*, test.*.", HINT)
        return split
    if len(files) == 1:
        return files[0]
    raise DatasetError(f"'{path.name}' holds {len(files)} data files but no train.*/val.*/test.*: "
                       "tensors:DIR takes those three, or a single file to split.", HINT)


def _split(x: torch.Tensor, y: torch.Tensor, name: str) -> dict[str, TensorDataset]:
    n = x.shape[0]
    if n < 3:
        raise DatasetError(f"'{name}' holds {n} sample(s): a train, validation and test split need at least 3.")
    _fits(name, x.numel() * x.element_size() + y.numel() * y.element_size(), " to split into train/val/test")
    perm = torch.as_tensor(np.random.default_rng(SPLIT_SEED).permutation(n))
    n_test = n_val = max(1, n // 10)
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    return {"train": TensorDataset(x[train], y[train]), "val": TensorDataset(x[val], y[val]),
            "test": TensorDataset(x[test], y[test])}


def tensor_splits(path: str | Path) -> tuple[dict[str, TensorDataset], tuple[int, ...], int | None, str, str]:
    """(splits, input shape, number of classes or None, metric "accuracy"|"mse", a note saying what was read)."""
    from ..fileio import expand

    root = Path(expand(str(path)))
    found = data_files(root)
    if isinstance(found, Path):
        x, y = read_pair(found)
        splits = _split(x, y, found.name)
        how = f"{found.name}, split 80/10/10 (seeded)"
    else:
        pairs = {s: read_pair(f) for s, f in found.items()}
        splits = {s: TensorDataset(*xy) for s, xy in pairs.items()}
        splits.setdefault("test", splits.get("val"))
        splits.setdefault("val", splits["test"])
        how = ", ".join(f.name for f in found.values())
    xs = {s: d.tensors[0] for s, d in splits.items()}
    ys = {s: d.tensors[1] for s, d in splits.items()}
    shapes = {tuple(t.shape[1:]) for t in xs.values()}
    kinds = {(t.is_floating_point(), tuple(t.shape[1:])) for t in ys.values()}
    if len(shapes) > 1 or len({k[0] for k in kinds}) > 1 or len(kinds) > 1:
        raise DatasetError(f"The splits of '{root.name}' differ in x's sample shape or y's type/shape "
                           f"(x: {sorted(shapes)}).", "Save every split with the same layout.")
    regression = next(iter(kinds))[0]
    shape = next(iter(shapes))
    n = {s: len(d) for s, d in splits.items()}
    if regression:
        classes, metric = None, "mse"
        what = f"regression on y of shape {tuple(next(iter(ys.values())).shape[1:])} (mean squared error)"
    else:
        classes, metric = int(max(int(t.max()) for t in ys.values())) + 1, "accuracy"
        what = f"classification into {classes} classes"
    note = (f"{how}: x {('float' if next(iter(xs.values())).is_floating_point() else 'token ids')} "
            f"{'x'.join(map(str, shape))}, {what}; {n['train']} train, {n['val']} val, {n['test']} test")
    return splits, shape, classes, metric, note


def check_fits_model(ds, output_shape: tuple[int, ...] | None, model_name: str) -> None:
    """Labels that the model's outputs cannot score: one sentence (classes beyond its outputs, or regression
    targets of another shape)."""
    if output_shape is None or getattr(ds, "name", None) != "tensors":
        return
    out = tuple(output_shape)
    if ds.metric == "mse":
        y_shape = tuple(ds.split("train").tensors[1].shape[1:])
        if y_shape != out:
            raise DatasetError(f"{model_name} outputs {out} per sample but y holds {y_shape}: "
                               "regression targets must have the shape of the model's output.",
                               "Save y with the shape of one output (N x ...).")
    elif len(out) != 1:
        raise DatasetError(f"{model_name} outputs {out} per sample, not one score per class, so it cannot be "
                           "measured by the integer labels in y.", "Save float targets of the output's shape for "
                           "regression, or open a classifier.")
    elif ds.num_classes and out[0] < ds.num_classes:
        raise DatasetError(f"{model_name} outputs {out[0]} classes but {ds.spec} has {ds.num_classes} "
                           f"(labels 0..{ds.num_classes - 1}).", "Choose a model trained for this data.")
