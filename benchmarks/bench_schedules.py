"""Pruning schedules: one-shot vs iterative vs AGP at equal total epochs (issue 15).

For digits-cnn and digits-mlp at 80/90/93/95 % element sparsity (every layer, l1, as `prune --sparsity S`),
the TEST accuracy of the kept weights (best epoch selected on the validation split) after fine-tuning with
  - oneshot:   prune at once, then E epochs;
  - iterative: K prune -> fine-tune steps of E/K epochs each (geometric steps);
  - agp:       E epochs, sparsity along AGP's cubic during the first half, then recovery at the target;
averaged over seeds (the batch order; the masks do not depend on it). Goal: at every sparsity >= 90 % the better
of iterative and AGP at least matches one-shot, on both models.

Variants: ``default`` (the app's defaults, which are the best settings found: the optimizer and rate for the
model's size/type -- SGD lr 0.05 for digits-cnn, Adam lr 0.01 for digits-mlp --, geometric steps, learning-rate
rewinding, AGP pruning over half of training); ``sgd`` / ``adam`` (the same with that optimizer on both models,
at its rate for the model); ``before`` (the schedules and defaults before issue 15: SGD lr 0.01, linear steps,
AGP pruning over 3/4 of one cosine -- as an old recipe replays them).

    python benchmarks/bench_schedules.py [--json] [--variant default|sgd|adam|before] [--seeds 5] [--epochs 12]
                                         [--save results.json] [--quick]

``--quick``: digits-cnn at 90 %, 3 epochs (iterative: 3 x 1), one seed (the test suite runs it).

``--json`` prints {"digits-cnn": {"0.95": {"oneshot": acc, "iterative": acc, "agp": acc}, ...}, "digits-mlp": ...}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import _common  # noqa: F401
import torch

from explorer.core.prune.plan import Plan
from explorer.core.session import Session
from explorer.core.train.defaults import finetune_defaults
from explorer.core.train.evaluate import evaluate
from explorer.core.train.finetune import LEGACY_FIELDS, FinetuneConfig, finetune

MODELS = ("digits-cnn", "digits-mlp")
SPARSITIES = (0.8, 0.9, 0.93, 0.95)
SCHEDULES = ("oneshot", "iterative", "agp")
STEPS = 3
VARIANTS = ("default", "sgd", "adam", "before")


def settings(variant: str, model: str, session: Session) -> dict:
    """FinetuneConfig fields shared by the three schedules of a variant (plus 'steps' for iterative)."""
    if variant == "before":
        return {"optimizer": "sgd", "lr": 0.01, "steps": STEPS, **LEGACY_FIELDS}
    d = finetune_defaults(session.profile)
    optimizer = d.optimizer if variant == "default" else variant
    return {"optimizer": optimizer, "lr": d.lr(optimizer), "steps": STEPS}


def config(schedule: str, epochs: int, seed: int, variant: str, common: dict) -> FinetuneConfig:
    kw = dict(common)
    steps = kw.pop("steps")
    if variant == "before":     # the old code: per-step cosine for iterative, one cosine for AGP
        kw["rewind"] = schedule == "iterative"
    if schedule == "iterative":
        return FinetuneConfig(epochs=epochs // steps, steps=steps, schedule="iterative", seed=seed, **kw)
    return FinetuneConfig(epochs=epochs, schedule=schedule, seed=seed, **kw)


def run_one(s: Session, sparsity: float, cfg: FinetuneConfig) -> float:
    s.set_plan(Plan(), record=False)
    s.set_uniform(s.layer_names, sparsity, "element", "l1")
    plan = s.plan
    start = plan if cfg.schedule == "oneshot" else Plan()
    module = s.model_copy(s.masked_state(start))
    r = finetune(module, s.dataset, s.layer_names, plan, start, s.masks_for_state, cfg)
    return evaluate(s.model_copy(r.state), s.dataset, "test").accuracy


def bench(models, sparsities, epochs: int, seeds: int, variant: str, log) -> dict:
    out = {}
    for model in models:
        s = Session.open(model)
        common = settings(variant, model, s)
        dense = evaluate(s.module, s.dataset, "test").accuracy
        rows = {}
        for sp in sparsities:
            row = {}
            for schedule in SCHEDULES:
                accs = [run_one(s, sp, config(schedule, epochs, seed, variant, common)) for seed in range(seeds)]
                row[schedule] = {"mean": statistics.mean(accs), "runs": accs}
            rows[f"{sp:g}"] = row
            log(f"{model} {sp:.0%}: " + "  ".join(f"{k} {v['mean']:.2f}" for k, v in row.items()))
        out[model] = {"dense": dense, "settings": {k: v for k, v in common.items()}, "rows": rows}
    return out


def goal_met(row: dict, sparsity: float) -> bool | None:
    if sparsity < 0.9:
        return None
    return max(row["iterative"]["mean"], row["agp"]["mean"]) >= row["oneshot"]["mean"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--variant", choices=VARIANTS, default="default")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sparsities", default=",".join(f"{s:g}" for s in SPARSITIES))
    ap.add_argument("--epochs", type=int, default=12, help="total epochs of every schedule (iterative: split in steps)")
    ap.add_argument("--seeds", type=int, default=5, help="runs per cell (batch orders 0..N-1), averaged")
    ap.add_argument("--save", default=None, help="also write the full record (per-seed accuracies, settings) here")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code path (the test suite runs this)")
    args = ap.parse_args()
    if args.quick:
        args.models, args.sparsities, args.epochs, args.seeds = ["digits-cnn"], "0.9", STEPS, 1
    torch.set_num_threads(1)
    sparsities = [float(v) for v in args.sparsities.split(",")]
    t0 = time.perf_counter()
    res = bench(args.models, sparsities, args.epochs, args.seeds, args.variant,
                log=lambda m: print(m, file=sys.stderr, flush=True))
    seconds = time.perf_counter() - t0
    if args.save:
        with open(args.save, "w") as f:
            json.dump({"variant": args.variant, "epochs": args.epochs, "seeds": args.seeds, "steps": STEPS,
                       "seconds": seconds, "machine": _common.machine(), "models": res}, f, indent=2)
    payload = {m: {sp: {k: round(v["mean"], 3) for k, v in row.items()} for sp, row in r["rows"].items()}
               for m, r in res.items()}
    table = []
    for m, r in res.items():
        for sp, row in r["rows"].items():
            ok = goal_met(row, float(sp))
            table.append([m, f"{float(sp):.0%}", f"{r['dense']:.2f}"] + [f"{row[k]['mean']:.2f}" for k in SCHEDULES]
                         + ["—" if ok is None else ("✔" if ok else "✘")])
    _common.emit(args, table, ["model", "sparsity", "dense", "oneshot", "iterative", "agp", "goal"], payload)
    if not args.json:
        for m, r in res.items():
            print(f"{m}: {r['settings']}")
        print(f"variant {args.variant}: {args.epochs} epochs per schedule, mean of {args.seeds} seeds, "
              f"test accuracy (best epoch on validation); {seconds:.0f} s")


if __name__ == "__main__":
    main()
