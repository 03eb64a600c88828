"""``model.dcz``: the Deep Compression archive (pruned, weight-shared, Huffman-coded), to the byte: its layout
and how it is read back (``compress.dcz`` encodes and writes it).

Layout (version 1; integers little-endian; ``varint`` = unsigned LEB128, at most 10 bytes)::

    magic  4 bytes  89 44 43 5A ("\\x89DCZ")
    u8     version (1)
    varint length + UTF-8 JSON object: what rebuilds the model ({"arch": spec, "model": spec})
    varint number of tensors, then one record per tensor (state_dict order)
    u32    CRC-32 of every byte before it

    record: varint length + UTF-8 name, u8 kind, u8 dtype, u8 ndim, varint x ndim dims, then by kind:
      0 dense     the tensor's bytes (numel x itemsize)
      1 sparse    u8 b_idx, varint n (entries = kept + fillers), n gaps in b_idx bits, n float32 values
      2 shared    u8 b_idx, varint n, u8 b, varint k (<= 2^b), k float32 shared values (the codebook),
                  n gaps in b_idx bits, n codes in b bits
      3 huffman   as 2 up to the codebook, then the gap stream (alphabet 2^b_idx), then the code stream
                  (alphabet k); a stream is: the code length of every symbol in 5 bits (canonical
                  Huffman), varint bit count, varint bit length of every block of 4096 symbols but the
                  last, the bits (MSB first, padded to a byte)

Gaps are relative indices (``relindex``); a filler entry's code points at a 0.0 in the codebook. Bit
fields are packed MSB first and each stream is padded to whole bytes. The stages share this layout: the
``pruned`` stage is kind 1 for every prunable weight, ``quantized`` kind 2, ``huffman`` kind 3; everything
else is kind 0 (dense). Every declared size is checked against the bytes that are actually there before
anything is allocated, so a damaged or hostile file is refused with a message instead of exhausting memory.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelLoadError
from . import huffman
from .relindex import MAX_INDEX_BITS, check_length, decode_positions, packed_size, unpack_bits

MAGIC = b"\x89DCZ"
VERSION = 1
DENSE, SPARSE, SHARED, HUFFMAN = 0, 1, 2, 3
STAGE_KIND = {"pruned": SPARSE, "quantized": SHARED, "huffman": HUFFMAN}
DTYPES = [None, torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
          torch.int16, torch.int8, torch.uint8, torch.bool]
MAX_NUMEL = 2**31 - 1
MAX_NDIM = 8
MAX_NAME = 1024
MAX_META = 1 << 20
LENGTH_BITS = 5
MAX_WEIGHT_BITS = 8


class ArchiveError(ModelLoadError):
    title = "Not a valid compressed archive"


@dataclass
class RecordInfo:
    """Where one tensor's bytes went (what the per-layer accounting reads)."""

    name: str
    kind: int
    size: int                      # bytes of the whole record, name and header included
    numel: int = 0
    entries: int = 0               # stored entries (kept weights + fillers)
    kept: int = 0
    weight_bits: int = 0           # b (shared) or 32 (sparse fp32)
    index_bits: int = 0
    weight_stream_bits: int = 0    # bits of the values/codes stream (Huffman: after coding)
    index_stream_bits: int = 0
    codebook: int = 0              # shared values stored


# ---------------------------------------------------------------- reading

