"""Counting: parameters, nonzeros, MACs and storage bytes (dense, CSR, bitmask).

Storage formulas (used by the live dashboard, report.json and the sparse
archive alike):

- dense:   numel * value_bytes
- CSR:     nnz * (value_bytes + index_bytes) + (rows + 1) * index_bytes
           (conv weights are stored as out-channels x (in * kh * kw) matrices)
- bitmask: nnz * value_bytes + ceil(numel / 8)

The "sparse size" of a prunable weight is the smaller of CSR and bitmask;
everything else (biases, BatchNorm, ...) is counted dense.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

VALUE_BYTES = 4   # fp32
INDEX_BYTES = 4   # int32 column indices / row pointers (scipy.sparse's default for these sizes)


def dense_bytes(numel: int, value_bytes: int = VALUE_BYTES) -> int:
    return int(numel) * value_bytes


def csr_bytes(nnz: int, rows: int, value_bytes: int = VALUE_BYTES, index_bytes: int = INDEX_BYTES) -> int:
    return int(nnz) * (value_bytes + index_bytes) + (int(rows) + 1) * index_bytes


def bitmask_bytes(nnz: int, numel: int, value_bytes: int = VALUE_BYTES) -> int:
    return int(nnz) * value_bytes + (int(numel) + 7) // 8


def sparse_bytes(nnz: int, numel: int, rows: int, value_bytes: int = VALUE_BYTES) -> int:
    """Smaller of CSR and bitmask storage for one weight matrix."""
    return min(csr_bytes(nnz, rows, value_bytes), bitmask_bytes(nnz, numel, value_bytes))


def sparse_format(nnz: int, numel: int, rows: int) -> str:
    return "csr" if csr_bytes(nnz, rows) <= bitmask_bytes(nnz, numel) else "bitmask"


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_bytes(module: nn.Module) -> int:
    """Dense storage of all parameters (what torch.save of the weights costs, minus buffers)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def nonzero_count(module: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p.detach())) for p in module.parameters())


@dataclass(frozen=True)
class LayerCounts:
    """Counts for one prunable weight at some mask."""

    params: int
    nonzero: int
    rows: int
    macs: int            # dense MACs per sample
    nonzero_macs: int    # MACs with a nonzero weight

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.params if self.params else 0.0

    @property
    def dense_bytes(self) -> int:
        return dense_bytes(self.params)

    @property
    def csr_bytes(self) -> int:
        return csr_bytes(self.nonzero, self.rows)

    @property
    def bitmask_bytes(self) -> int:
        return bitmask_bytes(self.nonzero, self.params)

    @property
    def sparse_bytes(self) -> int:
        return min(self.csr_bytes, self.bitmask_bytes)


@dataclass(frozen=True)
class Totals:
    """Model-level numbers: all parameters, prunable part, MACs, storage."""

    params: int              # every parameter of the model
    nonzero_params: int      # every parameter, counting the pruned weights as zero
    prunable_params: int
    prunable_nonzero: int
    macs: int                # dense MACs of the whole model, per sample
    nonzero_macs: int        # MACs with a nonzero weight (non-prunable ops counted in full)
    dense_bytes: int         # all parameters dense fp32
    sparse_bytes: int        # prunable weights in their smaller sparse format + the rest dense

    @property
    def sparsity(self) -> float:
        return 1.0 - self.prunable_nonzero / self.prunable_params if self.prunable_params else 0.0

    @property
    def compression_ratio(self) -> float:
        return self.dense_bytes / self.sparse_bytes if self.sparse_bytes else float("inf")

    @property
    def mac_ratio(self) -> float:
        return self.macs / self.nonzero_macs if self.nonzero_macs else float("inf")


def totals(layer_counts: list[LayerCounts], model_params: int, model_bytes: int, model_macs: int,
           other_nonzero: int | None = None) -> Totals:
    """Combine per-layer counts with the model's totals.

    ``other_nonzero`` is the nonzero count of the non-prunable parameters
    (defaults to all of them).
    """
    pp = sum(c.params for c in layer_counts)
    pnz = sum(c.nonzero for c in layer_counts)
    other = model_params - pp
    other_nz = other if other_nonzero is None else other_nonzero
    layer_macs = sum(c.macs for c in layer_counts)
    nz_macs = model_macs - layer_macs + sum(c.nonzero_macs for c in layer_counts)
    other_bytes = model_bytes - sum(c.dense_bytes for c in layer_counts)
    return Totals(params=model_params, nonzero_params=other_nz + pnz, prunable_params=pp, prunable_nonzero=pnz,
                  macs=model_macs, nonzero_macs=nz_macs, dense_bytes=model_bytes,
                  sparse_bytes=other_bytes + sum(c.sparse_bytes for c in layer_counts))


def format_count(n: float) -> str:
    """12,345 -> '12.3K'; 11,689,512 -> '11.69M'."""
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            v = n / div
            return f"{v:.2f}{unit}" if v < 100 else f"{v:.1f}{unit}"
    return f"{int(n)}"


def format_bytes(n: float) -> str:
    n = float(n)
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"
