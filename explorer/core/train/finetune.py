"""Fine-tuning with masks enforced: one-shot, iterative (K prune -> fine-tune steps) and AGP.

Pruned weights stay exactly 0: after every optimizer step each masked tensor, and the optimizer's state of its
pruned entries, gets ``masked_fill_(~mask, 0)`` (weights, and the BatchNorm/bias entries of removed channels;
:mod:`.masking`). Training runs on a copy of the model, so a cancelled job leaves the session as it was;
finished steps are returned as snapshots.

The sparsity sequences (geometric or linear iterative steps, AGP's cubic) and the learning-rate phases
(learning-rate rewinding, Renda et al. 2020) are in :mod:`.schedules`. Every epoch sends an
:class:`EpochRecord`; an epoch that starts with a pruning step also carries the validation accuracy just after
that step (before any training), so a chart can show the dip and the recovery.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable

import torch
from torch import nn

from ..errors import ExplorerError, PlanError
from ..jobs import CancelToken, Progress, ProgressFn
from ..model.data import DatasetBundle
from ..prune.plan import Plan
from . import evaluate as _evaluate_mod
from .evaluate import evaluate, logits_of
from .masking import MaskEnforcer, sparsity_of  # noqa: F401  (re-exported: the fine-tuning API)
from .schedules import AGP_END, AGP_UPDATES, SPACINGS, agp_fraction, agp_timetable, iterative_plans, lr_phases, plan_at

SCHEDULES = ("oneshot", "iterative", "agp")
AGP_PRUNE_FRACTION = AGP_END   # kept name: AGP reaches its target after this share of training
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3}   # the lab's SGD rate; Adam's usual rate
# how a recipe written before the schedules were fixed (issue 15) ran: replayed the same way
LEGACY_FIELDS = {"spacing": "linear", "step_sparsities": (), "agp_end": 0.75, "agp_updates": 10}


def default_lr(optimizer: str) -> float:
    return DEFAULT_LR.get(optimizer, DEFAULT_LR["sgd"])


def scaled_plan(target: Plan, start: Plan, frac: float) -> Plan:
    """Per-layer sparsity start + (target - start) * frac (linear in sparsity)."""
    return plan_at(target, start, frac, "linear")


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 3               # per step (iterative); of the whole run (one-shot, AGP)
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
    spacing: str = "geometric"    # iterative: "geometric" (same share of the survivors per step) | "linear"
    step_sparsities: tuple[float, ...] = ()   # iterative: the sparsity after each step (the plan is the last)
    rewind: bool = True           # learning-rate rewinding: each step / AGP's recovery restarts the schedule
    agp_end: float = AGP_END      # AGP: share of training along the cubic; the rest recovers at the target
    agp_updates: int = AGP_UPDATES  # AGP: mask updates along the cubic

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
        if self.spacing not in SPACINGS:
            raise PlanError(f"Unknown step spacing '{self.spacing}'; use {' or '.join(SPACINGS)}.")
        levels = tuple(float(v) for v in self.step_sparsities)
        if not all(0.0 < v < 1.0 and math.isfinite(v) for v in levels):
            raise PlanError(f"Step sparsities must lie between 0 and 1 (got {', '.join(map(str, levels))}).")
        if any(b <= a for a, b in zip(levels, levels[1:])):
            raise PlanError(f"Step sparsities must increase (got {', '.join(f'{v:g}' for v in levels)}).")
        if not (0.0 < self.agp_end < 1.0):
            raise PlanError(f"AGP's pruning share must lie strictly between 0 and 1 (got {self.agp_end}); the rest "
                            "of training recovers at the final sparsity.")
        if self.agp_updates < 1:
            raise PlanError(f"AGP needs at least 1 mask update (got {self.agp_updates}).")
        if levels != self.step_sparsities:
            return replace(self, step_sparsities=levels)
        return self

    @classmethod
    def from_recorded(cls, d: dict) -> "FinetuneConfig":
        """The config a recipe's "finetune" entry records. A recipe from before the schedule fields existed gets
        the schedules it ran with (linear steps; AGP pruning over 3/4 of one cosine), so it replays exactly."""
        if not isinstance(d, dict):
            raise PlanError("The recipe's 'finetune' entry must be an object (or null).")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise PlanError(f"The recipe's 'finetune' entry has unknown settings: {', '.join(unknown)}.")
        if "spacing" not in d:
            legacy = dict(LEGACY_FIELDS, rewind=d.get("schedule") == "iterative")
            d = {**legacy, **d}
        d = dict(d)
        if "step_sparsities" in d:
            d["step_sparsities"] = tuple(d["step_sparsities"] or ())
        try:
            return cls(**d).validated()
        except TypeError as e:
            raise PlanError(f"The recipe's 'finetune' entry is not valid ({e}).") from None

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["step_sparsities"] = list(self.step_sparsities)
        return d


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch (sent as Progress.data for live curves)."""

    epoch: int            # 1-based across the whole job
    step: int             # iterative step (1-based), 1 for one-shot
    train_loss: float
    val_accuracy: float | None
    val_loss: float | None
    sparsity: float       # of the prunable weights at the end of this epoch
    lr: float
    seconds: float
    sparsity_before: float | None = None   # when the epoch began, before any pruning in it
    step_sparsity: float | None = None     # right after the pruning step that opened this epoch (if one did)
    pruned_accuracy: float | None = None   # val accuracy right after that pruning step, before training
    mask_updates: int = 0                  # times the masks changed in this epoch (a pruning step counts 1)

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


