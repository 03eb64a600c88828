"""A fine-tuning run's checkpoint: everything needed to carry on after the last finished epoch.

Written after every epoch (atomically, by rank 0 of a distributed run) and read back with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only, so a checkpoint needs no
trust. It holds the loop's position, the weights, the optimizer and learning-rate schedule, the masks, the
random-number state, the epochs' records and the finished steps' snapshots; and the job it belongs to (the
fine-tuning settings, the plans and the layers), so resuming a different job is refused instead of silently
mixing two runs. A resumed run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ExplorerError
from ..fileio import atomic_torch_save
from ..prune.plan import LayerPlan, Plan
from .records import EpochRecord, Snapshot

CHECKPOINT_FORMAT = "pruning-explorer-finetune-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class LoopState:
    """Where a fine-tuning run is, and what it has produced so far."""

    current_plan: Plan
    step: int = 0                 # next step to run (0-based)
    epoch_in_step: int = 0        # next epoch within it (0: the step's pruning comes first)
    it: int = 0                   # training iterations done
    epoch_no: int = 0             # epochs done
    phase_start: int | None = None   # iteration at which the current learning-rate phase began
    masks: dict | None = None
    aux: dict | None = None
    before: float | None = None   # sparsity when the next epoch begins
    after: float | None = None    # sparsity right after this step's pruning
    pruned_acc: float | None = None
    step_updates: int = 0
    step_best_state: dict | None = None
    step_best_acc: float | None = None
    best_state: dict | None = None
    best_acc: float | None = None
    best_epoch: int = 0
    history: list = field(default_factory=list)       # EpochRecord
    snapshots: list = field(default_factory=list)     # Snapshot
    # only set on a state read from a checkpoint (restored into the live objects, then dropped)
    model_state: dict | None = None
    optimizer_state: dict | None = None
    scheduler_state: dict | None = None


_PLAIN = ("step", "epoch_in_step", "it", "epoch_no", "phase_start", "masks", "aux", "before", "after",
          "pruned_acc", "step_updates", "step_best_state", "step_best_acc", "best_state", "best_acc", "best_epoch")


def plan_dict(plan: Plan) -> dict:
    return {"layers": {n: lp.to_dict() for n, lp in plan.active().items()}, "scope": plan.scope,
            "target_sparsity": plan.target_sparsity}


def plan_from_dict(d: dict) -> Plan:
    return Plan({n: LayerPlan(**lp) for n, lp in d["layers"].items()}, d["scope"], d["target_sparsity"])


def job_identity(cfg, target: Plan, start: Plan, layer_names: list[str]) -> dict:
    """What makes two runs the same job (a checkpoint only resumes its own)."""
    return {"finetune": cfg.as_dict(), "target": plan_dict(target), "start": plan_dict(start),
            "layers": list(layer_names)}


def save_loop_state(path: Path, job: dict, st: LoopState, model, optimizer, scheduler) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "job": job,
               "current_plan": plan_dict(st.current_plan),
               **{k: getattr(st, k) for k in _PLAIN},
               "history": [r.as_dict() for r in st.history],
               "snapshots": [{"label": s.label, "plan": plan_dict(s.plan), "state": s.state,
                              "val_accuracy": s.val_accuracy, "sparsity": s.sparsity,
                              "test_accuracy": s.test_accuracy} for s in st.snapshots],
               "model_state": {k: v.detach().to("cpu") for k, v in model.state_dict().items()},
               "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
               "scheduler_state": scheduler.state_dict() if scheduler is not None else None,
               "rng_state": torch.get_rng_state(),
               "cuda_rng_state": _cuda_rng(model)}
    atomic_torch_save(payload, path)


def load_loop_state(path: Path, job: dict, device: torch.device) -> LoopState:
    path = Path(path)
    if not path.is_file():
        raise ExplorerError(f"There is no checkpoint to resume from at {path}.",
                            "Run without --resume to start the fine-tuning from the beginning.")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ExplorerError(f"The checkpoint {path} cannot be read ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else 'damaged file'}).",
                            "Delete it and run without --resume to start over.") from None
    if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
        raise ExplorerError(f"{path} is not a fine-tuning checkpoint of this app.")
    if d.get("version") != CHECKPOINT_VERSION:
        raise ExplorerError(f"The checkpoint {path} has version {d.get('version')}; this app reads version "
                            f"{CHECKPOINT_VERSION}.")
    if d.get("job") != job:
        what = [k for k in ("finetune", "target", "start", "layers") if (d.get("job") or {}).get(k) != job[k]]
        names = {"finetune": "fine-tuning settings", "target": "plan", "start": "starting plan",
                 "layers": "model's layers"}
        raise ExplorerError(f"The checkpoint {path} belongs to a different job (its "
                            f"{' and '.join(names[k] for k in what) or 'settings'} differ).",
                            "Resume with the same recipe and settings, or delete the checkpoint (or choose "
                            "another --out) to start over.")
    st = LoopState(current_plan=plan_from_dict(d["current_plan"]))
    for k in _PLAIN:
        setattr(st, k, d[k])
    st.history = [EpochRecord(**r) for r in d["history"]]
    st.snapshots = [Snapshot(label=s["label"], plan=plan_from_dict(s["plan"]), state=s["state"],
                             val_accuracy=s["val_accuracy"], sparsity=s["sparsity"],
                             test_accuracy=s["test_accuracy"]) for s in d["snapshots"]]
    st.model_state, st.optimizer_state, st.scheduler_state = d["model_state"], d["optimizer_state"], \
        d["scheduler_state"]
    torch.set_rng_state(d["rng_state"])
    if device.type == "cuda" and d.get("cuda_rng_state") is not None:
        torch.cuda.set_rng_state(d["cuda_rng_state"], device)
    return st


def _cuda_rng(model) -> torch.Tensor | None:
    for p in model.parameters():
        if p.device.type == "cuda":
            return torch.cuda.get_rng_state(p.device)
        break
    return None
