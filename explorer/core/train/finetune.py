"""Fine-tuning with masks enforced: one-shot, iterative (K prune -> fine-tune steps) and AGP.

Pruned weights stay exactly 0: after every optimizer step each masked
tensor gets ``masked_fill_(~mask, 0)`` (weights, and the BatchNorm/bias
entries of removed channels). Training runs on a copy of the model, so a
cancelled job leaves the session as it was; finished steps are returned as
snapshots.

AGP (Zhu & Gupta 2017): sparsity rises along s_f + (s_i - s_f)(1 - t/T)^3
during the first part of training (re-masking from the current weights at
regular intervals), then the rest of training fine-tunes at s_f.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from ..errors import ExplorerError, PlanError
from ..jobs import CancelToken, Progress, ProgressFn
from ..model.data import DatasetBundle
from ..model.layers import load_state, weight_key
from ..prune.plan import LayerPlan, Plan
from .evaluate import evaluate, logits_of, loss_of

SCHEDULES = ("oneshot", "iterative", "agp")
AGP_PRUNE_FRACTION = 0.75   # AGP: sparsity reaches its target after this share of training
AGP_UPDATES = 10            # AGP: masks recomputed this many times along the cubic
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3}   # the lab's SGD rate; Adam's usual rate


def default_lr(optimizer: str) -> float:
    return DEFAULT_LR.get(optimizer, DEFAULT_LR["sgd"])


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 3
    lr: float = 0.01
    optimizer: str = "sgd"        # "sgd" (momentum 0.9) | "adam"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 32
    cosine: bool = True
    seed: int = 0
    schedule: str = "oneshot"     # "oneshot" | "iterative" | "agp"
    steps: int = 1                # iterative: prune -> fine-tune steps to reach the target
    eval_split: str = "val"
    max_batches: int | None = None  # per epoch (for quick looks at big datasets)

    def validated(self) -> "FinetuneConfig":
        if self.epochs < 1:
            raise PlanError(f"Fine-tuning needs at least 1 epoch (got {self.epochs}).")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise PlanError(f"The learning rate must be a positive number (got {self.lr}).")
        if self.optimizer not in ("sgd", "adam"):
            raise PlanError(f"Unknown optimizer '{self.optimizer}'; use sgd or adam.")
        if self.schedule not in SCHEDULES:
            raise PlanError(f"Unknown schedule '{self.schedule}'; use {', '.join(SCHEDULES)}.")
        if self.steps < 1:
            raise PlanError(f"Iterative pruning needs at least 1 step (got {self.steps}).")
        if self.batch_size < 1:
            raise PlanError(f"Batch size must be at least 1 (got {self.batch_size}).")
        return self


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch (sent as Progress.data for live curves)."""

    epoch: int            # 1-based across the whole job
    step: int             # iterative step (1-based), 1 for one-shot
    train_loss: float
    val_accuracy: float | None
    val_loss: float | None
    sparsity: float       # of the prunable weights during this epoch
    lr: float
    seconds: float
    val_perplexity: float | None = None   # language models (their val_accuracy is None)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Snapshot:
    """A state the user can return to (one per iterative step, and the final one)."""

    label: str
    plan: Plan
    state: dict[str, torch.Tensor]
    val_accuracy: float | None
    sparsity: float
    test_accuracy: float | None = None   # filled in by whoever evaluates the step (the window, for the History)


@dataclass
class FinetuneResult:
    state: dict[str, torch.Tensor]
    plan: Plan
    history: list[EpochRecord]
    best_epoch: int
    best_accuracy: float | None
    snapshots: list[Snapshot] = field(default_factory=list)


MaskFn = Callable[[Plan, dict[str, torch.Tensor]], tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]


class MaskEnforcer:
    """Keeps pruned entries at exactly zero after each optimizer step."""

    def __init__(self, module: nn.Module, masks: dict[str, torch.Tensor], aux: dict[str, torch.Tensor]):
        params = dict(module.named_parameters())
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for key, m in masks.items():      # state_dict keys of the pruned weights
            p = params[key]
            self.pairs.append((p, ~m.to(torch.bool)))
        for pname, m in aux.items():
            p = params.get(pname)
            if p is not None:
                self.pairs.append((p, ~m.to(torch.bool).reshape((-1,) + (1,) * (p.dim() - 1)).expand_as(p)))
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for p, pruned in self.pairs:
            p.masked_fill_(pruned, 0.0)


