"""Reproducible training of the built-in models (``make retrain``); ``tiny-lm``'s loop is in ``builtin_lm.py``.

Fixed seeds, deterministic single-threaded CPU training, Adam with a cosine
schedule; the epoch with the best validation accuracy is kept. Takes well
under a minute per model on 2 CPU cores.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..fileio import atomic_torch_save
from ..model.data import load_dataset
from ..model.zoo import BUILTINS
from .builtin_lm import train_tiny_lm
from .evaluate import evaluate

TRAIN_SETTINGS = {
    "digits-cnn": {"epochs": 40, "lr": 3e-3, "batch_size": 64, "weight_decay": 1e-4},
    "digits-mlp": {"epochs": 60, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-4},
    "digits-vgg": {"epochs": 12, "lr": 3e-3, "batch_size": 64, "weight_decay": 1e-4},
}


TRAINABLE = (*TRAIN_SETTINGS, "tiny-lm")


def train_builtin(name: str, out_dir: Path, seed: int = 0, log=print, settings: dict | None = None) -> dict:
    """Train a built-in model into ``out_dir``. ``settings`` overrides its training settings (tests use a
    few steps)."""
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # bit-reproducible across machines with different core counts
    try:
        if name == "tiny-lm":
            return train_tiny_lm(out_dir, seed=seed, log=log, settings=settings)
        cfg = {**TRAIN_SETTINGS[name], **(settings or {})}
        model = BUILTINS[name].factory()
        ds = load_dataset("digits", BUILTINS[name].input_shape)
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        steps = cfg["epochs"] * -(-ds.size("train") // cfg["batch_size"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        loss_fn = nn.CrossEntropyLoss()
        best, best_acc = None, -1.0
        for epoch in range(cfg["epochs"]):
            model.train()
            for x, y in ds.batches("train", batch_size=cfg["batch_size"], shuffle=True, seed=seed * 1000 + epoch):
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                sched.step()
            val = evaluate(model, ds, "val").accuracy
            if val > best_acc:
                best_acc, best = val, copy.deepcopy(model.state_dict())
        model.load_state_dict(best)
        model.eval()
        test = evaluate(model, ds, "test")
        out = Path(out_dir) / BUILTINS[name].weights_file
        atomic_torch_save(model.state_dict(), out)
        log(f"{name}: val {best_acc:.2f}%  test {test.accuracy:.2f}%  -> {out}")
        return {"model": name, "val_accuracy": best_acc, "test_accuracy": test.accuracy, "file": str(out)}
    finally:
        torch.set_num_threads(threads)
