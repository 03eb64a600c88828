"""Trained quantization: fine-tune the shared values of weight-shared layers (Deep Compression, section 3.2).

Each shared layer is described by the flat positions of its kept weights, the shared value (centroid) each
one takes, and the centroids. Training keeps the assignments and the prune mask fixed and updates only the
centroids (and, by default, the parameters that are stored dense anyway: biases, BatchNorm): after the
backward pass the gradient of a centroid is the **sum** of the gradients of the weights assigned to it,
the optimizer steps the centroids, and every weight is written back as its centroid -- so after every step
each kept weight equals its shared value and each pruned weight is exactly 0.

Training runs on a copy of the model (a cancelled job changes nothing) and keeps the epoch with the best
validation accuracy; epoch 0 (the centroids as given) competes too, so training never returns worse
shared values than it started from on the validation split.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..errors import ExplorerError
from ..jobs import CancelToken, Progress, ProgressFn
from ..model.data import DatasetBundle
from ..model.layers import logits_of, weight_key
from ..model.outputs import loss_of
from .evaluate import evaluate
from .finetune import EpochRecord, FinetuneConfig

DEFAULT_CONFIG = FinetuneConfig(epochs=3, lr=1e-3, optimizer="adam", weight_decay=0.0, batch_size=32)


@dataclass
class SharedLayer:
    """What training needs of one weight-shared layer (plain arrays: no dependency on the archive code)."""

    positions: np.ndarray    # int64 flat positions of the kept weights
    labels: np.ndarray       # int per kept weight: its centroid
    centroids: np.ndarray    # float32


@dataclass
class CentroidResult:
    centroids: dict[str, np.ndarray]          # the kept epoch's shared values per layer
    state: dict[str, torch.Tensor]            # the kept epoch's model state (weights = their shared values)
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0                       # 0: the centroids as given were best
    best_accuracy: float | None = None        # validation accuracy of the kept epoch


class _Shared:
    def __init__(self, weight: nn.Parameter, layer: SharedLayer):
        self.weight = weight
        dev = weight.device
        self.pos = torch.from_numpy(np.ascontiguousarray(layer.positions, dtype=np.int64)).to(dev)
        self.lab = torch.from_numpy(np.ascontiguousarray(layer.labels, dtype=np.int64)).to(dev)
        self.centroids = nn.Parameter(torch.from_numpy(np.array(layer.centroids, dtype=np.float32)).to(dev))
        self.write()

    @torch.no_grad()
    def write(self) -> None:
        """Every kept weight := its centroid; every other weight := +0.0."""
        flat = self.weight.view(-1)
        flat.zero_()
        flat[self.pos] = self.centroids[self.lab]

    def gather_grad(self) -> None:
        """d loss / d centroid = sum of d loss / d weight over the weights sharing it."""
        g = self.weight.grad
        c = torch.zeros_like(self.centroids)
        if g is not None:
            c.index_add_(0, self.lab, g.reshape(-1)[self.pos])
        self.centroids.grad = c
        self.weight.grad = None


def _optimizer(cfg: FinetuneConfig, centroids: list, others: list) -> torch.optim.Optimizer:
    groups = [{"params": centroids, "weight_decay": 0.0}]
    if others:
        groups.append({"params": others, "weight_decay": cfg.weight_decay})
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def train_centroids(module: nn.Module, dataset: DatasetBundle, layers: dict[str, SharedLayer],
                    cfg: FinetuneConfig = DEFAULT_CONFIG, train_others: bool = True,
                    progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                    device: torch.device | None = None) -> CentroidResult:
    """Fine-tune the shared values of ``layers`` (module names) on a copy of ``module`` (on ``device``, the data
    moved there once); see the module doc. The result is on the CPU."""
    cfg = cfg.validated()
    if not dataset.has_labels or dataset.size("train") == 0:
        raise ExplorerError(f"Training the shared values needs labelled training data; {dataset.spec} has none.",
                            "Choose a labelled dataset, or compress without --quantize-epochs.")
    progress = progress or (lambda p: None)
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(module)
    if device is not None:
        model = model.to(device)
    params = dict(model.named_parameters())
    shared = {n: _Shared(params[weight_key(model, n)], l) for n, l in layers.items()}
    weight_ids = {id(s.weight) for s in shared.values()}
    others = [p for p in model.parameters() if id(p) not in weight_ids and p.requires_grad] if train_others else []
    if not train_others:
        for p in model.parameters():
            if id(p) not in weight_ids:
                p.requires_grad_(False)
    opt = _optimizer(cfg, [s.centroids for s in shared.values()], others)
    per_epoch = -(-dataset.size("train") // cfg.batch_size)
    if cfg.max_batches:
        per_epoch = min(per_epoch, cfg.max_batches)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.epochs * per_epoch)) if cfg.cosine else None
    total = max(1, cfg.epochs * per_epoch)
    has_val = dataset.size(cfg.eval_split) > 0
    numel = sum(s.weight.numel() for s in shared.values())
    sparsity = 1.0 - sum(len(s.pos) for s in shared.values()) / numel if numel else 0.0

    def snapshot():
        return ({n: s.centroids.detach().cpu().numpy().copy() for n, s in shared.items()},
                {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})

    from .metric import metric_of

    metric = metric_of(dataset)     # accuracy, or perplexity / mean squared error (lower is better)

    def score() -> float | None:
        return metric.value(evaluate(model, dataset, cfg.eval_split, cancel=cancel)) if has_val else None

    best_acc = score()
    best = snapshot()
    best_epoch = 0
    history: list[EpochRecord] = []
    t_start = time.perf_counter()
    done = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        lr_epoch = opt.param_groups[0]["lr"]
        loss_sum, seen = 0.0, 0
        for b, (x, y) in enumerate(dataset.batches("train", batch_size=cfg.batch_size, shuffle=True,
                                                    seed=cfg.seed * 10007 + epoch, device=device)):
            if cfg.max_batches and b >= cfg.max_batches:
                break
            if cancel is not None:
                cancel.check()
            opt.zero_grad(set_to_none=True)
            loss = loss_of(logits_of(model(x)), y)
            if not torch.isfinite(loss):
                raise ExplorerError("Training the shared values diverged (the loss became NaN/inf).",
                                    "Lower the learning rate and try again.")
            loss.backward()
            for s in shared.values():
                s.gather_grad()
            opt.step()
            for s in shared.values():
                s.write()
            if sched is not None:
                sched.step()
            loss_sum += loss.item() * x.shape[0]
            seen += x.shape[0]
            done += 1
            if b % 5 == 0:
                frac = done / total
                el = time.perf_counter() - t_start
                progress(Progress(frac, f"training shared values: epoch {epoch}/{cfg.epochs}", None,
                                  el / frac * (1 - frac) if frac > 0 else None))
        acc = score()
        rec = EpochRecord(epoch=epoch, step=1, train_loss=loss_sum / max(1, seen),
                          val_accuracy=acc if metric.name == "accuracy" else None, val_loss=None, sparsity=sparsity,
                          lr=lr_epoch, seconds=time.perf_counter() - t0,
                          **({f"val_{metric.name}": acc} if metric.name != "accuracy" else {}))
        history.append(rec)
        progress(Progress(done / total, f"shared values, epoch {epoch}/{cfg.epochs}"
                          + (f": val {metric.name} {metric.format(acc)}" if acc is not None else ""), rec))
        better = (acc is not None and (best_acc is None or metric.better(acc, best_acc))) or \
            (acc is None and best_acc is None)
        if better:
            best_acc, best, best_epoch = acc, snapshot(), epoch
    centroids, state = best
    return CentroidResult(centroids, state, history, best_epoch, best_acc)
