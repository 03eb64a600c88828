"""What each schedule fix of issue 15 buys: the old schedules, then one change at a time, at equal epochs.

For each built-in at one sparsity (every layer, element, l1), test accuracy (best epoch on validation), mean of
N seeds, 12 epochs per run (iterative: 3 steps x 4 epochs):

  before            the old code: SGD lr 0.01, linear steps, AGP pruning over 3/4 of one cosine
  + geometric       iterative steps remove the same share of the survivors each time
  + AGP recovery    AGP prunes over the first half at the full rate, then recovers with the schedule rewound
  + model's lr      the optimizer/rate for the model's size and type (= today's defaults)
  defaults, no rewinding / linear steps   today's defaults with one change undone

    python benchmarks/ablate_schedules.py [--json] [--sparsity 0.95] [--seeds 5] [--models digits-cnn digits-mlp]
                                          [--quick]

``--quick``: digits-cnn, one seed, 3 epochs per run (iterative: 3 x 1), to check the script runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import _common  # noqa: F401
import torch
from bench_schedules import run_one

from explorer.core.session import Session
from explorer.core.train.defaults import finetune_defaults
from explorer.core.train.finetune import FinetuneConfig

OLD = dict(optimizer="sgd", lr=0.01, spacing="linear", agp_end=0.75, agp_updates=10)


def variants(session: Session) -> list[tuple[str, dict, dict]]:
    """(label, iterative settings, AGP settings); None: that schedule does not change in this row."""
    d = finetune_defaults(session.profile)
    model_lr = dict(optimizer=d.optimizer, lr=d.lr(d.optimizer))
    return [
        ("before", dict(OLD, rewind=True), dict(OLD, rewind=False)),
        ("+ geometric steps", dict(OLD, rewind=True, spacing="geometric"), None),
        ("+ AGP recovery (half, rewound)", None, dict(OLD, agp_end=0.5, rewind=True)),
        ("+ model's optimizer and rate (defaults)", dict(model_lr), dict(model_lr)),
        ("defaults, no rewinding", dict(model_lr, rewind=False), dict(model_lr, rewind=False)),
        ("defaults, linear steps", dict(model_lr, spacing="linear"), None),
    ]


def mean_acc(s, sparsity, seeds, **kw) -> float:
    return statistics.mean(run_one(s, sparsity, FinetuneConfig(seed=seed, **kw)) for seed in range(seeds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", nargs="+", default=["digits-cnn", "digits-mlp"])
    ap.add_argument("--sparsity", type=float, default=0.95)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code path")
    args = ap.parse_args()
    epochs = 12
    if args.quick:
        args.models, args.seeds, epochs = ["digits-cnn"], 1, 3
    torch.set_num_threads(1)
    payload, table = {}, []
    for model in args.models:
        s = Session.open(model)
        d = finetune_defaults(s.profile)
        one = {"before (SGD 0.01)": mean_acc(s, args.sparsity, args.seeds, epochs=epochs, optimizer="sgd", lr=0.01),
               "model's rate": mean_acc(s, args.sparsity, args.seeds, epochs=epochs, optimizer=d.optimizer,
                                        lr=d.lr(d.optimizer))}
        rows = {}
        for label, it_kw, agp_kw in variants(s):
            it = mean_acc(s, args.sparsity, args.seeds, epochs=epochs // 3, steps=3, schedule="iterative", **it_kw) \
                if it_kw is not None else None
            agp = mean_acc(s, args.sparsity, args.seeds, epochs=epochs, schedule="agp", **agp_kw) \
                if agp_kw is not None else None
            rows[label] = {"iterative": it, "agp": agp}
            print(f"{model} {label}: iterative {it}  agp {agp}", file=sys.stderr, flush=True)
            table.append([model, label, "—" if it is None else f"{it:.2f}", "—" if agp is None else f"{agp:.2f}"])
        payload[model] = {"sparsity": args.sparsity, "seeds": args.seeds, "oneshot": one, "rows": rows}
        before, after = one["before (SGD 0.01)"], one["model's rate"]
        table.append([model, "one-shot: SGD 0.01 → model's rate", f"{before:.2f} → {after:.2f}", ""])
    _common.emit(args, table, ["model", f"change (at {args.sparsity:.0%}, {epochs} epochs, {args.seeds} seeds)",
                               "iterative", "agp"], payload)


if __name__ == "__main__":
    main()
