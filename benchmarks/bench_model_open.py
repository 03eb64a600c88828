"""Opening a model in a fresh process (issue 24, item 6): CPU seconds of ``Session.open(M)`` and its channel groups
(Torch-Pruning's dependency graph), as every CLI command, benchmark and window process does it, with Torch-Pruning
imported without timm (the app: ``core/model/tp_pruners.torch_pruning``) against the same with timm imported first
(what Torch-Pruning's FLOP counter did before: ``import timm`` pulls in torchvision's models and huggingface_hub).

    python benchmarks/bench_model_open.py [--reps 5] [--model digits-cnn] [--json] [--quick]

Each repetition starts both variants in fresh processes, alternating, with ``OMP_NUM_THREADS=1``; CPU is the
child's user + system time (``resource.getrusage``), which the machine's load disturbs less than wall time.
``--quick``: one repetition (the test suite runs it). Without timm installed there is nothing to compare: the
``with_timm`` variant then equals the other.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _common import emit, machine

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import resource, sys
sys.path.insert(0, {root!r})
if {with_timm}:
    from explorer.core.extras import available
    if available("timm"):
        import timm  # noqa: F401   (as Torch-Pruning's FLOP counter imported it)
from explorer.core.session import Session
s = Session.open({model!r})
s.groups
u = resource.getrusage(resource.RUSAGE_SELF)
print(u.ru_utime + u.ru_stime, "timm" in sys.modules)
"""


def run(model: str, with_timm: bool) -> tuple[float, bool]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), with_timm=with_timm, model=model)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"opening {model} failed: {p.stderr[-2000:]}")
    cpu, timm = p.stdout.split()[-2:]
    return float(cpu), timm == "True"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="one repetition (the test suite runs this)")
    args = ap.parse_args()
    reps = 1 if args.quick else args.reps
    cpu: dict[str, list[float]] = {"app": [], "with_timm": []}
    timm_loaded = {}
    for i in range(reps):
        order = ("app", "with_timm") if i % 2 == 0 else ("with_timm", "app")
        for k in order:
            c, loaded = run(args.model, k == "with_timm")
            cpu[k].append(round(c, 3))
            timm_loaded[k] = loaded
    med = {k: statistics.median(v) for k, v in cpu.items()}
    payload = {"model": args.model, "reps": reps, "cpu_s": cpu, "median_cpu_s": med,
               "timm_imported": timm_loaded, "ratio": round(med["with_timm"] / med["app"], 2),
               "saved_cpu_s_per_process": round(med["with_timm"] - med["app"], 2), "machine": machine()}
    rows = [[k, f"{med[k]:.2f}", " ".join(f"{v:.2f}" for v in cpu[k]), timm_loaded[k]] for k in cpu]
    emit(args, rows, ["variant", "median CPU s", "per repetition", "timm imported"], payload)
    if not args.json:
        print(f"\n{args.model}: with timm / app = {payload['ratio']}x, "
              f"{payload['saved_cpu_s_per_process']} s of CPU saved per process")


if __name__ == "__main__":
    main()
