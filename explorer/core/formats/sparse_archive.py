"""Sparse archive (.npz): every prunable weight as CSR (scipy.sparse), everything else dense -- its layout and
how it is read back (``deploy.sparse_archive`` writes it).

Layout of the archive (numpy's zip of .npy arrays; loading never unpickles):

- ``__meta__``: JSON (format, version, tool version, model spec, layer names)
- ``<param>::csr_data`` / ``::csr_indices`` / ``::csr_indptr`` / ``::shape``:
  a prunable weight viewed as out-channels x (in * kh * kw), in CSR
- ``<param>::dense``: any other tensor (biases, BatchNorm, buffers)

:func:`load_sparse_archive` (here) restores a state_dict whose tensors are
bit-identical to the exported ones (pruned weights are +0.0).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import ModelLoadError
from ..safe_read import regular_file

ARCHIVE_FORMAT = "pruning-explorer-sparse"
SEP = "::"


def read_meta(path: Path) -> dict:
    return _checked(Path(path))[1]


def _checked(path: Path) -> tuple[dict, dict]:
    """(array headers, metadata) of a sparse archive, checked before any array is loaded: the metadata is
    JSON, every CSR layer is consistent, and the densified tensors fit in memory."""
    from ..safe_read import memory_budget, npz_headers, parse_json

    path = regular_file(path, "sparse archive", ModelLoadError)
    heads = npz_headers(path, ModelLoadError)
    if "__meta__" not in heads:
        raise ModelLoadError(f"'{path.name}' is an .npz file but not a sparse archive of this app.",
                             "Sparse archives are written by File ▸ Export ▸ Sparse archive or `prune --sparse-archive`.")
    shape, dtype = heads["__meta__"]
    if dtype != np.uint8 or len(shape) != 1 or shape[0] > 2**24:
        raise ModelLoadError(f"The sparse archive '{path.name}' has damaged metadata.")
    with np.load(path, allow_pickle=False) as z:
        raw = bytes(z["__meta__"])
    try:
        meta = parse_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelLoadError(f"The metadata of the sparse archive '{path.name}' is not valid JSON ({e}).") from None
    if not isinstance(meta, dict):
        raise ModelLoadError(f"The metadata of the sparse archive '{path.name}' is not a JSON object.")
    dense_bytes = 0
    for key in {k.split(SEP)[0] for k in heads if SEP in k}:
        if f"{key}{SEP}dense" in heads:
            dense_bytes += _nbytes(*heads[f"{key}{SEP}dense"])
            continue
        parts = [f"{key}{SEP}{p}" for p in ("shape", "csr_data", "csr_indices", "csr_indptr")]
        missing = [p for p in parts if p not in heads]
        if missing:
            raise ModelLoadError(f"The sparse archive '{path.name}' is damaged: {missing[0]} is missing.")
        (sshape, _), (dshape, ddtype), (ishape, _), (pshape, _) = (heads[p] for p in parts)
        if len(sshape) != 1 or not 2 <= sshape[0] <= 6:
            raise ModelLoadError(f"The sparse archive '{path.name}' is damaged: the shape of {key} is not a "
                                 "weight's shape.")
        with np.load(path, allow_pickle=False) as z:
            shp = [int(v) for v in z[parts[0]]]
        if any(v <= 0 for v in shp) or dshape != ishape or pshape != (shp[0] + 1,):
            raise ModelLoadError(f"The sparse archive '{path.name}' is damaged: the CSR arrays of {key} do not "
                                 "fit its shape.")
        dense_bytes += _nbytes(tuple(shp), ddtype)
    budget = memory_budget()
    if dense_bytes > budget:
        raise ModelLoadError(f"The sparse archive '{path.name}' declares {dense_bytes / 2**30:.1f} GiB of weights, more "
                             f"than this machine can hold now ({budget / 2**30:.1f} GiB).",
                             "Open it on a machine with more memory, or check that the file is what you meant.")
    return heads, meta


def _nbytes(shape: tuple[int, ...], dtype) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * np.dtype(dtype).itemsize


def load_sparse_archive(path: str | Path) -> dict[str, torch.Tensor]:
    """state_dict from a sparse archive (CSR layers densified), bit-identical to what was written."""
    path = Path(path)
    heads, _ = _checked(path)
    state: dict[str, torch.Tensor] = {}
    keys = {k.split(SEP)[0] for k in heads if SEP in k}
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in sorted(keys):
                if f"{key}{SEP}dense" in heads:
                    state[key] = torch.from_numpy(np.array(z[f"{key}{SEP}dense"]))
                    continue
                shape = tuple(int(s) for s in z[f"{key}{SEP}shape"])
                rows, cols = shape[0], int(np.prod(shape[1:]))
                m = sp.csr_matrix((z[f"{key}{SEP}csr_data"], z[f"{key}{SEP}csr_indices"],
                                   z[f"{key}{SEP}csr_indptr"]), shape=(rows, cols))
                m.check_format(full_check=True)
                state[key] = torch.from_numpy(np.ascontiguousarray(m.toarray()).reshape(shape))
    except (KeyError, ValueError, IndexError, OSError, EOFError) as e:
        raise ModelLoadError(f"The sparse archive '{path.name}' is damaged ({str(e).splitlines()[0][:200]}).") from None
    except Exception as e:   # zipfile's CRC check on a flipped byte, and the like
        raise ModelLoadError(f"The sparse archive '{path.name}' is damaged ({type(e).__name__}: {e}).") from None
    return state
