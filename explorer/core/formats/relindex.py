"""Relative indices (Deep Compression's sparse layout) and fixed-width bit packing.

A prunable weight is read in row-major order (out-channels x in*kh*kw, flattened) and only its nonzero
entries are stored, each with the *gap* to the previous stored entry (the first one counts from position
-1, so a gap is at least 1). A gap is written in ``b`` bits as ``gap - 1``, so gaps 1..2^b fit directly; a
longer gap is bridged by *filler* entries that each advance exactly 2^b positions and hold the value zero
(the paper's "filler zero"). Fillers also bridge a long run of zeros after the last kept weight, so the
tensor's length never exceeds ``(entries + 1) * 2^b``: a reader can bound every size by the data it holds.
There are no row pointers: an empty row is just a longer gap.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PlanError

MAX_INDEX_BITS = 12


@dataclass
class RelativeIndex:
    """The entries of one sparse tensor: stored gaps, and which entry holds which kept weight."""

    stored: np.ndarray       # uint16 per entry: gap - 1, in [0, 2^b)
    kept_slot: np.ndarray    # int64 per kept weight: its entry (the other entries are fillers)
    bits: int

    @property
    def entries(self) -> int:
        return len(self.stored)

    @property
    def fillers(self) -> int:
        return len(self.stored) - len(self.kept_slot)


def check_index_bits(b: int) -> int:
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= int(b) <= MAX_INDEX_BITS:
        raise PlanError(f"Index bits must be a whole number from 1 to {MAX_INDEX_BITS} (got {b!r}).")
    return int(b)


def encode_positions(positions: np.ndarray, numel: int, bits: int) -> RelativeIndex:
    """Relative indices of ascending flat ``positions`` (the kept weights) in a tensor of ``numel`` entries."""
    bits = check_index_bits(bits)
    span = 1 << bits
    pos = np.asarray(positions, dtype=np.int64)
    if pos.size and (pos[0] < 0 or pos[-1] >= numel or np.any(np.diff(pos) <= 0)):
        raise ValueError("positions must be ascending, distinct and inside the tensor")
    gaps = np.diff(pos, prepend=-1)
    fill = (gaps - 1) >> bits                       # fillers before each kept weight
    end = int(pos[-1]) + 1 if pos.size else 0
    trailing = (numel - end) >> bits                # fillers after the last kept weight
    kept_slot = np.cumsum(fill + 1) - 1
    total = int(kept_slot[-1]) + 1 + trailing if pos.size else trailing
    stored = np.full(total, span - 1, dtype=np.uint16)  # a filler advances exactly 2^b
    stored[kept_slot] = (gaps - fill * span - 1).astype(np.uint16)
    return RelativeIndex(stored, kept_slot, bits)


def filler_count(positions: np.ndarray, numel: int, bits: int) -> int:
    """How many filler entries ``encode_positions`` would add (cheap: no arrays of entries)."""
    bits = check_index_bits(bits)
    pos = np.asarray(positions, dtype=np.int64)
    end = int(pos[-1]) + 1 if pos.size else 0
    return int(((np.diff(pos, prepend=-1) - 1) >> bits).sum()) + ((numel - end) >> bits)


def decode_positions(stored: np.ndarray, bits: int) -> np.ndarray:
    """Flat positions of every entry (fillers included) from the stored gaps."""
    return np.cumsum(stored.astype(np.int64) + 1) - 1


def check_length(positions: np.ndarray, numel: int, bits: int) -> str | None:
    """Why entries at ``positions`` cannot describe a tensor of ``numel`` weights (None when they can)."""
    end = int(positions[-1]) + 1 if len(positions) else 0
    if end > numel:
        return f"its entries reach position {end - 1:,} of a tensor of {numel:,}"
    if numel - end >= (1 << bits):
        return f"{numel - end:,} trailing zeros are not bridged by fillers"
    return None


# ---------------------------------------------------------------- fixed-width bit packing (MSB first)

def pack_bits(values: np.ndarray, width: int) -> bytes:
    """``values`` (each < 2^width, width <= 16) as a big-endian bit stream, padded to whole bytes."""
    if width < 1 or width > 16:
        raise ValueError("width must be 1..16")
    v = np.asarray(values)
    parts = []
    step = 1 << 22                      # a multiple of 8 values: every chunk but the last fills whole bytes
    for i in range(0, len(v), step):
        chunk = (v[i:i + step].astype(np.uint32) << (16 - width)).astype(">u2")
        bits = np.unpackbits(chunk.view(np.uint8)).reshape(-1, 16)[:, :width].reshape(-1)
        parts.append(np.packbits(bits).tobytes())
    return b"".join(parts)


def packed_size(n: int, width: int) -> int:
    return (n * width + 7) // 8


def unpack_bits(data: bytes | np.ndarray, n: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``n`` values of ``width`` bits (uint16)."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if len(buf) < packed_size(n, width):
        raise ValueError("bit stream too short")
    out = np.empty(n, dtype=np.uint16)
    step = 1 << 22                      # values per chunk; 8 * step bits is a whole number of bytes
    for i in range(0, n, step):
        m = min(step, n - i)
        b0 = i * width // 8             # whole bytes: i is a multiple of 8
        bits = np.unpackbits(buf[b0:b0 + packed_size(m, width)])[:m * width].reshape(m, width)
        full = np.zeros((m, 16), dtype=np.uint8)
        full[:, 16 - width:] = bits
        out[i:i + m] = np.packbits(full, axis=1).view(">u2").reshape(-1)
    return out
