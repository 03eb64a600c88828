"""Pruning criteria side by side (issue 12): one-shot accuracy of every criterion on the built-in models, with and
without reconstruction, and the time each takes. The baseline is the status quo: l1 magnitude, no reconstruction.

For each model and criterion, every prunable layer is pruned to the same sparsity (element granularity; the
channel table prunes every layer but the output one) and the model is evaluated on the **test** split (these are
reported numbers; the validation column is there to show whether a choice made on val would agree).
"score s" is the time to rank every layer from scratch (calibration statistics included: the Fisher for
hessian, input norms for wanda, ...), "reconstruct s" the mean time of one reconstruction (all pruned layers).
Calibration: 128 seeded training samples.

    python benchmarks/bench_criteria.py [--json] [--models digits-cnn digits-mlp] [--samples 128] [--quick]

``--quick``: digits-cnn, criteria l1 and wanda, one sparsity, 16 calibration samples (the test suite runs it).
"""
from __future__ import annotations

import argparse
import time

import _common  # noqa: F401
import torch

from explorer.core.prune.plan import LayerPlan, Plan
from explorer.core.prune.reconstruct import reconstruct_plan
from explorer.core.session import Session
from explorer.core.train.evaluate import evaluate

ELEMENT = ("l1", "l2", "random", "taylor", "hessian", "wanda")
CHANNEL = ("l1", "l2", "taylor", "hessian", "wanda", "bn-scale", "apoz")


def accuracies(s: Session, state) -> tuple[float, float]:
    m = s.model_copy(state)
    return evaluate(m, s.dataset, "test").accuracy, evaluate(m, s.dataset, "val").accuracy


def run(model: str, criterion: str, granularity: str, sparsities, samples: int) -> dict:
    s = Session.open(model)
    s.set_calibration_samples(samples)
    names = [n for n in s.layer_names if granularity != "channel" or not s.layer(n).is_output]
    t0 = time.perf_counter()
    for n in names:
        s.layer_mask(n, LayerPlan(0.5, granularity, criterion))
    score_s = time.perf_counter() - t0
    rows, rec_times = [], []
    for sp in sparsities:
        plan = s.linked_plan(Plan({n: LayerPlan(sp, granularity, criterion) for n in names}))
        test, val = accuracies(s, s.masked_state(plan))
        t1 = time.perf_counter()
        rec = reconstruct_plan(s, plan)
        rec_times.append(time.perf_counter() - t1)
        rtest, rval = accuracies(s, rec.state)
        rows.append({"sparsity": sp, "test": test, "val": val, "test_reconstructed": rtest,
                     "val_reconstructed": rval})
    return {"model": model, "criterion": criterion, "granularity": granularity, "score_s": score_s,
            "reconstruct_s": sum(rec_times) / len(rec_times), "points": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", nargs="+", default=["digits-cnn", "digits-mlp"])
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--no-channel", action="store_true", help="skip the channel table")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code path (the test suite runs this)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sps, ch_sps, element, channel = (0.7, 0.8, 0.9), (0.3, 0.5), ELEMENT, CHANNEL
    if args.quick:
        args.models, args.samples = ["digits-cnn"], 16
        sps, ch_sps, element, channel = (0.8,), (0.5,), ("l1", "wanda"), ("l1",)
    runs = []
    for model in args.models:
        for c in element:
            runs.append(run(model, c, "element", sps, args.samples))
    if not args.no_channel:
        for c in channel:
            runs.append(run("digits-cnn", c, "channel", ch_sps, args.samples))
    dense = {m: accuracies(Session.open(m), Session.open(m).base_state())[0] for m in args.models}
    n_pts = max(len(r["points"]) for r in runs)
    header = ["model", "granularity", "criterion"] + [f"test % at s{i + 1}: one-shot / reconstructed"
                                                      for i in range(n_pts)]
    header += ["score s", "reconstruct s", "score time vs l1"]
    base = {(r["model"], r["granularity"]): r for r in runs if r["criterion"] == "l1"}
    rows = []
    for r in runs:
        b = base[(r["model"], r["granularity"])]
        cells = [r["model"], r["granularity"], r["criterion"]]
        cells += [f"{p['sparsity']:.0%}: {p['test']:.1f} / {p['test_reconstructed']:.1f}" for p in r["points"]]
        cells += [""] * (n_pts - len(r["points"]))
        cells += [f"{r['score_s']:.3f}", f"{r['reconstruct_s']:.2f}", f"{r['score_s'] / max(b['score_s'], 1e-9):.1f}x"]
        rows.append(cells)
    payload = {"machine": _common.machine(), "samples": args.samples, "dense_test_accuracy": dense, "runs": runs}
    _common.emit(args, rows, header, payload)


if __name__ == "__main__":
    main()
