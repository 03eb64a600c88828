"""Top-1 accuracy (classifiers) or perplexity (causal language models) and loss of a model on a split."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import DatasetError, ExplorerError
from ..jobs import CancelToken, ProgressFn, ProgressMeter
from ..model.data import DatasetBundle


@dataclass(frozen=True)
class EvalResult:
    split: str
    samples: int
    accuracy: float | None   # percent, None without labels (and for language models)
    loss: float | None       # mean cross-entropy per sample (per token for language models)
    perplexity: float | None = None   # language models: exp(mean next-token cross-entropy)

    def as_dict(self) -> dict:
        d = {"split": self.split, "samples": self.samples, "accuracy": self.accuracy, "loss": self.loss}
        if self.perplexity is not None:
            d["perplexity"] = self.perplexity
        return d


def logits_of(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "logits"):
        out = out.logits
    return out


def is_sequence(out: torch.Tensor, y: torch.Tensor | None) -> bool:
    """Next-token outputs (batch, positions, vocab) with labels (batch, positions)."""
    return out.dim() == 3 and y is not None and y.dim() == 2


def loss_of(out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of class scores (batch, classes), or of next-token scores (batch, positions, vocab)
    against token labels (batch, positions): the training loss of both tasks."""
    if is_sequence(out, y):
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction=reduction)
    return nn.functional.cross_entropy(out, y, reduction=reduction)


def evaluate(module: nn.Module, dataset: DatasetBundle, split: str = "test", batch_size: int = 256,
             progress: ProgressFn | None = None, cancel: CancelToken | None = None,
             limit: int | None = None) -> EvalResult:
    """Accuracy (%) and mean cross-entropy over a split. Cancelling raises :class:`Cancelled`."""
    n_total = dataset.size(split) if limit is None else min(limit, dataset.size(split))
    if n_total == 0:
        raise DatasetError(f"The {split} split of {dataset.spec} is empty: nothing to evaluate.")
    meter = ProgressMeter(progress, n_total, f"evaluating on {split}")
    was = module.training
    module.eval()
    correct = 0
    loss_sum = 0.0
    seen = tokens = 0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    try:
        with torch.inference_mode():
            for x, y in dataset.batches(split, batch_size=batch_size, limit=limit):
                if cancel is not None:
                    cancel.check()
                out = logits_of(module(x))
                if not torch.isfinite(out).all():
                    out = torch.nan_to_num(out, nan=0.0, posinf=1e4, neginf=-1e4)
                if is_sequence(out, y):
                    loss_sum += float(loss_of(out, y, "sum"))
                    tokens += y.numel()
                elif y is not None:
                    if dataset.num_classes and out.shape[1] > dataset.num_classes:
                        out = out[:, :dataset.num_classes]
                    correct += int((out.argmax(1) == y).sum())
                    loss_sum += float(loss_fn(out, y))
                seen += x.shape[0]
                meter.step(x.shape[0])
    except RuntimeError as e:
        raise ExplorerError(f"Evaluation failed: {str(e).splitlines()[0][:300]}") from None
    finally:
        module.train(was)
    if not dataset.has_labels:
        return EvalResult(split, seen, None, None)
    if tokens:
        mean = loss_sum / tokens
        return EvalResult(split, seen, None, mean, math.exp(min(mean, 700.0)))
    return EvalResult(split, seen, 100.0 * correct / seen, loss_sum / seen)
