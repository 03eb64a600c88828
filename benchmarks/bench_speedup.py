"""MAC ratio vs measured latency ratio: unstructured sparsity vs compacted channel pruning.

For each model (random weights, synthetic input) at 50% `channel` (compacted) and 90% `element`
(masked; dense hardware multiplies the zeros): MACs and measured latency relative to dense, in one
run, batch 32, interleaved timing. Goal: compacted speedup >= 0.8 x MAC ratio.

    python benchmarks/bench_speedup.py [--json] [--models digits-cnn torchvision:resnet18 torchvision:vgg16]
"""
from __future__ import annotations

import argparse

import _common  # noqa: F401
import torch

from explorer.core.analyse.latency import measure_latencies
from explorer.core.deploy.compact import channel_removals, compact_model
from explorer.core.model.layers import profile_model
from explorer.core.session import Session


def copy_with(session, state):
    import copy
    m = copy.deepcopy(session.module)
    m.load_state_dict(state)
    return m.eval()


def bench(spec: str, batch: int, runs: int, size: int | None) -> list[dict]:
    kw = {}
    if size and spec.startswith("torchvision:"):
        kw["input_shape"] = (3, size, size)
    s = Session.open(spec, "synthetic" if spec.startswith("torchvision:") else None, **kw)
    shape = s.require().input_shape
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    dense = copy_with(s, s.original_state())
    rows = []
    s.set_uniform(s.layer_names, 0.5, "channel")
    st = s.masked_state()
    compact = compact_model(dense, st, channel_removals(s, s.plan), x[:1])
    c_macs = profile_model(compact, shape).total_macs
    s.set_uniform(s.layer_names, 0.9, "element")
    el_state = s.masked_state()
    el_macs = s.totals().nonzero_macs
    masked = copy_with(s, el_state)
    lat = measure_latencies({"dense": dense, "channel50_compact": compact, "element90_masked": masked}, x,
                            runs=runs, warmup=2)
    d = lat["dense"].median_ms
    rows.append({"model": spec, "granularity": "channel", "sparsity": 0.5, "mac_ratio": s.profile.total_macs / c_macs,
                 "latency_ratio": d / lat["channel50_compact"].median_ms, "compacted": True,
                 "dense_ms": d, "ms": lat["channel50_compact"].median_ms})
    rows.append({"model": spec, "granularity": "element", "sparsity": 0.9, "mac_ratio": s.profile.total_macs / el_macs,
                 "latency_ratio": d / lat["element90_masked"].median_ms, "compacted": False,
                 "dense_ms": d, "ms": lat["element90_masked"].median_ms})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", nargs="+", default=["digits-cnn", "torchvision:resnet18", "torchvision:vgg16"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=224, help="input resolution of the torchvision models")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for m in args.models:
        rows += bench(m, args.batch, args.runs, args.size)
    for r in rows:
        r["goal_met"] = (r["latency_ratio"] >= 0.8 * r["mac_ratio"]) if r["compacted"] else None
    payload = {"rows": rows, "batch": args.batch, "size": args.size, "machine": _common.machine()}
    _common.emit(args, [[r["model"], r["granularity"], f"{r['sparsity']:.0%}", f"{r['mac_ratio']:.2f}x",
                         f"{r['latency_ratio']:.2f}x", f"{r['dense_ms']:.1f}", f"{r['ms']:.1f}",
                         "" if r["goal_met"] is None else ("yes" if r["goal_met"] else "no")] for r in rows],
                 ["model", "granularity", "sparsity", "MAC ratio", "latency ratio", "dense ms", "ms",
                  ">=0.8x MAC"], payload)


if __name__ == "__main__":
    main()
