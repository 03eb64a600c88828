"""GUI-thread time of a global-scope edit on all rows of a big model (issue 25: keep plan computations that can take
long off the GUI thread).

Baseline: ``session.set_global(...)`` as the window called it on the GUI thread before (the threshold over every
layer's scores included). Now: what the window still does on the GUI thread -- ``editor.global_layers`` (which
layers fit), ``session.snapshot()``, and ``session.set_global(..., per_layer=...)`` with the sparsities a worker
computed on the snapshot (``prune.scope.global_sparsities``, timed as "worker"). Rankings are built first, as the
window does in a job. Each case runs on a fresh session (the first threshold sorts every score), side by side in
the same run; the ratio is baseline / now.

    python benchmarks/bench_global_edit.py [--json] [--model torchvision:vgg16] [--cases vector/wanda] [--quick]

``--quick``: digits-cnn, two cases (the test suite runs it).
"""
from __future__ import annotations

import argparse
import time

import _common
import torch

from explorer.core.prune.plan import LayerPlan, Plan
from explorer.core.prune.scope import global_sparsities
from explorer.core.session import Session

CASES = [("element", "l1"), ("vector", "l2"), ("kernel", "l1"), ("channel", "l1")]


def _session(model: str, gran: str, crit: str) -> Session:
    s = Session.open(model)
    lp = LayerPlan(0.5, gran, crit)
    s.masks.build(s.layer_names, Plan({n: lp for n in s.layer_names if lp.granularity.fits(s.layer(n))}))
    return s


def one(model: str, gran: str, crit: str, sparsity: float = 0.6, cap: float = 0.9) -> dict:
    s = _session(model, gran, crit)
    names = list(s.layer_names)
    t0 = time.perf_counter()
    s.set_global(names, sparsity, gran, crit, cap)
    before = time.perf_counter() - t0
    want = {n: s.plan.get(n) for n in names}
    del s
    s = _session(model, gran, crit)
    t0 = time.perf_counter()
    ok, _ = s.editor.global_layers(names, sparsity, gran, crit)
    snap = s.snapshot()
    gui1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    per_layer = global_sparsities(snap, ok, sparsity, gran, crit, cap)
    worker = time.perf_counter() - t0
    t0 = time.perf_counter()
    s.set_global(names, sparsity, gran, crit, cap, per_layer=per_layer)
    gui = gui1 + time.perf_counter() - t0
    same = all(s.plan.get(n) == want[n] for n in names)
    return {"granularity": gran, "criterion": crit, "before_gui_ms": round(before * 1000, 1),
            "gui_ms": round(gui * 1000, 1), "worker_ms": round(worker * 1000, 1),
            "ratio": round(before / max(gui, 1e-6), 1), "same_plan": same}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="torchvision:vgg16")
    ap.add_argument("--cases", default=",".join(f"{g}/{c}" for g, c in CASES),
                    help="granularity/criterion pairs, comma-separated (e.g. vector/wanda)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = "digits-cnn" if args.quick else args.model
    cases = CASES[:2] if args.quick else [tuple(c.split("/")) for c in args.cases.split(",")]
    rows = [one(model, g, c) for g, c in cases]
    _common.emit(args, [[r["granularity"], r["criterion"], r["before_gui_ms"], r["gui_ms"], r["worker_ms"],
                         f'{r["ratio"]}×', r["same_plan"]] for r in rows],
                 ["granularity", "criterion", "GUI ms before", "GUI ms now", "worker ms", "ratio", "same plan"],
                 {"model": model, "rows": rows, "machine": _common.machine()})


if __name__ == "__main__":
    main()
