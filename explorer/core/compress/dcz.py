"""Writing ``model.dcz``, the Deep Compression archive: the encoder of the layout that ``formats.dcz`` describes
and reads (the state_dict of a stage -> the archive's bytes, with where each tensor's bytes went)."""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_write, bit_equal
from ..formats import huffman
from ..formats.dcz import (
    DENSE,
    DTYPES,
    LENGTH_BITS,
    MAGIC,
    SHARED,
    SPARSE,
    STAGE_KIND,
    VERSION,
    RecordInfo,
    read_archive,
)
from ..formats.relindex import encode_positions, pack_bits
from ..model.layers import state_weight_key


@dataclass
class Encoded:
    data: bytes
    records: list[RecordInfo] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.data)

    def record(self, name: str) -> RecordInfo:
        return next(r for r in self.records if r.name == name)

    def layer_record(self, layer: str) -> RecordInfo:
        """The record of a prunable layer's weight (``layer.weight``, or an attention projection's)."""
        return self.record(state_weight_key({r.name for r in self.records}, layer))


# ---------------------------------------------------------------- writing

class _Writer:
    def __init__(self):
        self.buf = bytearray()

    def u8(self, v: int) -> None:
        self.buf.append(int(v))

    def varint(self, v: int) -> None:
        v = int(v)
        while True:
            b = v & 0x7F
            v >>= 7
            self.buf.append(b | (0x80 if v else 0))
            if not v:
                return

    def text(self, s: str) -> None:
        raw = s.encode("utf-8")
        self.varint(len(raw))
        self.buf += raw

    def stream(self, st: huffman.HuffmanStream) -> None:
        self.buf += pack_bits(st.lengths, LENGTH_BITS)
        self.varint(st.nbits)
        for b in st.block_bits:
            self.varint(b)
        self.buf += st.data


def _raw(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def _header(w: _Writer, name: str, kind: int, t_dtype, shape) -> None:
    if t_dtype not in DTYPES[1:]:
        raise ValueError(f"tensor {name}: dtype {t_dtype} cannot be stored")
    w.text(name)
    w.u8(kind)
    w.u8(DTYPES.index(t_dtype))
    w.u8(len(shape))
    for d in shape:
        w.varint(d)


def _sparse_fp32(w: _Writer, rec: RecordInfo, t: torch.Tensor, b_idx: int) -> None:
    flat = t.detach().cpu().contiguous().reshape(-1)
    positions = np.flatnonzero(flat.view(torch.int32).numpy())     # nonzero bits: a -0.0 is kept as it is
    ri = encode_positions(positions, flat.numel(), b_idx)
    values = np.zeros(ri.entries, dtype="<f4")
    values[ri.kept_slot] = flat.numpy()[positions]
    w.u8(b_idx)
    w.varint(ri.entries)
    w.buf += pack_bits(ri.stored, b_idx)
    w.buf += values.tobytes()
    rec.entries, rec.kept, rec.weight_bits, rec.index_bits = ri.entries, len(positions), 32, b_idx
    rec.weight_stream_bits, rec.index_stream_bits = 32 * ri.entries, b_idx * ri.entries


def _shared(w: _Writer, rec: RecordInfo, q, kind: int) -> None:
    ri = encode_positions(q.positions, q.numel, q.index_bits)
    codebook = q.centroids.astype("<f4")
    codes = np.full(ri.entries, len(codebook), dtype=np.uint16)     # fillers: the 0.0 appended below
    codes[ri.kept_slot] = q.labels
    if ri.fillers:
        codebook = np.append(codebook, np.float32(0.0)).astype("<f4")
    if len(codebook) > (1 << q.bits):
        raise ValueError(f"layer {q.name}: {len(codebook)} shared values do not fit in {q.bits} bits")
    w.u8(q.index_bits)
    w.varint(ri.entries)
    w.u8(q.bits)
    w.varint(len(codebook))
    w.buf += codebook.tobytes()
    rec.entries, rec.kept, rec.weight_bits, rec.index_bits = ri.entries, q.kept, q.bits, q.index_bits
    rec.codebook = len(codebook)
    if kind == SHARED:
        w.buf += pack_bits(ri.stored, q.index_bits)
        w.buf += pack_bits(codes, q.bits)
        rec.weight_stream_bits, rec.index_stream_bits = q.bits * ri.entries, q.index_bits * ri.entries
    else:
        gaps = huffman.encode(ri.stored, 1 << q.index_bits)
        cs = huffman.encode(codes, len(codebook))
        w.stream(gaps)
        w.stream(cs)
        rec.weight_stream_bits, rec.index_stream_bits = cs.nbits, gaps.nbits


def encode_archive(state: dict[str, torch.Tensor], meta: dict, stage: str, quants: dict | None = None,
                   index_bits: dict[str, int] | None = None) -> Encoded:
    """The archive of ``state`` at a stage: ``pruned`` (``index_bits`` per layer: sparse fp32), ``quantized`` or
    ``huffman`` (``quants``: the layers' weight sharing, whose weights replace those in ``state``)."""
    kind = STAGE_KIND[stage]
    layers = dict(index_bits or {}) if kind == SPARSE else dict(quants or {})
    keys = {state_weight_key(state, n): n for n in layers}
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"no tensor {missing[0]} in the state")
    w = _Writer()
    w.buf += MAGIC
    w.u8(VERSION)
    w.text(json.dumps(meta, separators=(",", ":"), sort_keys=True))
    w.varint(len(state))
    records = []
    for key, t in state.items():
        start = len(w.buf)
        layer = keys.get(key)
        rec = RecordInfo(key, DENSE if layer is None else kind, 0, t.numel())
        if layer is None:
            _header(w, key, DENSE, t.dtype, tuple(t.shape))
            w.buf += _raw(t)
        elif kind == SPARSE:
            _header(w, key, SPARSE, torch.float32, tuple(t.shape))
            _sparse_fp32(w, rec, t.to(torch.float32) if t.dtype != torch.float32 else t, layers[layer])
        else:
            q = layers[layer]
            _header(w, key, kind, torch.float32, q.shape)
            _shared(w, rec, q, kind)
        rec.size = len(w.buf) - start
        records.append(rec)
    w.buf += zlib.crc32(w.buf).to_bytes(4, "little")
    return Encoded(bytes(w.buf), records)


def write_archive(path: str | Path, encoded: Encoded, expected: dict[str, torch.Tensor]) -> Path:
    """Write atomically; the written file is decoded again and must equal ``expected`` bit for bit."""
    from ..errors import ExplorerError

    def write(tmp):
        Path(tmp).write_bytes(encoded.data)

    def verify(tmp):
        back = read_archive(tmp).state
        if list(back) != list(expected):
            raise ExplorerError(f"The archive {Path(path).name} did not decode to the same tensors; not written.")
        for k, v in expected.items():
            if not bit_equal(back[k], v.detach().cpu().contiguous()):
                raise ExplorerError(f"The archive {Path(path).name} did not decode identically (tensor {k}); "
                                    "not written.")
    return atomic_write(Path(path), write, verify)
