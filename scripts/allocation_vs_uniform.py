"""Does sensitivity-based allocation beat a uniform sparsity after fine-tuning? (issue 5's check)

Scans digits-cnn (element, l1, 0.40..0.95). Then, on one grid of overall sparsities, prunes the
dense model with (a) one uniform sparsity and (b) the greedy allocation from the scan, fine-tunes
3 epochs (the CLI defaults) and measures validation and test accuracy. Prints, per approach, the
sparsest point within 1 point of dense on the test split, and what the in-app search
(explorer.core.analyse.search, which selects on the validation split) picks.

    .venv/bin/python scripts/allocation_vs_uniform.py [--json] [--drop 1] [--model digits-cnn]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explorer.core.analyse.search import search_allocation  # noqa: E402
from explorer.core.analyse.sensitivity import ScanSpec, scan  # noqa: E402
from explorer.core.errors import ExplorerError  # noqa: E402
from explorer.core.session import Session  # noqa: E402
from explorer.core.train.evaluate import evaluate  # noqa: E402

SPARSITIES = [round(0.40 + 0.05 * i, 2) for i in range(12)]
GRID = [0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--drop", type=float, default=1.0)
    ap.add_argument("--model", default="digits-cnn")
    args = ap.parse_args()
    s = Session.open(args.model)
    dense_test = evaluate(s.module, s.dataset, "test").accuracy
    result = scan(s, ScanSpec(SPARSITIES))
    out = {"dense_test_accuracy": dense_test, "grid": GRID}
    for method in ("uniform", "greedy"):
        rows = []
        for t in GRID:
            r = search_allocation(s, result, 100.0, targets=[t], method=method)   # one trial, always accepted
            rows.append({"target": t, "sparsity": r.sparsity, "val": r.val_accuracy, "test": r.test_accuracy})
        ok = [r for r in rows if r["test"] >= dense_test - args.drop]
        try:
            pick = search_allocation(s, result, args.drop, targets=GRID, method=method)
            pick = {"sparsity": pick.sparsity, "val": pick.val_accuracy, "test": pick.test_accuracy}
        except ExplorerError:
            pick = None
        out[method] = {"points": rows, "best_within_drop_on_test": max(ok, key=lambda r: r["sparsity"]) if ok else None,
                       "search_pick": pick}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"dense test {dense_test:.2f}%  (within {args.drop:g} point: >= {dense_test - args.drop:.2f}%)")
    for method in ("uniform", "greedy"):
        o = out[method]
        print(f"{method}: " + "  ".join(f"{r['sparsity']:.1%}:{r['test']:.2f}" for r in o["points"]))
        b = o["best_within_drop_on_test"]
        if b:
            print(f"  sparsest within {args.drop:g} point on test: {b['sparsity']:.1%} at {b['test']:.2f}%")
        p = o["search_pick"]
        print("  in-app search (selects on val): " + (f"{p['sparsity']:.1%}, val {p['val']:.2f}%, test {p['test']:.2f}%"
                                                       if p else f"nothing on the grid within {args.drop:g} point on val"))


if __name__ == "__main__":
    main()
