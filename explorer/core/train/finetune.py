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
import os
import signal
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ExplorerError, PlanError
from ..jobs import CancelToken, Progress, ProgressFn
from ..model.data import DatasetBundle
from ..model.layers import load_state, logits_of, weight_key
from ..prune.plan import Plan
from . import evaluate as _evaluate_mod
from .checkpoint import LoopState, job_identity, load_loop_state, save_loop_state
from .distributed import Runtime, digest, kill_after
from .evaluate import evaluate, loss_of
from .masking import MaskEnforcer, sparsity_of  # noqa: F401  (re-exported: the fine-tuning API)
from .records import EpochRecord, Snapshot
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


@dataclass
class FinetuneResult:
    state: dict[str, torch.Tensor]
    plan: Plan
    history: list[EpochRecord]
    best_epoch: int
    best_accuracy: float | None
    snapshots: list[Snapshot] = field(default_factory=list)
    resumed_from_epoch: int | None = None    # the epoch a resumed run carried on after
    mask_digests: list[str] = field(default_factory=list)   # per rank, of the last masks (distributed runs)
    state_digests: list[str] = field(default_factory=list)  # per rank, of the returned weights (distributed runs)


MaskFn = Callable[[Plan, dict[str, torch.Tensor]], tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]


def _optimizer(cfg: FinetuneConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def batches_per_epoch(n_train: int, batch_size: int, world_size: int = 1) -> int:
    """Training batches each process runs per epoch (with ``world_size`` processes sharing every batch of
    ``batch_size``, padded as :class:`~explorer.core.model.data.Shard` pads)."""
    if world_size <= 1:
        return -(-n_train // batch_size)
    padded = -(-n_train // world_size) * world_size
    return -(-padded // (-(-batch_size // world_size) * world_size))


def step_plans(cfg: FinetuneConfig, target: Plan, start: Plan, sizes: dict[str, int]) -> list[Plan]:
    """The plan each step prunes to (one step for one-shot and AGP)."""
    if cfg.schedule == "iterative":
        return iterative_plans(target, start, cfg.steps, cfg.spacing, cfg.step_sparsities, sizes)
    return [target]


def finetune(module: nn.Module, dataset: DatasetBundle, layer_names: list[str], target: Plan, start: Plan,
             mask_fn: MaskFn, cfg: FinetuneConfig, progress: ProgressFn | None = None,
             cancel: CancelToken | None = None, partial: dict | None = None, runtime: "Runtime | None" = None,
             checkpoint: Path | None = None, resume: bool = False) -> FinetuneResult:
    """Fine-tune a copy of ``module`` towards ``target`` (from ``start``) with the chosen schedule.

    ``mask_fn(plan, state)`` computes masks for a plan from given (CPU) weights (re-ranking them).
    ``partial`` (optional dict) receives ``snapshots`` as steps finish, so a cancelled run can
    still return to its last completed step.
    ``runtime`` (:mod:`.distributed`): the device, and the process group of a data-parallel run; the masks are
    then computed on rank 0, broadcast and checked identical on every rank.
    ``checkpoint``: a file written (by rank 0, atomically) after every epoch; with ``resume`` the run
    continues from it (same settings and plan, else refused) and ends with the same weights as an
    uninterrupted run.
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
    return _Training(module, dataset, layer_names, target, start, mask_fn, cfg, progress, cancel, partial,
                     runtime or Runtime(), checkpoint, resume).run()


class _Training:
    """One fine-tuning run. Its loop position and everything it has produced live in ``self.st``
    (:class:`~.checkpoint.LoopState`), which is what a checkpoint holds: a resumed run restores it and
    carries on at the next epoch."""

    def __init__(self, module, dataset, layer_names, target, start, mask_fn, cfg, progress, cancel, partial,
                 runtime: "Runtime", checkpoint, resume):
        self.dataset, self.layer_names, self.target, self.start = dataset, layer_names, target, start
        self.mask_fn, self.cfg, self.cancel, self.rt = mask_fn, cfg, cancel, runtime
        self.progress = progress or (lambda p: None)
        self.checkpoint_path = Path(checkpoint) if checkpoint is not None else None
        torch.manual_seed(cfg.seed)
        self.model = copy.deepcopy(module).to(runtime.device)
        self.model.train()
        self.net = runtime.wrap(self.model)          # DistributedDataParallel when distributed
        params = dict(self.model.named_parameters())
        self.plans = step_plans(cfg, target, start, {n: params[weight_key(self.model, n)].numel() for n in layer_names})
        self.steps = len(self.plans)
        per_epoch = batches_per_epoch(dataset.size("train"), cfg.batch_size, runtime.world_size)
        self.per_epoch = min(per_epoch, cfg.max_batches) if cfg.max_batches else per_epoch
        self.total_epochs = cfg.epochs * self.steps
        self.total_batches = self.total_epochs * self.per_epoch
        self.agp = agp_timetable(self.total_batches, cfg.agp_end, cfg.agp_updates) if cfg.schedule == "agp" else None
        self.agp_updates = dict(self.agp.updates) if self.agp else {}
        self.phases = {p[0]: p for p in lr_phases(cfg.schedule, self.steps, cfg.epochs, self.per_epoch, cfg.rewind,
                                                  self.agp.end_iteration if self.agp else 0)}
        self.has_val = dataset.size(cfg.eval_split) > 0
        self.opt: torch.optim.Optimizer | None = None
        self.sched = None
        self.enforcer: MaskEnforcer | None = None
        self.job = job_identity(cfg, target, start, layer_names)
        self.st = LoopState(current_plan=start)
        self.resumed_from: int | None = None
        self.mask_digests: list[str] = []
        if resume:
            self._resume()
        if partial is not None:
            partial["snapshots"] = self.st.snapshots
        self.t_start = time.perf_counter()
        self.it_start = self.st.it

    # ------------------------------------------------------------------ masks
    def remask(self, plan: Plan) -> None:
        """Masks for ``plan`` from the current weights: computed on rank 0 (on the CPU), broadcast, checked."""
        masks = aux = None
        if self.rt.is_main:
            state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            masks, aux = self.mask_fn(plan, state)
        masks, aux = self.rt.broadcast((masks, aux))
        self._set_masks(masks, aux)

    def _set_masks(self, masks: dict, aux: dict) -> None:
        self.st.masks, self.st.aux = masks, aux
        if self.rt.distributed:
            self.mask_digests = self.rt.check_same(digest({**masks, **{f"aux:{k}": v for k, v in aux.items()}}),
                                                   "pruning masks")
        dev = self.rt.device
        self.enforcer = MaskEnforcer(self.model, {k: v.to(dev) for k, v in masks.items()},
                                     {k: v.to(dev) for k, v in aux.items()}, self.opt)

    def pruned_accuracy(self) -> float | None:
        """Validation accuracy right after a pruning step, BatchNorm statistics re-estimated on a few training
        batches first (the stored ones describe the unpruned weights: at 80 % sparsity digits-cnn reads 10 %
        with them and 56 % without); the training itself is left as it was (buffers restored)."""
        if not self.has_val:
            return None
        return _evaluate_mod.evaluate_recalibrated(self.model, self.dataset, self.cfg.eval_split,
                                                   batch_size=self.cfg.batch_size, seed=self.cfg.seed,
                                                   cancel=self.cancel, runtime=self.rt).accuracy

    def new_phase(self, it: int) -> None:
        """A new learning-rate phase starting at iteration ``it``: fresh optimizer, schedule from cfg.lr."""
        _, length, anneal = self.phases[it]
        self.opt = _optimizer(self.cfg, [p for p in self.model.parameters() if p.requires_grad])
        self.sched = (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, max(1, length))
                      if self.cfg.cosine and anneal else None)
        self.st.phase_start = it
        self.enforcer.attach(self.opt)

    def state_copy(self) -> dict[str, torch.Tensor]:
        """The weights now, on the CPU (what snapshots and the result hold, whatever the device)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------------ the loop
    def run(self) -> FinetuneResult:
        st, cfg = self.st, self.cfg
        while st.step < self.steps:
            step = st.step + 1
            step_plan = self.plans[st.step]
            if st.epoch_in_step == 0:
                st.before = sparsity_of(self.model, self.layer_names)
                st.current_plan = (step_plan if cfg.schedule != "agp"
                                   else plan_at(self.target, self.start, agp_fraction(0.0, cfg.agp_end)))
                self.remask(st.current_plan)
                st.after = sparsity_of(self.model, self.layer_names)
                st.pruned_acc = self.pruned_accuracy()
                st.step_updates = 1
                st.step_best_state, st.step_best_acc = None, None
            while st.epoch_in_step < cfg.epochs:
                self.epoch(step, st.epoch_in_step)
                st.epoch_in_step += 1
                if st.epoch_in_step == cfg.epochs:
                    self.end_step(step)
                self.save_checkpoint()
            st.step += 1
            st.epoch_in_step = 0
        state_digests = self.rt.gather(digest(st.best_state)) if self.rt.distributed else []
        return FinetuneResult(state=st.best_state, plan=st.current_plan, history=st.history,
                              best_epoch=st.best_epoch,
                              best_accuracy=st.best_acc if st.best_acc is not None and st.best_acc >= 0 else None,
                              snapshots=st.snapshots, resumed_from_epoch=self.resumed_from,
                              mask_digests=self.mask_digests, state_digests=state_digests)

    def epoch(self, step: int, e: int) -> None:
        st, cfg, rt = self.st, self.cfg, self.rt
        st.epoch_no += 1
        self.model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
        n_seen = 0
        lr_epoch = None
        batches = self.dataset.batches("train", batch_size=cfg.batch_size, shuffle=True,
                                       seed=cfg.seed * 10007 + st.epoch_no, shard=rt.shard(), device=rt.device)
        for b, (x, y) in enumerate(batches):
            if cfg.max_batches and b >= cfg.max_batches:
                break
            if self.cancel is not None:
                self.cancel.check()
            if st.it in self.agp_updates:
                new_plan = plan_at(self.target, self.start, self.agp_updates[st.it], "linear")
                if new_plan.layers != st.current_plan.layers:
                    st.current_plan = new_plan
                    self.remask(st.current_plan)
                    st.step_updates += 1
            if st.it in self.phases:
                self.new_phase(st.it)
            if lr_epoch is None:
                lr_epoch = self.opt.param_groups[0]["lr"]   # the rate this epoch started with
            self.opt.zero_grad(set_to_none=True)
            out = logits_of(self.net(x))
            loss = loss_of(out, y)
            if not torch.isfinite(loss):
                raise ExplorerError("Fine-tuning diverged (the loss became NaN/inf).",
                                    "Lower the learning rate and try again.")
            loss.backward()
            self.opt.step()
            self.enforcer.apply()
            if self.sched is not None:
                self.sched.step()
            st.it += 1
            loss_sum += loss.detach().double() * x.shape[0]
            n_seen += x.shape[0]
            if b % 5 == 0:
                frac = st.it / self.total_batches
                done = (st.it - self.it_start) / self.total_batches
                el = time.perf_counter() - self.t_start
                self.progress(Progress(frac, f"fine-tuning: step {step}/{self.steps}, epoch {e + 1}/{cfg.epochs}",
                                       None, el / done * (1 - frac) if done > 0 else None))
        train_loss, n_seen = rt.sum(float(loss_sum), n_seen)
        ev = evaluate(self.model, self.dataset, cfg.eval_split, cancel=self.cancel, runtime=rt) \
            if self.has_val else None
        rec = EpochRecord(epoch=st.epoch_no, step=step, train_loss=train_loss / max(1, n_seen),
                          val_accuracy=ev.accuracy if ev else None, val_loss=ev.loss if ev else None,
                          sparsity=sparsity_of(self.model, self.layer_names),
                          lr=lr_epoch if lr_epoch is not None else cfg.lr, seconds=time.perf_counter() - t0,
                          sparsity_before=st.before, step_sparsity=st.after if e == 0 else None,
                          pruned_accuracy=st.pruned_acc if e == 0 else None,
                          mask_updates=st.step_updates, val_perplexity=ev.perplexity if ev else None,
                          val_mse=ev.mse if ev else None)
        st.before, st.step_updates = rec.sparsity, 0
        st.history.append(rec)
        frac = st.it / self.total_batches
        head = f"epoch {st.epoch_no}/{self.total_epochs}"
        self.progress(Progress(frac, f"{head}: val {rec.val_accuracy:.2f}%" if rec.val_accuracy is not None else
                               (f"{head}: val perplexity {rec.val_perplexity:.2f}"
                                if rec.val_perplexity is not None else
                                f"{head}: val mean squared error {rec.val_mse:.4g}"
                                if rec.val_mse is not None else head), rec))
        final_sparsity_reached = cfg.schedule != "agp" or st.current_plan.layers == self.target.layers
        # best epoch: highest val accuracy, else lowest val loss (= lowest perplexity), else lowest train loss
        acc = rec.val_accuracy if rec.val_accuracy is not None else \
            -(rec.val_loss if rec.val_loss is not None else rec.train_loss)
        if final_sparsity_reached and (st.step_best_acc is None or acc > st.step_best_acc):
            st.step_best_acc = acc
            st.step_best_state = self.state_copy()
            if step == self.steps:
                st.best_epoch = st.epoch_no

    def end_step(self, step: int) -> None:
        """Continue from the best weights of this step (masks are already in them); keep it as a snapshot."""
        st = self.st
        if st.step_best_state is None:
            st.step_best_state = self.state_copy()
        if self.rt.distributed:
            # the weights agree across ranks (averaged gradients); BatchNorm's running statistics saw each rank's
            # own batches: everyone takes rank 0's, so all ranks hold exactly the model rank 0 writes
            names = [k for k, _ in self.model.named_buffers() if k in st.step_best_state]
            st.step_best_state.update(self.rt.broadcast({k: st.step_best_state[k] for k in names}))
        load_state(self.model, st.step_best_state)
        st.snapshots.append(Snapshot(label=f"step {step}/{self.steps}" if self.steps > 1 else "fine-tuned",
                                     plan=st.current_plan, state=st.step_best_state,
                                     val_accuracy=(st.step_best_acc if st.step_best_acc is not None
                                                   and st.step_best_acc >= 0 else None),
                                     sparsity=sparsity_of(self.model, self.layer_names)))
        st.best_state, st.best_acc = st.step_best_state, st.step_best_acc

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None:
            return
        if self.rt.is_main:
            save_loop_state(self.checkpoint_path, self.job, self.st, self.model, self.opt, self.sched)
        self.rt.barrier()
        if kill_after(self.st.epoch_no):
            os.kill(os.getpid(), signal.SIGKILL)

    def _resume(self) -> None:
        path = self.checkpoint_path
        if path is None:
            raise ExplorerError("Resuming needs a checkpoint file.")
        self.st = load_loop_state(path, self.job, self.rt.device)
        load_state(self.model, self.st.model_state)
        self.st.model_state = None
        self._set_masks(self.st.masks, self.st.aux)
        if self.st.phase_start is not None:
            self.new_phase(self.st.phase_start)
            self.opt.load_state_dict(self.st.optimizer_state)
            if self.sched is not None and self.st.scheduler_state is not None:
                self.sched.load_state_dict(self.st.scheduler_state)
            self.enforcer.attach(self.opt)
        self.st.optimizer_state = self.st.scheduler_state = None
        self.resumed_from = self.st.epoch_no
