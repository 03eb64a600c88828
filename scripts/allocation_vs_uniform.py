"""Does sensitivity-based allocation beat a uniform sparsity after fine-tuning? (issue 5's check)

Scans digits-cnn (element, l1, 0.40..0.95), then for uniform sparsities and for allocations
(per-layer allowed drop, and greedy targets) prunes the dense model, fine-tunes 3 epochs
(SGD lr 0.01, batch 32, cosine: the CLI defaults) and measures test accuracy. Prints the highest
overall sparsity each approach reaches within 1 point of dense.

    .venv/bin/python scripts/allocation_vs_uniform.py [--json]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explorer.core.allocate import allocate_by_drop, allocate_to_target  # noqa: E402
from explorer.core.evaluate import evaluate  # noqa: E402
from explorer.core.finetune import FinetuneConfig, finetune  # noqa: E402
from explorer.core.recipe import Plan  # noqa: E402
from explorer.core.sensitivity import ScanSpec, scan  # noqa: E402
from explorer.core.session import Session  # noqa: E402

SPARSITIES = [round(0.40 + 0.05 * i, 2) for i in range(12)]


def finetuned_accuracy(s: Session, plan: Plan, epochs: int) -> tuple[float, float, float]:
    s.set_plan(plan, record=False)
    s.apply()
    before = evaluate(s.module, s.dataset, "test").accuracy
    r = finetune(s.module, s.dataset, s.layer_names, s.plan, s.plan, s.masks_for_state, FinetuneConfig(epochs=epochs))
    m = copy.deepcopy(s.module)
    m.load_state_dict(r.state)
    return s.totals().sparsity, before, evaluate(m, s.dataset, "test").accuracy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--model", default="digits-cnn")
    args = ap.parse_args()
    s = Session.open(args.model)
    dense = evaluate(s.module, s.dataset, "test").accuracy
    result = scan(s, ScanSpec(SPARSITIES))
    rows = []
    for u in (0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94):
        p = Plan()
        s.set_plan(p, record=False)
        s.set_uniform(s.layer_names, u)
        sp, before, after = finetuned_accuracy(s, s.plan.copy(), args.epochs)
        rows.append({"method": f"uniform {u:.2f}", "sparsity": sp, "before_ft": before, "after_ft": after})
    for d in (1.0, 2.0, 5.0):
        a = allocate_by_drop(s, result, d, cap=0.95)
        sp, before, after = finetuned_accuracy(s, a.plan, args.epochs)
        rows.append({"method": f"allocate drop<={d:g}", "sparsity": sp, "predicted": a.predicted_accuracy,
                     "before_ft": before, "after_ft": after})
    for t in (0.85, 0.88, 0.9, 0.92, 0.94):
        a = allocate_to_target(s, result, t, "sparsity", cap=0.95)
        sp, before, after = finetuned_accuracy(s, a.plan, args.epochs)
        rows.append({"method": f"allocate target {t:.2f}", "sparsity": sp, "predicted": a.predicted_accuracy,
                     "before_ft": before, "after_ft": after})
    ok = [r for r in rows if r["after_ft"] >= dense - 1.0]
    best_uniform = max((r for r in ok if r["method"].startswith("uniform")), key=lambda r: r["sparsity"], default=None)
    best_alloc = max((r for r in ok if r["method"].startswith("allocate")), key=lambda r: r["sparsity"], default=None)
    out = {"dense_accuracy": dense, "rows": rows, "best_uniform_within_1pt": best_uniform,
           "best_allocation_within_1pt": best_alloc}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"dense {dense:.2f}%  (goal: >= {dense - 1:.2f}% after {args.epochs} epochs of fine-tuning)")
    for r in rows:
        print(f"{r['method']:26s} sparsity {r['sparsity']:.1%}  before FT {r['before_ft']:6.2f}%  after FT "
              f"{r['after_ft']:6.2f}%" + (f"  predicted {r['predicted']:.2f}%" if "predicted" in r else ""))
    for name, r in (("best uniform", best_uniform), ("best allocation", best_alloc)):
        if r:
            print(f"{name} within 1 point: {r['method']} -> {r['sparsity']:.1%} at {r['after_ft']:.2f}%")


if __name__ == "__main__":
    main()
