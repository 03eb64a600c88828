"""Top-1 accuracy and loss of a model on a dataset split."""
from __future__ import annotations

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
    accuracy: float | None   # percent, None without labels
    loss: float | None

    def as_dict(self) -> dict:
        return {"split": self.split, "samples": self.samples, "accuracy": self.accuracy, "loss": self.loss}


def logits_of(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "logits"):
        out = out.logits
    return out


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
    seen = 0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    try:
        with torch.inference_mode():
            for x, y in dataset.batches(split, batch_size=batch_size, limit=limit):
                if cancel is not None:
                    cancel.check()
                out = logits_of(module(x))
                if not torch.isfinite(out).all():
                    out = torch.nan_to_num(out, nan=0.0, posinf=1e4, neginf=-1e4)
                if y is not None:
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
    return EvalResult(split, seen, 100.0 * correct / seen, loss_sum / seen)
