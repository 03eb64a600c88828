"""Start-up (issue 13, goal 1): the app's first frame vs a bare PySide6 window in a process that imports torch.

    python benchmarks/bench_startup.py [--reps 7] [--model digits-cnn] [--before DIR] [--no-screenshot] [--json]
                                       [--quick]

``--json`` prints the payload as one JSON object on stdout (the table goes to stderr) and writes
``benchmarks/results/startup.json``; ``--quick``: one repetition, no screenshot, no results file (the test suite
runs it).

Each repetition starts every variant in a fresh process (``_probe.py``), in an order that rotates from one
repetition to the next, so drift in the machine's load hits all variants alike; the table gives medians.

What is measured (see ``_probe.py``): the wall time from just before the process is started until the main
window's first paint pass has finished (an event filter on the window sees its first ``QEvent.Paint``; a
zero-delay timer then fires after Qt finished painting the window and its children). Variants:

- ``floor``: ``import torch`` + a bare ``QMainWindow`` with one label, shown at 1440x900;
- ``app``: ``pruning-explorer gui --model M`` from this checkout (the real window; offscreen platform);
- ``before``: the same from ``--before DIR`` (another checkout, e.g. the code as it was before).

Also (unless ``--no-screenshot``): the whole ``gui --screenshot`` command on the model, until it exits (the
screenshot waits for the window's background work), wall time and peak RSS, for this checkout and ``--before``.
The goal: the app's first frame within 1.3x the floor (median of the per-repetition ratios).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _spawn import ROOT, child_env, load, median, probe, run_child  # noqa: E402

GOAL = 1.3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--before", default=None, help="another checkout to measure side by side (e.g. main)")
    ap.add_argument("--no-screenshot", action="store_true")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON object (table on stderr); also write benchmarks/results/startup.json")
    ap.add_argument("--quick", action="store_true", help="one repetition, no screenshot, no results file")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.no_screenshot = 1, True
    table_out = sys.stderr if args.json else sys.stdout

    variants = {"floor": None, "app": ROOT}
    if args.before:
        variants["before"] = Path(args.before).resolve()
    gui_args = ["gui", "--model", args.model]
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    shots: dict[str, list[dict]] = {v: [] for v in variants if v != "floor"}
    load_before = load()
    names = list(variants)
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for v in order:
            r = probe("floor" if v == "floor" else "app", "frame", variants[v], gui_args)
            runs[v].append(r)
            if r.get("rc") not in (0, None) or not r.get("first_frame_s"):
                print(f"{v}: failed: {r.get('stderr', '')}", file=sys.stderr)
        if not args.no_screenshot:
            for v in [n for n in order if n != "floor"]:
                with tempfile.TemporaryDirectory() as d:
                    r = run_child([sys.executable, "-m", "explorer.cli", "gui", "--model", args.model,
                                   "--screenshot", str(Path(d) / "s.png")], variants[v], child_env())
                r.pop("stdout", None)
                shots[v].append(r)
        print(f"rep {rep + 1}/{args.reps}: " + ", ".join(
            f"{v} {runs[v][-1].get('first_frame_s', float('nan')):.2f}s" for v in names), file=sys.stderr)
    load_after = load()

    def ratios(v):
        return [a["first_frame_s"] / f["first_frame_s"] for a, f in zip(runs[v], runs["floor"])
                if a.get("first_frame_s") and f.get("first_frame_s")]

    summary = {}
    for v in names:
        summary[v] = {"first_frame_s": median([r.get("first_frame_s") for r in runs[v]]),
                      "peak_rss_mb_at_first_frame": median([r.get("peak_rss_mb") for r in runs[v]]),
                      "all_first_frame_s": [round(r.get("first_frame_s") or 0, 3) for r in runs[v]]}
        if v != "floor":
            summary[v]["ratio_to_floor"] = median(ratios(v))
            summary[v]["all_ratios"] = [round(x, 3) for x in ratios(v)]
            mods = runs[v][-1].get("modules", [])
            summary[v]["heavy_modules_at_first_frame"] = [m for m in mods if m in (
                "torchvision", "torch_pruning", "timm", "scipy", "sklearn", "matplotlib", "pyqtgraph", "sympy",
                "transformers", "pandas")]
        if v in shots and shots[v]:
            summary[v]["screenshot_s"] = median([r["wall_s"] for r in shots[v] if r["rc"] == 0])
            summary[v]["screenshot_peak_rss_mb"] = median([r["peak_rss_mb"] for r in shots[v] if r["rc"] == 0])
            bad = [r for r in shots[v] if r["rc"] != 0]
            if bad:
                summary[v]["screenshot_failures"] = [r["stderr"][-400:] for r in bad]
    payload = {"benchmark": "startup", "model": args.model, "reps": args.reps, "goal_ratio": GOAL,
               "load_avg_before": load_before, "load_avg_after": load_after, "cpus": _cpus(),
               "measured": "wall time from process start to the end of the main window's first paint pass",
               "variants": summary, "goal_met": (summary["app"].get("ratio_to_floor") or 99) <= GOAL}
    header = ["variant", "first frame s (median)", "ratio to floor", "peak RSS MB (to 1st frame)",
              "gui --screenshot s", "screenshot peak RSS MB"]
    rows = []
    for v in names:
        s = summary[v]
        rows.append([v, f"{s['first_frame_s']:.2f}", f"{s.get('ratio_to_floor', 1.0):.2f}x",
                     f"{s['peak_rss_mb_at_first_frame']:.0f}",
                     f"{s['screenshot_s']:.2f}" if s.get("screenshot_s") else "-",
                     f"{s['screenshot_peak_rss_mb']:.0f}" if s.get("screenshot_peak_rss_mb") else "-"])
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)), file=table_out)
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)), file=table_out)
    print(f"goal: first frame <= {GOAL}x floor: {'met' if payload['goal_met'] else 'NOT met'}; "
          f"load average {load_before} -> {load_after} on {payload['cpus']} CPUs", file=table_out)
    if args.json:
        if not args.quick:
            out = ROOT / "benchmarks" / "results" / "startup.json"
            out.write_text(json.dumps(payload, indent=2))
            print(f"wrote {out}", file=sys.stderr)
        print(json.dumps(payload, indent=2))
    return 0


def _cpus() -> int:
    import os
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
