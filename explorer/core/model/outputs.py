"""What a model's output is measured against: sequences of next tokens, class ids, or regression targets, and the
training loss of each (cross-entropy, or the mean squared error). Used by evaluation, fine-tuning and the
calibration statistics alike, so it sits with the model."""
from __future__ import annotations

import torch
from torch import nn


def is_sequence(out: torch.Tensor, y: torch.Tensor | None) -> bool:
    """Next-token outputs (batch, positions, vocab) with labels (batch, positions)."""
    return out.dim() == 3 and y is not None and y.dim() == 2 and not y.is_floating_point()


def is_regression(y: torch.Tensor | None) -> bool:
    """Float labels: targets of a regression (measured by the mean squared error), not class ids."""
    return y is not None and y.is_floating_point()


def loss_of(out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of class scores (batch, classes), or of next-token scores (batch, positions, vocab)
    against token labels (batch, positions): the training loss of both tasks. Float labels (regression): the
    mean squared error (``reduction="sum"``: summed over samples and outputs)."""
    if is_regression(y):
        return nn.functional.mse_loss(out.float().reshape(y.shape), y, reduction=reduction)
    if is_sequence(out, y):
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction=reduction)
    return nn.functional.cross_entropy(out, y, reduction=reduction)