def sparsity_of(module: nn.Module, layer_names: list[str]) -> float:
    params = dict(module.named_parameters())
    total = zeros = 0
    for n in layer_names:
        w = params[weight_key(module, n)]
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / total if total else 0.0


def scaled_plan(target: Plan, start: Plan, frac: float) -> Plan:
    """Per-layer sparsity start + (target - start) * frac."""
    layers = {}
    for n, lp in target.layers.items():
        s0 = start.get(n).sparsity if start.get(n).granularity == lp.granularity else 0.0
        s = s0 + (lp.sparsity - s0) * frac
        layers[n] = LayerPlan(min(max(s, 0.0), 1.0), lp.granularity, lp.criterion)
    return Plan(layers, target.scope, target.target_sparsity)


def agp_fraction(t: float) -> float:
    """Share of the way from s_i to s_f at training progress t in [0, 1] (cubic; 1 after AGP_PRUNE_FRACTION)."""
    x = min(max(t / AGP_PRUNE_FRACTION, 0.0), 1.0)
    return 1.0 - (1.0 - x) ** 3


def _optimizer(cfg: FinetuneConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def finetune(module: nn.Module, dataset: DatasetBundle, layer_names: list[str], target: Plan, start: Plan,
             mask_fn: MaskFn, cfg: FinetuneConfig, progress: ProgressFn | None = None,
             cancel: CancelToken | None = None, partial: dict | None = None) -> FinetuneResult:
    """Fine-tune a copy of ``module`` towards ``target`` (from ``start``) with the chosen schedule.

    ``mask_fn(plan, state)`` computes masks for a plan from given weights (re-ranking them).
    ``partial`` (optional dict) receives ``snapshots`` as steps finish, so a cancelled run can
    still return to its last completed step.
    """
    cfg = cfg.validated()
    if isinstance(module, torch.jit.ScriptModule):
        raise ExplorerError("TorchScript models cannot be fine-tuned here: their weights are frozen into compiled "
                            "code.", "Open the model as a state_dict with --arch (or a whole module with --trust) "
                            "to fine-tune it; pruning and exporting the TorchScript model work without fine-tuning.")
    if not dataset.has_labels:
        raise ExplorerError(f"Fine-tuning needs labels; the dataset {dataset.spec} has none.",
                            "Choose a labelled dataset (digits, mnist:ROOT, cifar10:ROOT, imagefolder:DIR).")
    if dataset.size("train") == 0:
        raise ExplorerError(f"The training split of {dataset.spec} is empty.")
    progress = progress or (lambda p: None)
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(module)
    model.train()
    steps = cfg.steps if cfg.schedule == "iterative" else 1
    per_epoch = -(-dataset.size("train") // cfg.batch_size)
    if cfg.max_batches:
        per_epoch = min(per_epoch, cfg.max_batches)
    total_epochs = cfg.epochs * steps
    total_batches = total_epochs * per_epoch
    history: list[EpochRecord] = []
    snapshots: list[Snapshot] = []
    if partial is not None:
        partial["snapshots"] = snapshots
    best_state, best_acc, best_epoch = None, None, 0
    t_start = time.perf_counter()
    done_batches = 0
    epoch_no = 0
    current_plan = start

    def remask(plan: Plan):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        masks, aux = mask_fn(plan, state)
        return MaskEnforcer(model, masks, aux)

    for step in range(1, steps + 1):
        if cfg.schedule == "iterative":
            current_plan = scaled_plan(target, start, step / steps)
        elif cfg.schedule == "oneshot":
            current_plan = target
        else:  # agp starts where we are and follows the cubic
            current_plan = scaled_plan(target, start, agp_fraction(0.0))
        enforcer = remask(current_plan)
        opt = _optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, cfg.epochs * per_epoch)) if cfg.cosine else None
        agp_every = max(1, int(cfg.epochs * per_epoch * AGP_PRUNE_FRACTION / AGP_UPDATES))
        step_best_state, step_best_acc = None, None
        for e in range(cfg.epochs):
            epoch_no += 1
            model.train()
            t0 = time.perf_counter()
            lr_epoch = opt.param_groups[0]["lr"]     # the rate this epoch started with (cosine lowers it)
            loss_sum, n_seen = 0.0, 0
            for b, (x, y) in enumerate(dataset.batches("train", batch_size=cfg.batch_size, shuffle=True,
                                                        seed=cfg.seed * 10007 + epoch_no)):
                if cfg.max_batches and b >= cfg.max_batches:
                    break
                if cancel is not None:
                    cancel.check()
                if cfg.schedule == "agp":
                    it = e * per_epoch + b
                    if it % agp_every == 0 and it > 0:
                        frac = agp_fraction(it / max(1, cfg.epochs * per_epoch))
                        new_plan = scaled_plan(target, start, frac)
                        if new_plan.layers != current_plan.layers:
                            current_plan = new_plan
                            enforcer = remask(current_plan)
                opt.zero_grad(set_to_none=True)
                out = logits_of(model(x))
                loss = loss_of(out, y)
                if not torch.isfinite(loss):
                    raise ExplorerError("Fine-tuning diverged (the loss became NaN/inf).",
                                        "Lower the learning rate and try again.")
                loss.backward()
                opt.step()
                enforcer.apply()
                if sched is not None:
                    sched.step()
                loss_sum += loss.item() * x.shape[0]
                n_seen += x.shape[0]
                done_batches += 1
                if b % 5 == 0:
                    frac = done_batches / total_batches
                    el = time.perf_counter() - t_start
                    progress(Progress(frac, f"fine-tuning: step {step}/{steps}, epoch {e + 1}/{cfg.epochs}",
                                      None, el / frac * (1 - frac) if frac > 0 else None))
            if cfg.schedule == "agp" and e == cfg.epochs - 1 and current_plan.layers != target.layers:
                current_plan = target
                enforcer = remask(current_plan)
            ev = evaluate(model, dataset, cfg.eval_split, cancel=cancel) if dataset.size(cfg.eval_split) else None
            rec = EpochRecord(epoch=epoch_no, step=step, train_loss=loss_sum / max(1, n_seen),
                              val_accuracy=ev.accuracy if ev else None, val_loss=ev.loss if ev else None,
                              sparsity=sparsity_of(model, layer_names),
                              lr=lr_epoch, seconds=time.perf_counter() - t0,
                              val_perplexity=ev.perplexity if ev else None)
            history.append(rec)
            frac = done_batches / total_batches
            progress(Progress(frac, f"epoch {epoch_no}/{total_epochs}: val {rec.val_accuracy:.2f}%"
                              if rec.val_accuracy is not None else
                              (f"epoch {epoch_no}/{total_epochs}: val perplexity {rec.val_perplexity:.2f}"
                               if rec.val_perplexity is not None else f"epoch {epoch_no}/{total_epochs}"), rec))
            final_sparsity_reached = cfg.schedule != "agp" or current_plan.layers == target.layers
            # best epoch: highest val accuracy, else lowest val loss (= lowest perplexity), else lowest train loss
            acc = rec.val_accuracy if rec.val_accuracy is not None else \
                -(rec.val_loss if rec.val_loss is not None else rec.train_loss)
            if final_sparsity_reached and (step_best_acc is None or acc > step_best_acc):
                step_best_acc = acc
                step_best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if step == steps:
                    best_epoch = epoch_no
        if step_best_state is None:
            step_best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # continue from the best weights of this step (masks are already in them)
        load_state(model, step_best_state)
        snapshots.append(Snapshot(label=f"step {step}/{steps}" if steps > 1 else "fine-tuned",
                                  plan=current_plan, state=step_best_state,
                                  val_accuracy=step_best_acc if step_best_acc is not None and step_best_acc >= 0 else None,
                                  sparsity=sparsity_of(model, layer_names)))
        best_state, best_acc = step_best_state, step_best_acc
    return FinetuneResult(state=best_state, plan=current_plan, history=history, best_epoch=best_epoch,
                          best_accuracy=best_acc if best_acc is not None and best_acc >= 0 else None,
                          snapshots=snapshots)
