"""Cost of keeping pruned weights at zero during training.

Seconds per training step, same model, same batches: a plain loop (no masks), the app's loop
(masked_fill_ of the pruned weights and of their momentum after each optimizer step:
explorer.core.train.finetune.MaskEnforcer), and
torch.nn.utils.prune's reparametrised weights (weight = weight_orig * weight_mask in every forward).
Goal: mask overhead (masked / plain - 1) <= 5%.

    python benchmarks/bench_finetune.py [--json] [--models digits-cnn lab-vgg] [--steps 30] [--quick]

``--quick``: digits-cnn, 4 steps, one timed repeat (a few seconds; tests/test_benchmarks_quick.py runs it).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import _common  # noqa: F401
import torch
from torch import nn
from torch.nn.utils import prune

from explorer.core.session import Session
from explorer.core.train.finetune import MaskEnforcer


def run(model, batches, after_step=None, repeats=3, enforcer=None) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    if enforcer is not None:
        enforcer.attach(opt)       # as the app does: the momentum of pruned weights is zeroed too
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
            if after_step:
                after_step()
        per.append((time.perf_counter() - t0) / len(batches) * 1000)
    return statistics.median(per)


def bench(model_spec: str, steps: int, batch: int, sparsity: float, repeats: int = 3) -> dict:
    s = Session.open(model_spec)
    s.set_uniform(s.layer_names, sparsity)
    s.apply()
    masks, aux = s.materialize(s.applied_plan)
    shape = s.require().input_shape
    g = torch.Generator().manual_seed(0)
    if s.dataset.has_labels:
        batches = list(s.dataset.batches("train", batch_size=batch, shuffle=True))[:steps]
    else:
        batches = [(torch.randn(batch, *shape, generator=g), torch.randint(0, 10, (batch,), generator=g))
                   for _ in range(steps)]
    plain = copy.deepcopy(s.module)
    masked = copy.deepcopy(s.module)
    enforcer = MaskEnforcer(masked, masks, aux)
    tp = copy.deepcopy(s.module)
    mods = dict(tp.named_modules())
    for key, m in masks.items():      # masks are keyed by state_dict keys ("backbone.conv0.weight")
        mod, pname = key.rsplit(".", 1)
        prune.custom_from_mask(mods[mod], pname, m)
    # warm-up all three once, then interleave the timed repeats
    for m, hook in ((plain, None), (masked, enforcer.apply), (tp, None)):
        run(m, batches[:5], hook, repeats=1, enforcer=enforcer if m is masked else None)
    times = {"plain": [], "masked": [], "torch_prune": []}
    for _ in range(repeats):
        times["plain"].append(run(plain, batches, None, 1))
        times["masked"].append(run(masked, batches, enforcer.apply, 1, enforcer=enforcer))
        times["torch_prune"].append(run(tp, batches, None, 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    params = dict(masked.named_parameters())
    zeros_ok = all(bool((params[key][~m] == 0).all()) for key, m in masks.items())
    return {"model": model_spec, "batch": batch, "steps": len(batches), "plain_step_ms": med["plain"],
            "masked_step_ms": med["masked"], "torch_prune_step_ms": med["torch_prune"],
            "overhead": med["masked"] / med["plain"] - 1, "torch_prune_overhead": med["torch_prune"] / med["plain"] - 1,
            "masks_held": zeros_ok}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", nargs="+", default=["digits-cnn", "lab-vgg"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code path (the test suite runs this)")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.quick:
        rows = [bench("digits-cnn", 4, 8, args.sparsity, repeats=1)]
    else:
        rows = [bench(m, args.steps if m != "digits-cnn" else max(args.steps, 39), args.batch, args.sparsity)
                for m in args.models]
    first = rows[0]
    payload = {"plain_step_ms": first["plain_step_ms"], "masked_step_ms": first["masked_step_ms"],
               "torch_prune_step_ms": first["torch_prune_step_ms"], "overhead": first["overhead"],
               "models": rows, "machine": _common.machine()}
    _common.emit(args, [[r["model"], r["batch"], f"{r['plain_step_ms']:.2f}", f"{r['masked_step_ms']:.2f}",
                         f"{r['torch_prune_step_ms']:.2f}", f"{r['overhead']:+.1%}", f"{r['torch_prune_overhead']:+.1%}"]
                        for r in rows],
                 ["model", "batch", "plain ms/step", "masked ms/step", "torch.prune ms/step", "mask overhead",
                  "torch.prune overhead"], payload)


if __name__ == "__main__":
    main()
