"""Writing the sparse archive (.npz) whose layout ``formats.sparse_archive`` describes and reads: every prunable
weight as CSR (scipy.sparse), everything else dense; reading it back gives bit-identical tensors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from explorer import __version__

from ..formats.sparse_archive import ARCHIVE_FORMAT, SEP
from ..model.layers import state_weight_key


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def archive_arrays(state: dict[str, torch.Tensor], prunable: list[str], meta: dict) -> dict[str, np.ndarray]:
    """The arrays of a sparse archive for a state_dict; ``prunable`` are the layer names (their .weight goes CSR)."""
    sparse_keys = {state_weight_key(state, n) for n in prunable}
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
