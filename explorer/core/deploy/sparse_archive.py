"""Sparse archive (.npz): every prunable weight as CSR (scipy.sparse), everything else dense.

Layout of the archive (numpy's zip of .npy arrays; loading never unpickles):

- ``__meta__``: JSON (format, version, tool version, model spec, layer names)
- ``<param>::csr_data`` / ``::csr_indices`` / ``::csr_indptr`` / ``::shape``:
  a prunable weight viewed as out-channels x (in * kh * kw), in CSR
- ``<param>::dense``: any other tensor (biases, BatchNorm, buffers)

:func:`load_sparse_archive` restores a state_dict whose tensors are
bit-identical to the exported ones (pruned weights are +0.0).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from explorer import __version__

from ..errors import ModelLoadError

ARCHIVE_FORMAT = "pruning-explorer-sparse"
SEP = "::"


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def archive_arrays(state: dict[str, torch.Tensor], prunable: list[str], meta: dict) -> dict[str, np.ndarray]:
    """The arrays of a sparse archive for a state_dict; ``prunable`` are the layer names (their .weight goes CSR)."""
    sparse_keys = {f"{n}.weight" for n in prunable}
    arrays: dict[str, np.ndarray] = {}
    for key, t in state.items():
        negative_zero = t.is_floating_point() and bool(((t == 0) & torch.signbit(t)).any())
        if key in sparse_keys and t.dim() >= 2 and t.is_floating_point() and not negative_zero:
            m = sp.csr_matrix(_np(t).reshape(t.shape[0], -1))
            m.sort_indices()
            arrays[f"{key}{SEP}csr_data"] = m.data
            arrays[f"{key}{SEP}csr_indices"] = m.indices
            arrays[f"{key}{SEP}csr_indptr"] = m.indptr
            arrays[f"{key}{SEP}shape"] = np.asarray(t.shape, dtype=np.int64)
        else:
            arrays[f"{key}{SEP}dense"] = _np(t)
    full_meta = {"format": ARCHIVE_FORMAT, "version": 1, "tool_version": __version__, **meta,
                 "sparse": sorted(sparse_keys & set(state))}
    arrays["__meta__"] = np.frombuffer(json.dumps(full_meta).encode(), dtype=np.uint8)
    return arrays


def write_sparse_archive(path: Path, state: dict[str, torch.Tensor], prunable: list[str], meta: dict) -> None:
    """Write (not atomic by itself: export.py wraps it)."""
    arrays = archive_arrays(state, prunable, meta)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def read_meta(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        if "__meta__" not in z.files:
            raise ModelLoadError(f"'{Path(path).name}' is an .npz file but not a sparse archive of this app.")
        return json.loads(bytes(z["__meta__"]).decode())


def load_sparse_archive(path: str | Path) -> dict[str, torch.Tensor]:
    """state_dict from a sparse archive (CSR layers densified), bit-identical to what was written."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ModelLoadError(f"'{path.name}' is not a readable .npz archive ({e}).") from None
    with z:
        if "__meta__" not in z.files:
            raise ModelLoadError(f"'{path.name}' is an .npz file but not a sparse archive of this app.",
                                 "Sparse archives are written by File ▸ Export ▸ Sparse archive or `prune --sparse-archive`.")
        state: dict[str, torch.Tensor] = {}
        keys = {k.split(SEP)[0] for k in z.files if SEP in k}
        try:
            for key in sorted(keys):
                if f"{key}{SEP}dense" in z.files:
                    state[key] = torch.from_numpy(np.array(z[f"{key}{SEP}dense"]))
                    continue
                shape = tuple(int(s) for s in z[f"{key}{SEP}shape"])
                rows = shape[0]
                cols = int(np.prod(shape[1:]))
                m = sp.csr_matrix((z[f"{key}{SEP}csr_data"], z[f"{key}{SEP}csr_indices"], z[f"{key}{SEP}csr_indptr"]),
                                  shape=(rows, cols))
                state[key] = torch.from_numpy(np.ascontiguousarray(m.toarray()).reshape(shape))
        except (KeyError, ValueError) as e:
            raise ModelLoadError(f"The sparse archive '{path.name}' is damaged ({e}).") from None
    return state
