"""What a fine-tuning run produces as it goes: a record per epoch, a snapshot per finished step."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..prune.plan import Plan


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
    val_perplexity: float | None = None    # language models (their val_accuracy is None)
    val_mse: float | None = None           # regression (tensors:PATH with float y; val_accuracy is None)

    def val_value(self, metric: str = "accuracy") -> float | None:
        """The validation value of ``metric`` (accuracy, perplexity or mse)."""
        return getattr(self, f"val_{metric}", None)

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
