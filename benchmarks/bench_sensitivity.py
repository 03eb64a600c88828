"""Sensitivity scan: the naive loop vs the app's exact scan vs the sequential scan, same sparsities.

Naive: for each layer and sparsity prune only that layer, evaluate the full model on the full split,
restore. Exact (``--exact``, issue 7): cached activations + suffix replay + batched sparsities
(explorer.core.analyse.sensitivity). Sequential (issue 24, ``ScanSpec(exact=False)``, analyse/sequential.py): the
replay on a growing seeded sample per point, until the allocation at 0.5/1/2 points of allowed drop is decided.
Models: digits-cnn and digits-vgg on digits (validation split, 180 samples), the pruning lab's VGG (random
weights) and torchvision's resnet18 (random weights, 64x64 inputs to keep the naive loop affordable on a CPU) on
synthetic inputs labelled by the dense net's own predictions. Each row: ``ratio`` (naive / sequential),
``exact_ratio`` (naive / exact), ``same_allocation`` (the three scans give the same per-layer sparsities at
0.5, 1 and 2 points), ``sample_share`` (samples the sequential scan evaluated / the exact scan's), ``precision`` (the sequential scan's
screening precision, screen.py) and ``recomputed_share`` (samples it recomputed in float32 / samples screened),
``whole_split_same`` (the points it evaluated on the whole split have the exact scan's accuracies).
Goal (issue 24): ratio >= 5x with the same allocation.

    python benchmarks/bench_sensitivity.py [--json] [--models digits-cnn ...] [--samples 256] [--monotone] [--quick]
        [--threads N] [--precision auto|bfloat16|float32]

``--quick``: digits-cnn only, sparsities 0.5 and 0.9, one repeat (a few seconds; the test suite runs it).
"""
from __future__ import annotations

import argparse
import time

import _common  # noqa: F401
import torch

from explorer.core.analyse.allocate import allocate_by_drop
from explorer.core.analyse.sensitivity import DEFAULT_SPARSITIES, PRECISIONS, ScanSpec, scan
from explorer.core.model.data import labelled_by_model
from explorer.core.session import Session

DROPS = (0.5, 1.0, 2.0)      # allowed drops (points) at which the allocations must agree


MODELS = {"resnet18": ("torchvision:resnet18", {"input_shape": (3, 64, 64)}, 64)}   # name: (spec, open kw, samples)


def session_for(spec: str, samples: int) -> Session:
    spec, kw, samples = MODELS.get(spec, (spec, {}, samples))
    s = Session.open(spec, **kw)
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


def bench(spec: str, samples: int, repeats: int, sparsities=DEFAULT_SPARSITIES, monotone: bool = False,
          precision: str = "auto") -> dict:
    s = session_for(spec, samples)
    exact_spec = ScanSpec(list(sparsities))
    seq_spec = ScanSpec(list(sparsities), exact=False, drops=DROPS, monotone=monotone, precision=precision)
    scan(s, ScanSpec([0.5], layers=[s.layer_names[0]]))      # build rankings / warm up once for all
    seq_t, exact_t, naive_t = [], [], []
    for _ in range(repeats):              # interleaved, so drift in the machine's load hits all three alike
        t = time.perf_counter()
        seq = scan(s, seq_spec)
        seq_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        exact = scan(s, exact_spec)
        exact_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        naive = scan(s, exact_spec, naive=True)
        naive_t.append(time.perf_counter() - t)

    def allocations(r):
        return [allocate_by_drop(s, r, d).sparsities for d in DROPS]
    same = allocations(seq) == allocations(exact) == allocations(naive)
    diff = max(abs(a - b) for lf, ln in zip(exact.layers, naive.layers) for a, b in zip(lf["accuracy"], ln["accuracy"]))
    n = s.dataset.size(exact_spec.split)
    used = sum(u or 0 for l in seq.layers for u in l["samples"])
    points = len(exact.layers) * len(exact_spec.sparsities)
    # points the sequential scan evaluated on the whole split: their accuracies must be the exact scan's
    whole = [(a, b) for lf, le in zip(seq.layers, exact.layers)
             for a, b, u in zip(lf["accuracy"], le["accuracy"], lf["samples"]) if u == n]
    screen = seq.sequential.get("screen") or {}
    return {"model": spec, "dataset": s.dataset.spec, "samples": n, "layers": len(exact.layers),
            "points": points, "naive_s": min(naive_t), "exact_s": min(exact_t), "fast_s": min(seq_t),
            "ratio": min(naive_t) / min(seq_t), "exact_ratio": min(naive_t) / min(exact_t),
            "max_abs_diff": diff, "same_allocation": same, "sample_share": used / (points * n),
            "whole_split_points": len(whole), "whole_split_same": all(a == b for a, b in whole),
            "precision": seq.sequential.get("precision"), "precision_reason": seq.sequential.get("precision_reason"),
            "bound": screen.get("bound"), "recomputed_share": screen.get("recomputed_share", 0.0),
            "monotone": monotone, "method": exact.method, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", nargs="+", default=["digits-cnn", "digits-vgg", "lab-vgg", "resnet18"])
    ap.add_argument("--samples", type=int, default=256, help="test samples of the synthetic dataset (resnet18: 64)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--monotone", action="store_true", help="the sequential scan also skips points above a clear fail")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code path (the test suite runs this)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="the sequential scan's screening precision (auto: bfloat16 where the hardware has it)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sparsities = DEFAULT_SPARSITIES
    if args.quick:
        args.models, args.samples, args.repeats, sparsities = ["digits-cnn"], 64, 1, (0.5, 0.9)
    torch.manual_seed(0)
    rows = [bench(m, args.samples, args.repeats, sparsities, args.monotone, args.precision) for m in args.models]
    payload = {r["model"]: {k: r[k] for k in ("naive_s", "exact_s", "fast_s", "ratio", "exact_ratio", "max_abs_diff",
                                              "same_allocation", "precision", "recomputed_share")} for r in rows}
    payload["rows"] = rows
    payload["machine"] = _common.machine()
    _common.emit(args, [[r["model"], r["samples"], r["points"], f"{r['naive_s']:.2f}", f"{r['exact_s']:.2f}",
                         f"{r['exact_ratio']:.1f}x", f"{r['fast_s']:.2f}", f"{r['ratio']:.1f}x",
                         f"{r['sample_share']:.0%}", r["precision"], f"{r['recomputed_share']:.1%}",
                         r["same_allocation"], r["whole_split_same"], f"{r['max_abs_diff']:.3g}"] for r in rows],
                 ["model", "samples", "points", "naive s", "exact replay s", "ratio", "sequential s", "ratio",
                  "samples used", "precision", "recomputed", "same allocation (0.5/1/2 pt)",
                  "whole-split points = exact", "exact max |diff|"],
                 payload)


if __name__ == "__main__":
    main()