def _optimizer(cfg: FinetuneConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def step_plans(cfg: FinetuneConfig, target: Plan, start: Plan, sizes: dict[str, int]) -> list[Plan]:
    """The plan each step prunes to (one step for one-shot and AGP)."""
    if cfg.schedule == "iterative":
        return iterative_plans(target, start, cfg.steps, cfg.spacing, cfg.step_sparsities, sizes)
    return [target]


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
    params = dict(model.named_parameters())
    plans = step_plans(cfg, target, start, {n: params[f"{n}.weight"].numel() for n in layer_names})
    steps = len(plans)
    per_epoch = -(-dataset.size("train") // cfg.batch_size)
    if cfg.max_batches:
        per_epoch = min(per_epoch, cfg.max_batches)
    total_epochs = cfg.epochs * steps
    total_batches = total_epochs * per_epoch
    agp = agp_timetable(total_batches, cfg.agp_end, cfg.agp_updates) if cfg.schedule == "agp" else None
    agp_updates = dict(agp.updates) if agp else {}
    phases = {p[0]: p for p in lr_phases(cfg.schedule, steps, cfg.epochs, per_epoch, cfg.rewind,
                                         agp.end_iteration if agp else 0)}
    has_val = dataset.size(cfg.eval_split) > 0
    history: list[EpochRecord] = []
    snapshots: list[Snapshot] = []
    if partial is not None:
        partial["snapshots"] = snapshots
    best_state, best_acc, best_epoch = None, None, 0
    loss_fn = nn.CrossEntropyLoss()
    t_start = time.perf_counter()
    it = 0                      # training iterations over the whole run
    epoch_no = 0
    current_plan = start
    opt: torch.optim.Optimizer | None = None
    sched = None
    enforcer: MaskEnforcer | None = None

    def remask(plan: Plan) -> MaskEnforcer:
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        masks, aux = mask_fn(plan, state)
        return MaskEnforcer(model, masks, aux, opt)

    def pruned_accuracy() -> float | None:
        """Validation accuracy right after a pruning step, BatchNorm statistics re-estimated on a few training
        batches first (the stored ones describe the unpruned weights: at 80 % sparsity digits-cnn reads 10 %
        with them and 56 % without); the training itself is left as it was (buffers restored)."""
        if not has_val:
            return None
        return _evaluate_mod.evaluate_recalibrated(model, dataset, cfg.eval_split, batch_size=cfg.batch_size,
                                                   seed=cfg.seed, cancel=cancel).accuracy

    for step, step_plan in enumerate(plans, start=1):
        before = sparsity_of(model, layer_names)
        current_plan = step_plan if cfg.schedule != "agp" else plan_at(target, start, agp_fraction(0.0, cfg.agp_end))
        enforcer = remask(current_plan)
        after = sparsity_of(model, layer_names)
        pruned_acc = pruned_accuracy()
        step_updates = 1
        step_best_state, step_best_acc = None, None
        for e in range(cfg.epochs):
            epoch_no += 1
            model.train()
            t0 = time.perf_counter()
            loss_sum, n_seen = 0.0, 0
            lr_epoch = None
            for b, (x, y) in enumerate(dataset.batches("train", batch_size=cfg.batch_size, shuffle=True,
                                                        seed=cfg.seed * 10007 + epoch_no)):
                if cfg.max_batches and b >= cfg.max_batches:
                    break
                if cancel is not None:
                    cancel.check()
                if it in agp_updates:
                    new_plan = plan_at(target, start, agp_updates[it], "linear")
                    if new_plan.layers != current_plan.layers:
                        current_plan = new_plan
                        enforcer = remask(current_plan)
                        step_updates += 1
                if it in phases:           # a new learning-rate phase: fresh optimizer, schedule from cfg.lr
                    _, length, anneal = phases[it]
                    opt = _optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
                    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, length))
                             if cfg.cosine and anneal else None)
                    enforcer.attach(opt)
                if lr_epoch is None:
                    lr_epoch = opt.param_groups[0]["lr"]   # the rate this epoch started with
                opt.zero_grad(set_to_none=True)
                out = logits_of(model(x))
                loss = loss_fn(out, y)
                if not torch.isfinite(loss):
                    raise ExplorerError("Fine-tuning diverged (the loss became NaN/inf).",
                                        "Lower the learning rate and try again.")
                loss.backward()
                opt.step()
                enforcer.apply()
                if sched is not None:
                    sched.step()
                it += 1
                loss_sum += loss.item() * x.shape[0]
                n_seen += x.shape[0]
                if b % 5 == 0:
                    frac = it / total_batches
                    el = time.perf_counter() - t_start
                    progress(Progress(frac, f"fine-tuning: step {step}/{steps}, epoch {e + 1}/{cfg.epochs}",
                                      None, el / frac * (1 - frac) if frac > 0 else None))
            ev = evaluate(model, dataset, cfg.eval_split, cancel=cancel) if has_val else None
            rec = EpochRecord(epoch=epoch_no, step=step, train_loss=loss_sum / max(1, n_seen),
                              val_accuracy=ev.accuracy if ev else None, val_loss=ev.loss if ev else None,
                              sparsity=sparsity_of(model, layer_names),
                              lr=lr_epoch if lr_epoch is not None else cfg.lr, seconds=time.perf_counter() - t0,
                              sparsity_before=before, step_sparsity=after if e == 0 else None,
                              pruned_accuracy=pruned_acc if e == 0 else None,
                              mask_updates=step_updates)
            before, step_updates = rec.sparsity, 0
            history.append(rec)
            frac = it / total_batches
            progress(Progress(frac, f"epoch {epoch_no}/{total_epochs}: val {rec.val_accuracy:.2f}%"
                              if rec.val_accuracy is not None else f"epoch {epoch_no}/{total_epochs}", rec))
            final_sparsity_reached = cfg.schedule != "agp" or current_plan.layers == target.layers
            acc = rec.val_accuracy if rec.val_accuracy is not None else -rec.train_loss
            if final_sparsity_reached and (step_best_acc is None or acc > step_best_acc):
                step_best_acc = acc
                step_best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if step == steps:
                    best_epoch = epoch_no
        if step_best_state is None:
            step_best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # continue from the best weights of this step (masks are already in them)
        model.load_state_dict(step_best_state)
        snapshots.append(Snapshot(label=f"step {step}/{steps}" if steps > 1 else "fine-tuned",
                                  plan=current_plan, state=step_best_state,
                                  val_accuracy=step_best_acc if step_best_acc is not None and step_best_acc >= 0 else None,
                                  sparsity=sparsity_of(model, layer_names)))
        best_state, best_acc = step_best_state, step_best_acc
    return FinetuneResult(state=best_state, plan=current_plan, history=history, best_epoch=best_epoch,
                          best_accuracy=best_acc if best_acc is not None and best_acc >= 0 else None,
                          snapshots=snapshots)
