"""Reproducible training of the built-in language model ``tiny-lm`` (``make retrain``).

The digits models' recipe carried over to a decoder: fixed seeds, one CPU thread (bit-reproducible), AdamW
(weight decay on the matrices only) with a linear warm-up and a cosine decay, gradient clipping; the
validation perplexity is measured every ``eval_every`` steps and the best state is kept. Takes about
12 minutes on one thread. The weights are stored in fp16 (half the file); the reported perplexities are those
of the stored weights, as the app loads them.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import nn

from ..fileio import atomic_torch_save
from ..model.data import load_dataset
from ..model.outputs import loss_of
from ..model.zoo import BUILTINS
from .evaluate import evaluate

LM_SETTINGS = {"steps": 480, "batch_size": 32, "lr": 2e-3, "warmup": 30, "weight_decay": 0.1, "clip": 1.0,
               "eval_every": 40, "eval_limit": None}


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _as_stored(state: dict) -> dict:
    """The state as the file holds it: fp16."""
    return {k: v.to(torch.float16) for k, v in state.items()}


def train_tiny_lm(out_dir: Path, seed: int = 0, log=print, settings: dict | None = None) -> dict:
    """Train ``tiny-lm`` on ``tiny-text`` (call with one thread set: ``train_builtin`` does). ``settings``
    overrides :data:`LM_SETTINGS` (tests train a few steps)."""
    cfg = {**LM_SETTINGS, **(settings or {})}
    b = BUILTINS["tiny-lm"]
    torch.manual_seed(seed)
    model = b.factory()
    ds = load_dataset(b.default_dataset, b.input_shape, tokens={"vocab_size": b.vocab_size, "tokenizer": None})
    opt = torch.optim.AdamW(_param_groups(model, cfg["weight_decay"]), lr=cfg["lr"], betas=(0.9, 0.95))
    steps, warm = cfg["steps"], cfg["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    best, best_ppl, step, epoch = None, math.inf, 0, 0
    while step < steps:
        for x, y in ds.batches("train", batch_size=cfg["batch_size"], shuffle=True, seed=seed * 1000 + epoch):
            model.train()
            opt.zero_grad()
            loss = loss_of(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
            opt.step()
            sched.step()
            step += 1
            if step % cfg["eval_every"] == 0 or step == steps:
                val = evaluate(model, ds, "val", batch_size=64, limit=cfg["eval_limit"]).perplexity
                log(f"tiny-lm: step {step}/{steps}  train loss {loss.item():.3f}  val perplexity {val:.3f}")
                if val < best_ppl:
                    best_ppl, best = val, copy.deepcopy(model.state_dict())
            if step >= steps:
                break
        epoch += 1
    stored = _as_stored(best)
    model.load_state_dict(stored)
    model.eval()
    val = evaluate(model, ds, "val", batch_size=64, limit=cfg["eval_limit"]).perplexity
    test = evaluate(model, ds, "test", batch_size=64, limit=cfg["eval_limit"]).perplexity
    out = Path(out_dir) / b.weights_file
    atomic_torch_save(stored, out)
    log(f"tiny-lm: val perplexity {val:.3f}  test perplexity {test:.3f} ({epoch} epochs begun, {step} steps) -> {out}")
    return {"model": "tiny-lm", "val_perplexity": val, "test_perplexity": test, "steps": step, "file": str(out)}
