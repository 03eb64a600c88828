"""Calibration statistics: what the data-aware criteria and reconstruction measure on a few training samples.

The calibration data are N samples of the *training* split (default 128), drawn with the session's seed
(the first N of a seeded permutation), so a recipe that records N and the seed reproduces every statistic
bit for bit. Statistics are taken at the kept weights (the loaded or last fine-tuned/reconstructed ones),
with the model in eval mode (BatchNorm uses its running statistics):

- ``fisher`` (hessian): the empirical Fisher diagonal, F_ii = mean over samples of (dl_n/dw_i)^2 -- the mean
  of squared *per-sample* gradients of the cross-entropy. Per-sample gradients are vectorised with torch.func
  (``vmap`` over ``grad`` of a functional call), in chunks sized so the per-sample gradients of the prunable
  weights stay under :data:`PER_SAMPLE_BUDGET_BYTES`; a model vmap cannot run falls back to a loop of
  single-sample backward passes (same numbers up to rounding). Needs labels.
- ``true_fisher`` (the instant loss estimate, ``analyse/predict.py``): the Fisher at the model's *own*
  predictions, i.e. the Gauss-Newton diagonal diag(J^T (diag p - p p^T) J) = E_x Σ_c p_c (dl_c/dw)^2 with l_c the
  loss at label c -- the curvature of the cross-entropy in the logits, which does not vanish when a converged
  model fits its samples (the empirical Fisher does: its gradients at the true labels go to zero). One label drawn
  per sample would almost always be the true one at such a model (p is nearly one-hot), so the sum runs over each
  sample's :data:`TOP_CLASSES` most probable classes, weighted by their probabilities, on the first quarter of
  the samples (the cost of the empirical Fisher). Regression targets are drawn around the output with the
  variance that makes the expectation the Gauss-Newton diagonal of the mean squared error.
- ``input_norm`` (wanda): ||X_j||_2 of each input feature over all samples -- a Linear's per input feature; a
  conv's per *input channel* (over every sample and spatial position of the input map), shared by all kernel
  positions of that channel.
- ``apoz``: the share of zeros after the ReLU that follows each layer, per output channel (see activations).
- ``bn_gamma`` (bn-scale): the following BatchNorm's weight parameter name; the |gamma| values are read from the
  kept weights, no data needed.
"""
from __future__ import annotations

import threading
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ExplorerError, PlanError
from ..jobs import CancelToken, ProgressFn, ProgressMeter
from ..model.data import DatasetBundle
from ..model.layers import logits_of

DEFAULT_CALIBRATION_SAMPLES = 128
MAX_CALIBRATION_SAMPLES = 100_000
PER_SAMPLE_BUDGET_BYTES = 256 * 2**20
TOP_CLASSES = 4      # classes per sample of the true Fisher (the most probable ones)
KINDS = ("fisher", "true_fisher", "input_norm", "apoz")


