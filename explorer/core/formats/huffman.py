"""Canonical Huffman coding of a stream of small integer symbols (cluster indices, relative-index gaps).

The code is described by one length per symbol of the alphabet (0 = unused); codes are assigned
canonically (by length, then symbol), so the lengths are the whole table. Lengths are at most
``MAX_CODE_BITS``; a histogram so skewed that an optimal code would need longer codes is flattened
(counts halved) until it fits, which costs almost nothing and happens only for huge, extreme streams.

Encoding is vectorised (numpy). Decoding a prefix code is sequential by nature, so a stream is cut into
blocks of ``BLOCK`` symbols whose bit lengths are stored; all blocks then decode in lockstep, one numpy step
per symbol position, through a lookup table indexed by the next ``max length`` bits.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

MAX_CODE_BITS = 16
BLOCK = 4096


class HuffmanError(ValueError):
    """A table or stream that cannot be decoded (the archive reader turns it into a clear message)."""


def _lengths_unlimited(counts: np.ndarray) -> np.ndarray:
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    if len(used) == 0:
        return lengths
    heap = [(int(counts[s]), i, i) for i, s in enumerate(used)]   # (weight, tiebreak, node)
    heapq.heapify(heap)
    parent = list(range(len(used)))
    nxt = len(used)
    while len(heap) > 1:
        w1, _, a = heapq.heappop(heap)
        w2, _, b = heapq.heappop(heap)
        parent.append(nxt)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (w1 + w2, nxt, nxt))
        nxt += 1
    depth = [0] * nxt
    for node in range(nxt - 2, -1, -1):       # parents are created after their children
        depth[node] = depth[parent[node]] + 1
    lengths[used] = depth[:len(used)]
    return lengths


def code_lengths(counts: np.ndarray, limit: int = MAX_CODE_BITS) -> np.ndarray:
    """Optimal (Huffman) code length of every symbol for the given counts; unused symbols get 0."""
    c = np.asarray(counts, dtype=np.int64)
    lengths = _lengths_unlimited(c)
    while lengths.max(initial=0) > limit:     # flatten the histogram until the longest code fits
        c = np.where(c > 0, (c + 1) // 2, 0)
        lengths = _lengths_unlimited(c)
    return lengths.astype(np.uint8)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codes for per-symbol lengths (refuses lengths that no prefix code has)."""
    ln = np.asarray(lengths, dtype=np.int64)
    if ln.size and (ln.min() < 0 or ln.max() > MAX_CODE_BITS):
        raise HuffmanError(f"code lengths must be 0..{MAX_CODE_BITS}")
    used = np.flatnonzero(ln)
    if int(np.sum(np.left_shift(1, MAX_CODE_BITS - ln[used]))) > (1 << MAX_CODE_BITS):
        raise HuffmanError("the code lengths describe no prefix code (Kraft sum above 1)")
    order = used[np.lexsort((used, ln[used]))]
    codes = np.zeros(len(ln), dtype=np.uint32)
    code, prev = 0, 0
    for s in order:
        code <<= int(ln[s]) - prev
        prev = int(ln[s])
        codes[s] = code
        code += 1
    return codes


@dataclass
class HuffmanStream:
    lengths: np.ndarray     # uint8 per symbol of the alphabet
    count: int              # symbols in the stream
    nbits: int              # bits of the stream (the data is padded to whole bytes)
    block_bits: list[int]   # bit length of every block but the last
    data: bytes

    @property
    def average_bits(self) -> float:
        return self.nbits / self.count if self.count else 0.0


def encode(symbols: np.ndarray, alphabet: int) -> HuffmanStream:
    """Huffman-code ``symbols`` (ints in [0, alphabet)) with the optimal code for their own histogram."""
    sym = np.asarray(symbols, dtype=np.int64)
    counts = np.bincount(sym, minlength=alphabet)
    if len(counts) > alphabet:
        raise ValueError("symbol outside the alphabet")
    lengths = code_lengths(counts)
    codes = canonical_codes(lengths)
    sl = lengths[sym].astype(np.int64)
    nbits = int(sl.sum())
    parts = []
    step = 1 << 21
    cols = np.arange(16)
    for i in range(0, len(sym), step):
        s, l = sym[i:i + step], sl[i:i + step]
        left = (codes[s] << (16 - l)).astype(">u2")           # each code left-aligned in 16 bits
        bits = np.unpackbits(left.view(np.uint8)).reshape(-1, 16)
        parts.append(bits[cols < l[:, None]])
    allbits = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    nblocks = -(-len(sym) // BLOCK)
    block_bits = np.add.reduceat(sl, np.arange(0, len(sym), BLOCK))[:-1].tolist() if nblocks > 1 else []
    return HuffmanStream(lengths, len(sym), nbits, [int(b) for b in block_bits], np.packbits(allbits).tobytes())


def _tables(lengths: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    codes = canonical_codes(lengths)
    ln = np.asarray(lengths, dtype=np.int64)
    used = np.flatnonzero(ln)
    if len(used) == 0:
        raise HuffmanError("the code table has no symbols")
    L = int(ln.max())
    sym = np.full(1 << L, -1, dtype=np.int32)
    tlen = np.zeros(1 << L, dtype=np.int64)
    starts = codes[used].astype(np.int64) << (L - ln[used])
    sizes = np.left_shift(1, L - ln[used])
    idx = np.repeat(starts, sizes) + (np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    sym[idx] = np.repeat(used, sizes)
    tlen[idx] = np.repeat(ln[used], sizes)
    return L, sym, tlen


def decode(data: bytes, count: int, lengths: np.ndarray, nbits: int, block_bits: list[int]) -> np.ndarray:
    """The ``count`` symbols of a stream (int32). Raises :class:`HuffmanError` when the stream does not match."""
    if count == 0:
        if nbits:
            raise HuffmanError("an empty stream with bits")
        return np.zeros(0, dtype=np.int32)
    nblocks = -(-count // BLOCK)
    if len(block_bits) != nblocks - 1:
        raise HuffmanError("block table does not match the symbol count")
    buf = np.frombuffer(data, dtype=np.uint8)
    if len(buf) * 8 < nbits:
        raise HuffmanError("stream shorter than its declared bits")
    L, tsym, tlen = _tables(lengths)
    pad = np.concatenate((buf, np.zeros(4, np.uint8))).astype(np.uint64)
    words = (pad[:-3] << 24) | (pad[1:-2] << 16) | (pad[2:-1] << 8) | pad[3:]
    last_word = len(words) - 1
    mask = np.uint64((1 << L) - 1)
    shift = np.uint64(32 - L)
    ends = np.cumsum(np.asarray(block_bits + [0], dtype=np.int64))
    p = np.concatenate(([0], ends[:-1])).astype(np.int64)
    expected_end = np.append(ends[:-1], nbits)
    last = count - (nblocks - 1) * BLOCK
    out = np.empty((nblocks, BLOCK), dtype=np.int32)
    final = np.empty(nblocks, dtype=np.int64)
    active = nblocks
    for step in range(BLOCK):
        if step == last:
            final[-1] = p[-1]
            active -= 1
            if active == 0:
                break
            p = p[:active]
        v = ((words[np.minimum(p >> 3, last_word)] << (p & 7).astype(np.uint64)) >> shift) & mask
        out[:active, step] = tsym[v]
        p = p + tlen[v]
    if active:
        final[:active] = p
    symbols = out.reshape(-1)[:count]
    if np.any(final != expected_end) or symbols.min() < 0:
        raise HuffmanError("the coded stream does not match its table and lengths")
    return symbols
