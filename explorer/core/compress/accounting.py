"""Byte accounting of the Deep Compression stages, per stage and per layer (the paper's Table 2 columns).

Stage sizes are the byte lengths of real archives (``dcz``): ``pruned`` is the relative-index layout with
float32 values, ``quantized`` adds weight sharing with fixed-width codes, ``huffman`` Huffman-codes the codes
and the gaps. ``dense`` is every tensor of the state_dict at its own dtype (fp32: 4 bytes a weight), the size
the dashboard calls dense. ``ratio`` = dense size / stage size.

Per layer: ``params`` (weights), ``kept`` (fraction nonzero), ``weight_bits`` / ``index_bits`` (the fixed widths,
P+Q), ``weight_bits_huffman`` / ``index_bits_huffman`` (average bits per stored entry after Huffman coding,
code tables not included), ``size_bytes_quantized`` / ``size_bytes_huffman`` (the layer's whole record in the
archive: name, header, codebook, code tables, streams). The compress rate of a layer is its size over
4 bytes per weight.
"""
from __future__ import annotations

import torch

from .dcz import Encoded

STAGES = ("dense", "pruned", "quantized", "huffman")
LAYER_KEYS = ("name", "params", "kept", "weight_bits", "index_bits", "weight_bits_huffman", "index_bits_huffman",
              "size_bytes_quantized", "size_bytes_huffman")


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    """Dense size: every tensor at its dtype."""
    return sum(t.numel() * t.element_size() for t in state.values())


def stage_rows(dense_size: int, sizes: dict[str, int], accuracy: dict[str, float | None]) -> list[dict]:
    sizes = {"dense": dense_size, **sizes}
    return [{"name": s, "size_bytes": int(sizes[s]), "ratio": dense_size / sizes[s] if sizes[s] else float("inf"),
             "accuracy": accuracy.get(s)} for s in STAGES]


def layer_rows(names: list[str], quantized: Encoded, huffman: Encoded) -> list[dict]:
    rows = []
    for n in names:
        q, h = quantized.layer_record(n), huffman.layer_record(n)
        params = q.numel
        rows.append({"name": n, "params": params, "kept": q.kept / params if params else 0.0,
                     "weight_bits": q.weight_bits, "index_bits": q.index_bits,
                     "weight_bits_huffman": h.weight_stream_bits / h.entries if h.entries else 0.0,
                     "index_bits_huffman": h.index_stream_bits / h.entries if h.entries else 0.0,
                     "size_bytes_quantized": q.size, "size_bytes_huffman": h.size})
    return rows


def rate(row: dict, which: str) -> float:
    """A layer's compress rate: its record's bytes over 4 bytes per weight (``which``: quantized | huffman)."""
    return row[f"size_bytes_{which}"] / (4 * row["params"]) if row["params"] else 0.0


def totals_row(rows: list[dict], stages: list[dict]) -> dict:
    """The Table 2 total: weights, kept, bits averaged over the kept weights, and the whole model's rate."""
    params = sum(r["params"] for r in rows)
    kept = sum(r["kept"] * r["params"] for r in rows)
    by = {s["name"]: s for s in stages}

    def avg(key: str) -> float:
        return sum(r[key] * r["params"] * r["kept"] for r in rows) / kept if kept else 0.0
    return {"name": "total", "params": params, "kept": kept / params if params else 0.0,
            "weight_bits": avg("weight_bits"), "index_bits": avg("index_bits"),
            "weight_bits_huffman": avg("weight_bits_huffman"), "index_bits_huffman": avg("index_bits_huffman"),
            "rate_quantized": by["quantized"]["size_bytes"] / by["dense"]["size_bytes"],
            "rate_huffman": by["huffman"]["size_bytes"] / by["dense"]["size_bytes"]}


def table2(rows: list[dict], stages: list[dict]) -> list[list[str]]:
    """Rows of the paper's Table 2 (header first) with a total line."""
    out = [["layer", "weights", "kept", "weight bits P+Q / +H", "index bits P+Q / +H", "rate P+Q / +H"]]
    for r in rows:
        out.append([r["name"], f"{r['params']:,}", f"{r['kept']:.1%}",
                    f"{r['weight_bits']} / {r['weight_bits_huffman']:.1f}",
                    f"{r['index_bits']} / {r['index_bits_huffman']:.1f}",
                    f"{rate(r, 'quantized'):.2%} / {rate(r, 'huffman'):.2%}"])
    t = totals_row(rows, stages)
    by = {s["name"]: s for s in stages}
    out.append(["total", f"{t['params']:,}", f"{t['kept']:.1%} ({by['pruned']['ratio']:.1f}×)",
                f"{t['weight_bits']:.1f} / {t['weight_bits_huffman']:.1f}",
                f"{t['index_bits']:.1f} / {t['index_bits_huffman']:.1f}",
                f"{t['rate_quantized']:.2%} ({by['quantized']['ratio']:.1f}×) / "
                f"{t['rate_huffman']:.2%} ({by['huffman']['ratio']:.1f}×)"])
    return out


def format_table(rows: list[list[str]]) -> str:
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows)
