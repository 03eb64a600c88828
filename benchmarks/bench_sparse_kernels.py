"""Where sparsity becomes speed (issue 22): sparse kernels against the dense layer, and the sparse runtime end to end.

    python benchmarks/bench_sparse_kernels.py [--quick] [--threads N] [--runs R] [--json]

1. Layers (random weights, magnitude element masks, one random input; the speed map's own code,
   ``explorer.core.analyse.speed.layer_speed``: dense, CSR and fewer-channels runs interleaved, medians):
   Linear 4096×4096 and 4096×25088 (VGG-16 ``classifier.0``) at batch 1 and 32, and VGG-16's ``features.28``
   (Conv2d 512→512, 3×3, on its 14×14 input) at batch 1 and 8. Each row: the CSR speedup at 50/80/90/95/98 %
   and the break-even sparsity (from which on CSR is faster at every larger measured sparsity).
2. End to end, the sparse runtime (``explorer.core.deploy.sparse_runtime``: a layer becomes CSR only when it
   measured faster at its sparsity and batch) against the dense and the masked model, interleaved, same input:
   digits-mlp at 95 % (trained weights), VGG-16's classifier with Deep Compression's kept fractions (fc6 4 %,
   fc7 4 %, fc8 23 %) at batch 1 and 32, and the whole VGG-16 (torchvision, random weights, 224×224, Deep
   Compression's per-layer kept fractions, conv 22-58 %) at batch 1 (a batch-32 forward of VGG-16 takes about a
   minute on the 2-core VM, so it is left out). ``--quick``: smaller layers, the classifier's layout at 1/8 width and
batch 1 only, no VGG-16 convolutions.

Goals: the sparse runtime is faster than dense for VGG-16's classifier at 96 % at batch 1; the runtime never
replaces a layer by a kernel it measured slower (checked on every runtime built here).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import emit, machine  # noqa: E402
from torch import nn  # noqa: E402

from explorer.core.analyse import sparse_kernels as sk  # noqa: E402
from explorer.core.analyse.latency import measure_latencies, torch_threads  # noqa: E402
from explorer.core.analyse.speed import layer_speed  # noqa: E402
from explorer.core.deploy.sparse_runtime import build_sparse_runtime  # noqa: E402

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
# Deep Compression (Han, Mao, Dally 2016), VGG-16 weights kept by pruning, per layer (conv1_1 ... fc8)
DC_VGG16_KEPT = {"features.0": 0.58, "features.2": 0.22, "features.5": 0.34, "features.7": 0.36,
                 "features.10": 0.53, "features.12": 0.24, "features.14": 0.42, "features.17": 0.32,
                 "features.19": 0.27, "features.21": 0.34, "features.24": 0.35, "features.26": 0.29,
                 "features.28": 0.36, "classifier.0": 0.04, "classifier.3": 0.04, "classifier.6": 0.23}


def layer_rows(args) -> list[dict]:
    torch.manual_seed(0)
    if args.quick:
        cases = [("1024x1024", lambda: nn.Linear(1024, 1024), (1024,), (1, 32)),
                 ("conv 128->128 3x3 @14x14", lambda: nn.Conv2d(128, 128, 3, padding=1), (128, 14, 14), (1,))]
    else:
        cases = [("4096x4096", lambda: nn.Linear(4096, 4096), (4096,), (1, 32)),
                 ("4096x25088 (VGG-16 classifier.0)", lambda: nn.Linear(25088, 4096), (25088,), (1, 32)),
                 ("VGG-16 features.28 512x512x3x3 @14x14", lambda: nn.Conv2d(512, 512, 3, padding=1), (512, 14, 14),
                  (1, 8))]
    rows = []
    for label, make, shape, batches in cases:
        layer = make().eval()
        for b in batches:
            t0 = time.perf_counter()
            r = layer_speed(label, layer, shape, b, SPARSITIES, kernels=("csr", "channel"), runs=args.runs,
                            warmup=2, threads=args.threads)
            csr, ch = r.kernel("csr"), r.kernel("channel")
            rows.append({"layer": label, "batch": b, "sparsities": list(SPARSITIES), "csr_speedup": csr.speedup,
                         "break_even": csr.break_even, "channel_speedup": ch.speedup if ch else None,
                         "dense_ms": r.dense_ms, "seconds": round(time.perf_counter() - t0, 1)})
            print(f"  {label} batch {b}: csr {csr.speedup} break-even {csr.break_even}", file=sys.stderr)
        del layer
    return rows


def _mask_model(model: nn.Module, kept: dict[str, float]) -> None:
    with torch.no_grad():
        for name, k in kept.items():
            w = model.get_submodule(name).weight
            w.copy_(sk.magnitude_masked(w, 1.0 - k))


def _end_to_end(label: str, dense: nn.Module, masked: nn.Module, names: list[str], x: torch.Tensor, runs: int,
                threads: int | None) -> dict:
    t0 = time.perf_counter()
    with torch_threads(threads):
        rt = build_sparse_runtime(masked, x, names, runs=runs, warmup=2, threads=threads)
    slower = [n for n in rt.layers if rt.speedups[n] <= 1.0]
    lat = measure_latencies({"dense": dense, "masked": masked, "sparse": rt.module}, x, runs=runs, warmup=2,
                            threads=threads)
    d = lat["dense"].median_ms
    row = {"model": label, "batch": int(x.shape[0]), "dense_ms": round(d, 4),
           "masked_ms": round(lat["masked"].median_ms, 4), "sparse_ms": round(lat["sparse"].median_ms, 4),
           "sparse_speedup": round(d / lat["sparse"].median_ms, 3), "sparse_layers": rt.layers,
           "layer_speedups": rt.speedups, "kept_dense": len(rt.kept_dense),
           "replaced_a_slower_layer": bool(slower), "relative_difference": rt.relative_difference,
           "seconds": round(time.perf_counter() - t0, 1)}
    print(f"  {label} batch {x.shape[0]}: sparse {row['sparse_speedup']}x, CSR layers {rt.layers}", file=sys.stderr)
    return row


def end_to_end_rows(args) -> list[dict]:
    import copy

    import torchvision

    from explorer.core.session import Session

    rows = []
    s = Session.open("digits-mlp")
    dense = s.model_copy(s.original_state())
    s.set_uniform(s.layer_names, 0.95, "element", "l1")
    masked = s.model_copy(s.masked_state(s.plan))
    for b in (1, 32):
        rows.append(_end_to_end("digits-mlp 95 %", dense, masked, s.layer_names, s.dataset.example_input(b),
                                args.runs, args.threads))
    torch.manual_seed(0)
    fc = {k: v for k, v in DC_VGG16_KEPT.items() if k.startswith("classifier")}
    if args.quick:      # the classifier's layout at 1/8 width: masking 102.8 M weights alone takes 30 s
        d_in, d_hid, label = 25088 // 8, 4096 // 8, "VGG-16 classifier at 1/8 width (DC: fc 4/4/23 % kept)"
        head = nn.Sequential(nn.Linear(d_in, d_hid), nn.ReLU(True), nn.Dropout(), nn.Linear(d_hid, d_hid),
                             nn.ReLU(True), nn.Dropout(), nn.Linear(d_hid, 1000)).eval()
    else:
        vgg = torchvision.models.vgg16().eval()
        d_in, label = 25088, "VGG-16 classifier (DC: fc 4/4/23 % kept)"
        head = nn.Sequential(*list(vgg.classifier.children())).eval()
    head_m = copy.deepcopy(head)
    _mask_model(head_m, {k.split(".", 1)[1]: v for k, v in fc.items()})
    for b in ((1,) if args.quick else (1, 32)):
        x = torch.randn(b, d_in)
        rows.append(_end_to_end(label, head, head_m, ["0", "3", "6"], x, args.runs, args.threads))
    del head, head_m
    if not args.quick:
        vgg_m = copy.deepcopy(vgg)
        _mask_model(vgg_m, DC_VGG16_KEPT)
        rows.append(_end_to_end("VGG-16 224x224 (DC per-layer kept)", vgg, vgg_m, list(DC_VGG16_KEPT),
                                torch.randn(1, 3, 224, 224), max(3, args.runs // 3), args.threads))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small layers only (seconds)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads while timing (default: torch's)")
    ap.add_argument("--runs", type=int, default=9, help="timed runs per variant (interleaved; median)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    layers = layer_rows(args)
    e2e = end_to_end_rows(args)
    head = [r for r in e2e if r["model"].startswith("VGG-16 classifier") and r["batch"] == 1]
    goals = {"vgg16_classifier_96_batch1_sparse_faster": bool(head and head[0]["sparse_speedup"] > 1.0),
             "never_replaced_by_a_slower_kernel": not any(r["replaced_a_slower_layer"] for r in e2e)}
    with torch_threads(args.threads):
        threads = torch.get_num_threads()
    payload = {"machine": {**machine(), "threads": threads}, "runs": args.runs, "layers": layers,
               "end_to_end": e2e, "goals": goals, "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        emit(args, [], [], payload)
        return 0
    header = ["layer", "batch"] + [f"{s:.0%}" for s in SPARSITIES] + ["break-even"]
    table = [[r["layer"], r["batch"]] + [f"{v:.2g}x" for v in r["csr_speedup"]]
             + [f"{r['break_even']:.0%}" if r["break_even"] is not None else "never"] for r in layers]
    emit(args, table, header, payload)
    print()
    header = ["model", "batch", "dense ms", "masked ms", "sparse ms", "sparse speedup", "CSR layers"]
    table = [[r["model"], r["batch"], f"{r['dense_ms']:.3g}", f"{r['masked_ms']:.3g}", f"{r['sparse_ms']:.3g}",
              f"{r['sparse_speedup']:.2f}x", ",".join(r["sparse_layers"]) or "-"] for r in e2e]
    emit(args, table, header, payload)
    print(f"\nthreads {threads}; goals: " + ", ".join(f"{k} {'OK' if v else 'MISSED'}" for k, v in goals.items())
          + f"; {payload['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