class _Reader:
    def __init__(self, data: memoryview, fail):
        self.data, self.pos, self.fail = data, 0, fail
        self.where = "the header"

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or n > self.left:
            self.fail(f"truncated: {self.where} needs {n:,} bytes at offset {self.pos:,} but only {self.left:,} remain")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self, limit: int, what: str) -> int:
        v = shift = 0
        for _ in range(10):
            b = self.u8()
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if v > limit:
                    self.fail(f"{self.where} declares {what} {v:,}, more than the {limit:,} possible there")
                return v
        self.fail(f"a malformed number in {self.where} at offset {self.pos:,}")

    def text(self, limit: int, what: str) -> str:
        n = self.varint(min(limit, self.left), f"a {what} of length")
        try:
            return bytes(self.take(n)).decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"the {what} in {self.where} is not UTF-8 text")

    def stream(self, count: int, alphabet: int) -> np.ndarray:
        lengths = unpack_bits(np.frombuffer(self.take(packed_size(alphabet, LENGTH_BITS)), np.uint8), alphabet,
                              LENGTH_BITS)
        nbits = self.varint(8 * self.left, "a stream of bits")
        if count > nbits or (count == 0) != (nbits == 0):
            self.fail(f"{self.where} declares {count:,} symbols in {nbits:,} bits")
        blocks = [self.varint(nbits, "a block of bits") for _ in range(max(0, -(-count // huffman.BLOCK) - 1))]
        if sum(blocks) > nbits:
            self.fail(f"the blocks of {self.where} are longer than its stream")
        data = bytes(self.take((nbits + 7) // 8))
        self.nbits = nbits
        try:
            return huffman.decode(data, count, lengths, nbits, blocks)
        except huffman.HuffmanError as e:
            self.fail(f"the Huffman stream of {self.where} is inconsistent ({e})")


@dataclass
class Decoded:
    state: dict[str, torch.Tensor]
    meta: dict
    records: list[RecordInfo]


def _fail(name: str):
    def fail(why: str):
        raise ArchiveError(f"'{name}' is not a valid compressed model archive: {why}.",
                           "It may be truncated or damaged; write it again (pruning-explorer compress, or the "
                           "Compress tab's Export archive).")
    return fail


def decode_archive(data: bytes, name: str = "archive") -> Decoded:
    """The state_dict, meta and records of an archive; anything inconsistent raises :class:`ArchiveError`."""
    fail = _fail(name)
    if len(data) < len(MAGIC) + 1 or bytes(data[:4]) != MAGIC:
        fail("it does not start with the .dcz magic bytes" if len(data) >= 4 else f"it is only {len(data)} bytes long")
    if data[4] != VERSION:
        fail(f"it is format version {data[4]}, this app reads version {VERSION}")
    if len(data) < 9 or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
        fail("its checksum does not match (the file is truncated or was changed)")
    r = _Reader(memoryview(data)[5:len(data) - 4], fail)
    try:
        meta = json.loads(r.text(MAX_META, "meta"))
    except json.JSONDecodeError:
        fail("its header is not valid JSON")
    if not isinstance(meta, dict):
        fail("its header is not a JSON object")
    count = r.varint(r.left // 3, "a tensor count")
    state: dict[str, torch.Tensor] = {}
    records = []
    for i in range(count):
        start = r.pos
        r.where = f"tensor #{i + 1}"
        key = r.text(MAX_NAME, "name")
        r.where = f"tensor {key}"
        if key in state:
            fail(f"the tensor {key} appears twice")
        kind, dtype_code, ndim = r.u8(), r.u8(), r.u8()
        if kind > HUFFMAN:
            fail(f"{r.where} has an unknown kind {kind}")
        if not 1 <= dtype_code < len(DTYPES):
            fail(f"{r.where} has an unknown dtype code {dtype_code}")
        if ndim > MAX_NDIM:
            fail(f"{r.where} declares {ndim} dimensions")
        shape = tuple(r.varint(MAX_NUMEL, "a dimension") for _ in range(ndim))
        numel = int(np.prod(shape, dtype=object)) if shape else 1
        if numel > MAX_NUMEL:
            fail(f"{r.where} declares {numel:,} elements")
        dtype = DTYPES[dtype_code]
        rec = RecordInfo(key, kind, 0, numel)
        if kind == DENSE:
            item = torch.empty(0, dtype=dtype).element_size()
            raw = bytearray(r.take(numel * item))
            t = torch.frombuffer(raw, dtype=torch.int16 if dtype == torch.bfloat16 else dtype) if numel else \
                torch.empty(0, dtype=dtype)
            t = (t.view(torch.bfloat16) if dtype == torch.bfloat16 else t).reshape(shape)
        else:
            if dtype != torch.float32:
                fail(f"{r.where} is sparse but not float32")
            t = _read_sparse(r, rec, kind, numel, shape, fail)
        rec.size = r.pos - start
        state[key] = t
        records.append(rec)
    if r.left:
        fail(f"{r.left:,} unexpected bytes follow the last tensor")
    return Decoded(state, meta, records)


def _read_sparse(r: _Reader, rec: RecordInfo, kind: int, numel: int, shape, fail) -> torch.Tensor:
    b_idx = r.u8()
    if not 1 <= b_idx <= MAX_INDEX_BITS:
        fail(f"{r.where} declares {b_idx} index bits")
    n = r.varint(MAX_NUMEL, "an entry count")
    if kind == SPARSE:
        if packed_size(n, b_idx) + 4 * n > r.left:
            fail(f"truncated: {r.where} declares {n:,} entries that need more bytes than remain")
        stored = unpack_bits(np.frombuffer(r.take(packed_size(n, b_idx)), np.uint8), n, b_idx)
        values = np.frombuffer(r.take(4 * n), dtype="<f4").astype(np.float32)
        codebook, codes, b = None, None, 32
    else:
        b = r.u8()
        if not 1 <= b <= MAX_WEIGHT_BITS:
            fail(f"{r.where} declares {b} weight bits")
        k = r.varint(1 << b, "a codebook of")
        if n and not k:
            fail(f"{r.where} has entries but no shared values")
        codebook = np.frombuffer(r.take(4 * k), dtype="<f4").astype(np.float32)
        if kind == SHARED:
            if packed_size(n, b_idx) + packed_size(n, b) > r.left:
                fail(f"truncated: {r.where} declares {n:,} entries that need more bytes than remain")
            stored = unpack_bits(np.frombuffer(r.take(packed_size(n, b_idx)), np.uint8), n, b_idx)
            codes = unpack_bits(np.frombuffer(r.take(packed_size(n, b)), np.uint8), n, b)
            wbits, ibits = n * b, n * b_idx
        else:
            if n > 8 * r.left:
                fail(f"truncated: {r.where} declares {n:,} entries that need more bytes than remain")
            stored = r.stream(n, 1 << b_idx).astype(np.uint16)
            ibits = r.nbits
            codes = r.stream(n, k)
            wbits = r.nbits
        if n and int(codes.max()) >= k:
            fail(f"{r.where} uses a shared value beyond its codebook of {k}")
        values = codebook[codes] if n else np.zeros(0, np.float32)
        rec.codebook = k
    positions = decode_positions(stored, b_idx)
    why = check_length(positions, numel, b_idx)
    if why:
        fail(f"{r.where} is inconsistent: {why}")
    flat = np.zeros(numel, dtype=np.float32)
    flat[positions] = values
    rec.entries, rec.weight_bits, rec.index_bits = n, b, b_idx
    rec.kept = int(np.count_nonzero(values.view(np.int32))) if n else 0
    if kind == SPARSE:
        rec.weight_stream_bits, rec.index_stream_bits = 32 * n, b_idx * n
    else:
        rec.weight_stream_bits, rec.index_stream_bits = wbits, ibits
    return torch.from_numpy(flat).reshape(shape)


# ---------------------------------------------------------------- files

def read_archive(path: str | Path) -> Decoded:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ArchiveError(f"Could not read '{path}' ({e.strerror or e}).") from None
    return decode_archive(data, path.name)


def read_dcz_meta(path: str | Path) -> dict:
    """Only the JSON header (what rebuilds the model); the whole file is checked when it is loaded."""
    path = Path(path)
    fail = _fail(path.name)
    with open(path, "rb") as f:
        head = f.read(5 + 10 + MAX_META)
    if len(head) < 5 or head[:4] != MAGIC or head[4] != VERSION:
        fail("it does not start with the .dcz magic bytes and version")
    r = _Reader(memoryview(head)[5:], fail)
    try:
        meta = json.loads(r.text(MAX_META, "meta"))
    except json.JSONDecodeError:
        fail("its header is not valid JSON")
    return meta if isinstance(meta, dict) else {}


def load_dcz(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict stored in a .dcz archive (bit-identical to the quantized model it was written from)."""
    return read_archive(path).state
