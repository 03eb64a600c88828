"""MAC ratio vs measured latency ratio: unstructured sparsity vs compacted channel pruning.

For each model (random weights, synthetic input) at 50% `channel` (compacted) and 90% `element`
(masked; dense hardware multiplies the zeros): MACs and measured latency relative to dense, in one
run, batch 32, interleaved timing. Goal: compacted speedup >= 0.8 x MAC ratio.

    python benchmarks/bench_speedup.py [--json] [--models digits-cnn torchvision:resnet18 torchvision:vgg16] [--quick]

``--quick``: digits-cnn, batch 4, 2 timed runs (the test suite runs it).
"""
from __future__ import annotations

import argparse

import _common  # noqa: F401
import torch

from explorer.core.analyse.latency import measure_latencies
from explorer.core.model.layers import profile_model
from explorer.core.prune.compact import channel_removals, compact_model
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


def breakdown(spec: str, batch: int, reps: int = 20) -> dict:
    """Where the time goes (torch.profiler, self CPU ms per forward by operator) in the dense and the compacted
    model: which operators shrink with the MACs and which only with the channel count."""
    from torch.profiler import ProfilerActivity, profile

    s = Session.open(spec)
    x = torch.randn(batch, *s.require().input_shape, generator=torch.Generator().manual_seed(0))
    dense = copy_with(s, s.original_state())
    s.set_uniform(s.layer_names, 0.5, "channel")
    compact = compact_model(dense, s.masked_state(), channel_removals(s, s.plan), x[:1]).eval()
    out = {}
    for name, m in (("dense", dense), ("compact", compact)):
        with torch.inference_mode():
            for _ in range(3):
                m(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(reps):
                    m(x)
        out[name] = {e.key: e.self_cpu_time_total / 1000 / reps for e in prof.key_averages()
                     if e.self_cpu_time_total / reps > 20}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", nargs="+", default=["digits-cnn", "torchvision:resnet18", "torchvision:vgg16"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=224, help="input resolution of the torchvision models")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also print the per-operator time of the dense and compacted model (torch.profiler)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code path (the test suite runs this)")
    args = ap.parse_args()
    if args.quick:
        args.models, args.batch, args.runs = ["digits-cnn"], 4, 2
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
    if args.breakdown:
        for m in args.models:
            b = breakdown(m, args.batch)
            ops = sorted(b["dense"], key=lambda k: -b["dense"][k])[:5]
            print(f"\n{m}, batch {args.batch}: self CPU ms per forward (dense -> compact, ratio)")
            for op in ops:
                c = b["compact"].get(op)
                print(f"  {op:34s} {b['dense'][op]:7.2f} -> " + (f"{c:6.2f}  {b['dense'][op] / c:.2f}x" if c else "-"))


if __name__ == "__main__":
    main()
