"""Sensitivity scan: the naive loop vs the app's scan, same sparsities, early stop off.

Naive: for each layer and sparsity prune only that layer, evaluate the full model on the full split,
restore. App: cached activations + suffix replay + batched sparsities (explorer.core.analyse.sensitivity).
Models: digits-cnn on digits, and a VGG-like conv net (the pruning lab's VGG, random weights) on
synthetic inputs labelled by the dense net's own predictions. Goal: identical accuracies, >= 3x faster.

    python benchmarks/bench_sensitivity.py [--json] [--samples 512] [--quick]

``--quick``: digits-cnn only, sparsities 0.5 and 0.9, one repeat (a few seconds; the test suite runs it).
"""
from __future__ import annotations

import argparse
import time

import _common  # noqa: F401
import torch

from explorer.core.analyse.allocate import allocate_by_drop
from explorer.core.analyse.sensitivity import DEFAULT_SPARSITIES, ScanSpec, scan
from explorer.core.model.data import labelled_by_model
from explorer.core.session import Session

DROPS = (0.5, 1.0, 2.0)      # allowed drops (points) at which the allocations must agree


def session_for(spec: str, samples: int) -> Session:
    s = Session.open(spec)
    if not s.dataset.has_labels:
        import explorer.core.model.data as data
        old = data.SYNTHETIC_SAMPLES
        data.SYNTHETIC_SAMPLES = samples * 4
        try:
            ds = data.load_dataset("synthetic", input_shape=s.require().input_shape)
        finally:
            data.SYNTHETIC_SAMPLES = old
        s.require().dataset = labelled_by_model(ds, s.module)
    return s


def bench(spec: str, samples: int, repeats: int, sparsities=DEFAULT_SPARSITIES) -> dict:
    s = session_for(spec, samples)
    sp = ScanSpec(list(sparsities))
    scan(s, ScanSpec([0.5], layers=[s.layer_names[0]]))      # build rankings / warm up once for both
    fast_t, naive_t = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        fast = scan(s, sp)
        fast_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        naive = scan(s, sp, naive=True)
        naive_t.append(time.perf_counter() - t)
    same = all(allocate_by_drop(s, fast, d).sparsities == allocate_by_drop(s, naive, d).sparsities for d in DROPS)
    diff = max(abs(a - b) for lf, ln in zip(fast.layers, naive.layers) for a, b in zip(lf["accuracy"], ln["accuracy"]))
    return {"model": spec, "dataset": s.dataset.spec, "samples": s.dataset.size("test"), "layers": len(fast.layers),
            "points": len(fast.layers) * len(sp.sparsities), "naive_s": min(naive_t), "fast_s": min(fast_t),
            "ratio": min(naive_t) / min(fast_t), "max_abs_diff": diff, "same_allocation": same,
            "method": fast.method}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", nargs="+", default=["digits-cnn", "lab-vgg"])
    ap.add_argument("--samples", type=int, default=256, help="test samples of the synthetic dataset")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code path (the test suite runs this)")
    args = ap.parse_args()
    sparsities = DEFAULT_SPARSITIES
    if args.quick:
        args.models, args.samples, args.repeats, sparsities = ["digits-cnn"], 64, 1, (0.5, 0.9)
    torch.manual_seed(0)
    rows = [bench(m, args.samples, args.repeats, sparsities) for m in args.models]
    payload = {r["model"]: {k: r[k] for k in ("naive_s", "fast_s", "ratio", "max_abs_diff", "same_allocation")}
               for r in rows}
    payload["rows"] = rows
    payload["machine"] = _common.machine()
    _common.emit(args, [[r["model"], r["samples"], r["points"], f"{r['naive_s']:.2f}", f"{r['fast_s']:.2f}",
                         f"{r['ratio']:.1f}x", f"{r['max_abs_diff']:.3g}", r["same_allocation"], r["method"]] for r in rows],
                 ["model", "samples", "points", "naive s", "app s", "ratio", "max |diff| (points)",
                  "same allocation (0.5/1/2 pt)", "method"],
                 payload)


if __name__ == "__main__":
    main()