def check_samples(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CALIBRATION_SAMPLES:
        raise PlanError(f"The number of calibration samples must be a whole number from 1 to "
                        f"{MAX_CALIBRATION_SAMPLES:,} (got {n!r}).",
                        f"The default is {DEFAULT_CALIBRATION_SAMPLES}; a few hundred are plenty for the criteria.")
    return n


def calibration_batch(dataset: DatasetBundle, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The calibration data: the first ``samples`` of a seeded permutation of the training split."""
    check_samples(samples)
    n = min(samples, dataset.size("train"))
    if n == 0:
        raise ExplorerError(f"The training split of {dataset.spec} is empty: there is no calibration data.",
                            "Choose a dataset with training samples.")
    xs, ys = [], []
    for x, y in dataset.batches("train", batch_size=min(n, 1024), shuffle=True, seed=seed, limit=n):
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), (torch.cat(ys) if ys[0] is not None else None)


def _loss(out: torch.Tensor, y: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    out = logits_of(out)
    if y.is_floating_point():          # regression targets: the mean squared error
        return F.mse_loss(out.float().reshape(y.shape), y)
    if num_classes and out.shape[-1] > num_classes:
        out = out[..., :num_classes]
    return F.cross_entropy(out, y)


def fisher_diagonal(module: nn.Module, x: torch.Tensor, y: torch.Tensor, layer_names: list[str],
                    num_classes: int | None = None, chunk: int | None = None, vectorise: bool = True,
                    progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> dict[str, torch.Tensor]:
    """Empirical Fisher diagonal of every prunable weight: mean over samples of the squared per-sample gradient.
    ``module`` is a copy the caller owns (put in eval mode here)."""
    if y is None:
        raise PlanError("The hessian criterion needs labels: its Fisher is built from per-sample gradients of the "
                        "loss.", "Choose a labelled dataset, or use wanda/apoz (they work on unlabelled data).")
    return _mean_squared_grads(module, x, y, None, layer_names, num_classes, chunk, vectorise, progress, cancel,
                               "Fisher diagonal (per-sample gradients)")


def true_fisher_diagonal(module: nn.Module, x: torch.Tensor, y: torch.Tensor | None, layer_names: list[str],
                         num_classes: int | None = None, seed: int = 0, classes: int | None = TOP_CLASSES,
                         progress: ProgressFn | None = None, cancel: CancelToken | None = None
                         ) -> dict[str, torch.Tensor]:
    """The Fisher at the model's own predictions: the Gauss-Newton diagonal E_x Σ_c p_c (dl_c/dw)^2, summed over
    the ``classes`` most probable classes of each sample (None: every class -- the exact Gauss-Newton diagonal),
    on the first 1/``classes`` of the samples, so that it costs as many per-sample gradients as the empirical
    Fisher. ``y`` only says whether the task is a regression (float targets): its targets are drawn (seeded)
    around the output with the variance that makes the expectation the Gauss-Newton diagonal of the mean
    squared error. The true labels are never used."""
    module.eval()
    with torch.no_grad():
        out = torch.cat([logits_of(module(x[i:i + 256])) for i in range(0, x.shape[0], 256)]).float()
    if y is not None and y.is_floating_point():     # mean squared error: E[g g^T] = (2/d) J^T J at var d/2
        d = y[0].numel()
        gen = torch.Generator().manual_seed(seed)
        drawn = out.reshape(y.shape) + torch.randn(y.shape, generator=gen) * (d / 2) ** 0.5
        return _mean_squared_grads(module, x, drawn, None, layer_names, None, None, True, progress, cancel,
                                   "Gauss-Newton diagonal")
    if out.dim() != 2:
        raise PlanError("The Gauss-Newton curvature is computed for classifiers and regressions (outputs of shape "
                        "batch x classes).")
    if num_classes and out.shape[-1] > num_classes:
        out = out[..., :num_classes]
    c = out.shape[1] if classes is None else max(1, min(classes, out.shape[1]))
    n = x.shape[0] if classes is None else max(1, -(-x.shape[0] // c))
    p = torch.softmax(out[:n].double(), dim=-1)
    top = p.topk(c, dim=1)
    xs = x[:n].repeat_interleave(c, dim=0)
    # mean over the n*c rows of (c * p_c) * g_c^2 = (1/n) Σ_x Σ_c p_c g_c^2
    return _mean_squared_grads(module, xs, top.indices.reshape(-1), top.values.reshape(-1).float() * c,
                               layer_names, num_classes, None, True, progress, cancel, "Gauss-Newton diagonal")


def _mean_squared_grads(module, x, y, weight, layer_names, num_classes, chunk, vectorise, progress, cancel,
                        what) -> dict[str, torch.Tensor]:
    """Mean over samples of ``weight_n`` (default 1) times the squared per-sample gradient of the loss."""
    module.eval()
    mods = dict(module.named_modules())
    keys = [f"{n}.weight" for n in layer_names]
    weights = {k: mods[n].weight.detach() for k, n in zip(keys, layer_names)}
    per_sample = sum(w.numel() for w in weights.values()) * 4
    if chunk is None:
        chunk = max(1, min(64, PER_SAMPLE_BUDGET_BYTES // max(1, per_sample)))
    acc = {k: torch.zeros(w.shape, dtype=torch.float32) for k, w in weights.items()}
    meter = ProgressMeter(progress, x.shape[0], what)
    grad_fn = _vmapped(module, weights, num_classes) if vectorise else None
    for i in range(0, x.shape[0], chunk):
        if cancel is not None:
            cancel.check()
        xc, yc = x[i:i + chunk], y[i:i + chunk]
        grads = None
        if grad_fn is not None:
            try:
                grads = grad_fn(weights, xc, yc)
            except Exception:     # a model torch.func cannot vectorise: per-sample loop from here on
                grad_fn = None
        if grads is None:
            grads = _looped(module, keys, layer_names, xc, yc, num_classes)
        for k in keys:
            sq = grads[k].float().pow(2)
            if weight is not None:
                sq = sq * weight[i:i + chunk].view(-1, *([1] * (sq.dim() - 1)))
            acc[k] += sq.sum(dim=0)
        meter.step(xc.shape[0])
    n = x.shape[0]
    return {name: acc[k] / n for k, name in zip(keys, layer_names)}


def _vmapped(module: nn.Module, weights: dict[str, torch.Tensor], num_classes: int | None) -> Callable:
    from torch.func import functional_call, grad, vmap

    fixed = {k: v.detach() for k, v in module.named_parameters() if k not in weights}
    buffers = {k: v.detach() for k, v in module.named_buffers()}

    def loss_one(w, xi, yi):
        out = functional_call(module, ({**fixed, **w}, buffers), (xi.unsqueeze(0),))
        return _loss(out, yi.unsqueeze(0), num_classes)

    return vmap(grad(loss_one), in_dims=(None, 0, 0))


def _looped(module, keys, layer_names, x, y, num_classes) -> dict[str, torch.Tensor]:
    mods = dict(module.named_modules())
    params = [mods[n].weight for n in layer_names]
    out = {k: torch.empty((x.shape[0],) + tuple(p.shape)) for k, p in zip(keys, params)}
    for i in range(x.shape[0]):
        with torch.enable_grad():
            loss = _loss(module(x[i:i + 1]), y[i:i + 1], num_classes)
            gs = torch.autograd.grad(loss, params, allow_unused=True)
        for k, g, p in zip(keys, gs, params):
            out[k][i] = torch.zeros_like(p) if g is None else g.detach()
    return out


def input_norms(module: nn.Module, x: torch.Tensor, layer_names: list[str], batch_size: int = 64,
                cancel: CancelToken | None = None) -> dict[str, torch.Tensor]:
    """||X_j||_2 over the calibration data: per input feature of a Linear, per input channel of a conv."""
    mods = dict(module.named_modules())
    sums: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name, is_linear):
        def fn(_mod, inputs):
            t = inputs[0].detach().double()
            if is_linear:
                s = t.pow(2).reshape(-1, t.shape[-1]).sum(dim=0)
            else:
                s = t.pow(2).transpose(0, 1).reshape(t.shape[1], -1).sum(dim=1)
            sums[name] = s if name not in sums else sums[name] + s
        return fn

    for n in layer_names:
        handles.append(mods[n].register_forward_pre_hook(hook(n, mods[n].weight.dim() == 2)))
    module.eval()
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                if cancel is not None:
                    cancel.check()
                module(x[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {n: s.sqrt().float() for n, s in sums.items()}


class CalibrationCache:
    """Statistics of one (kept weights, dataset, seed, samples) state, computed on first use and kept until that
    state changes (``key``). Thread-safe: a worker may compute while the window reads."""

    def __init__(self):
        self.lock = threading.RLock()
        self.followers_lock = threading.Lock()   # its own lock: a long Fisher never blocks the structure lookup
        self.key: tuple | None = None
        self.stats: dict[str, dict[str, torch.Tensor]] = {}
        self.followers = None   # (module id, Followers of a single example): which BN / ReLU follows each layer

    def has(self, kind: str, key: tuple) -> bool:
        return self.key == key and kind in self.stats

    def get(self, kind: str, key: tuple, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        with self.lock:
            if self.key != key:
                self.key, self.stats = key, {}
            if kind not in self.stats:
                self.stats[kind] = compute()
            return self.stats[kind]
