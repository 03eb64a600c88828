"""Top-1 accuracy (classifiers), perplexity (causal language models) or mean squared error (regression: float
labels) and loss of a model on a split."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..device import module_device
from ..errors import DatasetError, ExplorerError
from ..jobs import CancelToken, ProgressFn, ProgressMeter
from ..model.data import DatasetBundle
from ..model.layers import logits_of
from ..model.outputs import is_regression, is_sequence, loss_of  # noqa: F401  (the evaluation API)

if TYPE_CHECKING:
    from .distributed import Runtime


EVAL_TOKENS = 8192   # tokens per evaluation batch of next-token data (see evaluate)


@dataclass(frozen=True)
class EvalResult:
    split: str
    samples: int
    accuracy: float | None   # percent, None without labels (and for language models)
    loss: float | None       # mean cross-entropy per sample (per token for language models)
    perplexity: float | None = None   # language models: exp(mean next-token cross-entropy)
    mse: float | None = None          # regression: mean over samples and outputs of the squared error (= loss)

    def as_dict(self) -> dict:
        d = {"split": self.split, "samples": self.samples, "accuracy": self.accuracy, "loss": self.loss}
        if self.perplexity is not None:
            d["perplexity"] = self.perplexity
        if self.mse is not None:
            d["mse"] = self.mse
        return d


def evaluate(module: nn.Module, dataset: DatasetBundle, split: str = "test", batch_size: int = 256,
             progress: ProgressFn | None = None, cancel: CancelToken | None = None,
             limit: int | None = None, runtime: "Runtime | None" = None) -> EvalResult:
    """Accuracy (%) and mean cross-entropy over a split. Cancelling raises :class:`Cancelled`.

    The data goes to the module's device (in-memory splits once). With a distributed ``runtime`` every
    process evaluates its share of the split and the sums are all-reduced: every rank returns the same numbers.
    """
    if dataset.metric == "perplexity" and dataset.input_shape:
        # next-token data: a batch of 256 blocks of T tokens makes (256·T × vocabulary) logits that leave the
        # CPU's caches; about EVAL_TOKENS tokens a batch evaluates tiny-lm's test split a third faster (the
        # perplexity moves in its 7th digit: the sums are added in another order)
        batch_size = max(1, min(batch_size, EVAL_TOKENS // max(1, int(dataset.input_shape[-1]))))
    n_total = dataset.size(split) if limit is None else min(limit, dataset.size(split))
    if n_total == 0:
        raise DatasetError(f"The {split} split of {dataset.spec} is empty: nothing to evaluate.")
    meter = ProgressMeter(progress, n_total, f"evaluating on {split}")
    was = module.training
    module.eval()
    device = module_device(module)
    correct = torch.zeros((), dtype=torch.int64, device=device)   # summed on the device: no sync per batch
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = tokens = values = 0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    shard = runtime.shard(pad=False) if runtime is not None else None
    try:
        with torch.inference_mode():
            for x, y in dataset.batches(split, batch_size=batch_size, limit=limit, shard=shard, device=device):
                if cancel is not None:
                    cancel.check()
                out = logits_of(module(x))
                if not torch.isfinite(out).all():
                    out = torch.nan_to_num(out, nan=0.0, posinf=1e4, neginf=-1e4)
                if is_regression(y):
                    loss_sum += loss_of(out, y, "sum").double()
                    values += y.numel()
                elif is_sequence(out, y):
                    loss_sum += loss_of(out.float(), y, "sum").double()
                    tokens += y.numel()
                elif y is not None:
                    if dataset.num_classes and out.shape[1] > dataset.num_classes:
                        out = out[:, :dataset.num_classes]
                    correct += (out.argmax(1) == y).sum()
                    loss_sum += loss_fn(out.float(), y).double()
                seen += x.shape[0]
                meter.step(x.shape[0])
    except RuntimeError as e:
        raise ExplorerError(f"Evaluation failed: {str(e).splitlines()[0][:300]}") from None
    finally:
        module.train(was)
    n_correct, total_loss = int(correct), float(loss_sum)
    if runtime is not None and runtime.distributed:
        n_correct, total_loss, seen, tokens, values = runtime.sum(n_correct, total_loss, seen, tokens, values)
        n_correct, seen, tokens, values = int(n_correct), int(seen), int(tokens), int(values)
    if not dataset.has_labels:
        return EvalResult(split, seen, None, None)
    if values:
        mse = total_loss / values
        return EvalResult(split, seen, None, mse, mse=mse)
    if tokens:
        mean = total_loss / tokens
        return EvalResult(split, seen, None, mean, math.exp(min(mean, 700.0)))
    return EvalResult(split, seen, 100.0 * n_correct / seen, total_loss / seen)


RECALIBRATION_BATCHES = 20   # training batches that re-estimate BatchNorm statistics after a mask change


def evaluate_recalibrated(module: nn.Module, dataset: DatasetBundle, split: str = "val", batch_size: int = 32,
                          seed: int = 0, batches: int = RECALIBRATION_BATCHES,
                          cancel: CancelToken | None = None, runtime: "Runtime | None" = None) -> EvalResult:
    """:func:`evaluate` with every BatchNorm's running statistics first re-estimated from ``batches`` training
    batches (seeded), then put back as they were: the accuracy a just-pruned network has once its statistics
    describe its weights, without changing the module. Without BatchNorm it is :func:`evaluate`."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return evaluate(module, dataset, split, cancel=cancel, runtime=runtime)
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in bns]
    try:
        def feed():
            for i, (x, y) in enumerate(dataset.batches("train", batch_size=batch_size, shuffle=True, seed=seed,
                                                       device=module_device(module))):
                if i >= batches:
                    return
                if cancel is not None:
                    cancel.check()
                yield x, y
        recalibrate_batchnorm(module, feed())
        return evaluate(module, dataset, split, cancel=cancel, runtime=runtime)
    finally:
        with torch.no_grad():
            for m, sd in zip(bns, saved):
                m.load_state_dict(sd)


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, batches) -> bool:
    """Re-estimate every BatchNorm's running statistics from ``batches``: after a mask change the stored ones
    describe the unpruned weights. The module stays in eval mode (dropout off, nothing trains); each BatchNorm
    normalises with its batch's statistics, as in training, and its running mean/variance become the average of
    them over the batches (what ``momentum=None`` gives). Returns whether there was any BatchNorm."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return False
    modes = {m: m.training for m in module.modules()}
    stored = {m: (m.running_mean, m.running_var) for m in bns}
    sums: dict = {m: [0.0, 0.0, 0] for m in bns}

    def collect(m, inputs):
        x = inputs[0]
        dims = [0] + list(range(2, x.dim()))
        acc = sums[m]
        acc[0] = acc[0] + x.mean(dims)
        acc[1] = acc[1] + x.var(dims, unbiased=True)
        acc[2] += 1
    handles = [m.register_forward_pre_hook(collect) for m in bns]
    module.eval()
    for m in bns:            # without running statistics a BatchNorm normalises with the batch's own
        m.running_mean, m.running_var = None, None
    try:
        for x, _ in batches:
            module(x)
    finally:
        for h in handles:
            h.remove()
        for m, (mean, var) in stored.items():
            m.running_mean, m.running_var = mean, var
        for m, mode in modes.items():
            m.training = mode
    for m in bns:
        mean_sum, var_sum, n = sums[m]
        if n:
            m.running_mean.copy_(mean_sum / n)
            m.running_var.copy_(var_sum / n)
            if m.num_batches_tracked is not None:
                m.num_batches_tracked.add_(n)
    return True
