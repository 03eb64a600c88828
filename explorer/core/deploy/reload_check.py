"""Checking a written checkpoint against the tensors it should hold, in bounded memory.

Loading the file back whole costs a second copy of the model at the peak (VGG-16: +528 MB). Here the file is
memory-mapped (``torch.load(mmap=True)``) and compared tensor by tensor in chunks; on Linux each compared
chunk's pages are handed back to the kernel at once (``madvise(MADV_DONTNEED)``: clean file pages, re-read from
the file if ever touched again), so the check adds a few MB. Elsewhere the mapped pages stay until the check ends.
"""
from __future__ import annotations

import mmap
import os
import sys
from pathlib import Path

import torch

from ..fileio import bit_equal

CHUNK_BYTES = 16 * 2**20
_MADV_DONTNEED = 4


def _release(t: torch.Tensor) -> None:
    """Give the whole pages under ``t``'s bytes back to the kernel (Linux; a no-op elsewhere or on failure)."""
    if not sys.platform.startswith("linux") or t.numel() == 0:
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        page = mmap.PAGESIZE
        start = t.data_ptr()
        end = start + t.numel() * t.element_size()
        lo, hi = -(-start // page) * page, end // page * page
        if hi > lo:
            libc.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), _MADV_DONTNEED)
    except Exception:   # only memory use is at stake
        pass


def _equal_in_chunks(a: torch.Tensor, mapped: torch.Tensor) -> bool:
    if a.dtype != mapped.dtype or a.shape != mapped.shape:
        return False
    if not (a.is_contiguous() and mapped.is_contiguous()) or a.numel() == 0:
        return bit_equal(a, mapped)
    fa, fb = a.reshape(-1), mapped.reshape(-1)
    step = max(1, CHUNK_BYTES // max(1, a.element_size()))
    for i in range(0, fa.numel(), step):
        cb = fb[i:i + step]
        same = bit_equal(fa[i:i + step], cb)
        _release(cb)
        if not same:
            return False
    return True


def mismatching_tensors(state: dict[str, torch.Tensor], path: str | Path) -> tuple[list[str], list[str]]:
    """(keys missing or extra, keys whose tensors differ) between ``state`` and the checkpoint at ``path``."""
    # mapped where a mapped file may still be renamed (POSIX); loaded whole elsewhere
    back = torch.load(path, map_location="cpu", weights_only=True, mmap=os.name == "posix")
    try:
        if not isinstance(back, dict):
            return ["<not a state_dict>"], []
        odd = sorted(set(state) ^ set(back))
        differ = [] if odd else [k for k in state if not _equal_in_chunks(state[k], back[k])]
        return odd, differ
    finally:
        del back
