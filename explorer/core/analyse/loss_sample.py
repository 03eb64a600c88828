"""A stratified sample of a split for measuring a loss change cheaply: every sample of the hard stratum, a seeded
draw from the rest, and each sample's weight so that the weighted sum estimates the whole pool's mean.

At a trained model a few low-margin samples carry most of a pruned layer's loss change; the first n samples of a
split catch them by chance, so a small increase measured on them is mostly noise. Ranking the pool once by the
dense per-sample loss and taking the ``top`` hardest exactly leaves only the small changes of the easy samples to
be sampled: the estimate is unbiased (over the draw's seed) and its spread is that of the easy stratum alone.
:func:`stratified_sample` picks the samples, :func:`gather` fetches them from a dataset, :func:`per_sample_loss`
is the loss of each and :func:`weighted_mean` the estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..device import cpu_has_bf16_matrix_units, module_device
from ..errors import DatasetError
from ..jobs import CancelToken
from ..model.layers import logits_of
from ..model.outputs import is_regression, is_sequence
from ..train.evaluate import EVAL_TOKENS

TOP_SHARE = 0.75    # share of the budget taken exactly from the highest dense losses


@dataclass(frozen=True)
class StratifiedSample:
    index: torch.Tensor       # positions in the pool (int64), the exact stratum first
    weight: torch.Tensor      # float64, per sample: 1 in the exact stratum, (pool - top) / drawn in the rest
    population: int           # the pool's size: the weights sum to it
    top: int                  # samples taken exactly (the highest scores)

    @property
    def drawn(self) -> int:
        return int(self.index.shape[0]) - self.top


def stratified_sample(scores: torch.Tensor, budget: int, top_share: float = TOP_SHARE,
                      seed: int = 0) -> StratifiedSample:
    """``budget`` positions of a pool ranked by ``scores`` (e.g. each sample's dense loss): the ``top_share`` of
    the budget with the highest scores exactly, the rest drawn uniformly without replacement (``seed``) from the
    remaining pool and weighted by its inverse sampling fraction. A budget of the whole pool takes every sample
    (weight 1): the estimate is then the pool's mean itself."""
    n = int(scores.shape[0])
    if n == 0:
        raise ValueError("stratified_sample: the pool is empty")
    budget = max(1, min(int(budget), n))
    if budget == n:
        idx = torch.arange(n)
        return StratifiedSample(idx, torch.ones(n, dtype=torch.float64), n, n)
    top = min(budget, max(0, int(round(budget * top_share))))
    if top == budget and budget < n:
        top = budget - 1          # keep one draw from the rest: without it the rest's share is not estimated
    order = torch.argsort(scores.double(), descending=True, stable=True)
    rest = order[top:]
    drawn = budget - top
    pick = rest[torch.randperm(rest.shape[0], generator=torch.Generator().manual_seed(int(seed)))[:drawn]]
    weight = torch.cat([torch.ones(top, dtype=torch.float64),
                        torch.full((drawn,), rest.shape[0] / drawn, dtype=torch.float64)])
    return StratifiedSample(torch.cat([order[:top], pick]), weight, n, top)


def weighted_mean(values: torch.Tensor, sample: StratifiedSample) -> float:
    """The pool's mean estimated from ``values`` of the sampled positions (in ``sample.index``'s order)."""
    return float((values.double() * sample.weight).sum() / sample.population)


def per_sample_loss(out, y: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Each sample's loss (float64): cross-entropy of class scores (cut to ``num_classes``), the mean next-token
    cross-entropy of a sequence, or the mean squared error over a regression sample's outputs -- the terms whose
    mean is :func:`~explorer.core.train.evaluate.evaluate`'s loss (sequences of equal length)."""
    out = logits_of(out)
    out = torch.nan_to_num(out.float(), nan=0.0, posinf=1e4, neginf=-1e4)
    if is_regression(y):
        err = (out.reshape(y.shape) - y.float()) ** 2
        return err.reshape(err.shape[0], -1).mean(1).double()
    if is_sequence(out, y):
        ce = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none")
        return ce.reshape(y.shape).mean(1).double()
    if num_classes and out.shape[1] > num_classes:
        out = out[:, :num_classes]
    return torch.nn.functional.cross_entropy(out, y, reduction="none").double()


def batch_size_for(dataset, batch_size: int = 256) -> int:
    """Samples per forward: ``batch_size``, or for next-token data about EVAL_TOKENS tokens (as evaluation does:
    256 blocks of vocabulary-wide logits would not fit)."""
    if dataset.metric == "perplexity" and dataset.input_shape:
        return max(1, min(batch_size, EVAL_TOKENS // max(1, int(dataset.input_shape[-1]))))
    return batch_size


def losses_of(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int | None,
              batch_size: int) -> torch.Tensor:
    """Each sample's loss of ``module`` on ``x``, ``batch_size`` samples per forward."""
    with torch.inference_mode():
        return torch.cat([per_sample_loss(module(x[i:i + batch_size]), y[i:i + batch_size], num_classes)
                          for i in range(0, int(x.shape[0]), batch_size)])


def dense_losses(module: torch.nn.Module, dataset, split: str, pool: int, cancel: CancelToken | None = None,
                 batch_size: int = 256) -> torch.Tensor:
    """Each sample's loss on the first ``pool`` samples of ``split`` (the ranking of :func:`stratified_sample`)."""
    parts = []
    with torch.inference_mode():
        for x, y in dataset.batches(split, batch_size=batch_size_for(dataset, batch_size), limit=pool):
            if cancel is not None:
                cancel.check()
            parts.append(per_sample_loss(module(x), y, dataset.num_classes))
    if not parts:
        raise DatasetError(f"The {split} split of {dataset.spec} is empty: nothing to estimate on.")
    return torch.cat(parts)


def gather(dataset, split: str, index: torch.Tensor, pool: int, batch_size: int = 256
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs and labels of the pool positions ``index``, in that order (one pass over the pool)."""
    want = {int(i): k for k, i in enumerate(index.tolist())}
    xs: list = [None] * len(want)
    ys: list = [None] * len(want)
    start = 0
    for x, y in dataset.batches(split, batch_size=batch_size_for(dataset, batch_size), limit=pool):
        for j in range(x.shape[0]):
            k = want.get(start + j)
            if k is not None:
                xs[k], ys[k] = x[j], y[j]
        start += x.shape[0]
    if any(v is None for v in xs):
        raise DatasetError(f"The {split} split of {dataset.spec} changed while it was read.")
    return torch.stack(xs), torch.stack(ys)


POOL = 4096         # samples of a split ranked by their dense loss (the first POOL; every sample of the built-ins)
PRECISIONS = ("auto", "fp32", "bf16")
# 'auto' takes bfloat16 from this many multiply-accumulates per sample: below it a forward is overhead-bound and
# the casts cost more than they save (sampled part, bfloat16 vs float32, interleaved on 2 loaded cores: digits-mlp,
# 0.05 M, 1.35x slower; digits-cnn, 1.5 M, 1.7x slower; digits-vgg, 85 M, 1.2-1.5x faster)
BF16_MIN_MACS = 10**7
# a bfloat16 pass stacks this many times the variants a float32 one does: digits-vgg's 36 points took 8.4 s at 4
# variants a pass against 11.1 s at 1 (float32: 12.5 s and 13.3 s; one run, interleaved, 2 loaded cores)
BF16_STACK = 4


class SampledLossChange:
    """The loss change of weight variants of ``module`` on ``split``, estimated on a :func:`stratified_sample` of
    ``budget`` samples from its first ``pool``: per-sample differences (variant minus dense, the same samples and
    the same arithmetic), weighted. The forwards replay only the part of the network downstream of the changed
    layer (``replay.py``) when the replay reproduces the full forward on the sample; otherwise they are full.

    ``precision``: 'bf16' replays the changed part in bfloat16 (autocast) -- and the dense weights the same way,
    once per changed layer, so the per-sample differences compare like with like; 'auto' (default) does so where
    the CPU has bfloat16 matrix units (:func:`~explorer.core.device.cpu_has_bf16_matrix_units`), the replay is
    used and the model has at least :data:`BF16_MIN_MACS` per sample (``macs``; None: not known, not checked),
    else float32 ('fp32')."""

    def __init__(self, module: torch.nn.Module, dataset, split: str, budget: int, pool: int = POOL, seed: int = 0,
                 cancel: CancelToken | None = None, stratify: bool = True, precision: str = "auto",
                 macs: int | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.module = module.eval()
        self.num_classes = dataset.num_classes
        if stratify:
            self.pool = min(int(pool), dataset.size(split))
            self.sample = stratified_sample(dense_losses(module, dataset, split, self.pool, cancel), budget,
                                            seed=seed)
        else:       # the first ``budget`` samples, unweighted (the estimate before stratification; benchmarks)
            self.pool = min(int(budget), dataset.size(split))
            self.sample = StratifiedSample(torch.arange(self.pool), torch.ones(self.pool, dtype=torch.float64),
                                           self.pool, self.pool)
        self.x, self.y = gather(dataset, split, self.sample.index, self.pool)
        self.params = dict(module.named_parameters())
        self.batch = batch_size_for(dataset)
        # the replay holds every activation of the sample at once, and stacks variants: only where the scan
        # replays too (accuracy data, the sample in one batch); else full forwards of ``batch`` samples
        self.replayer = None
        if dataset.metric == "accuracy" and int(self.x.shape[0]) <= self.batch:
            with torch.inference_mode():
                self.replayer = _replayer(module, self.x, logits_of(module(self.x)))
        self.checked = False
        self._bf16_base: dict = {}
        self.bf16 = self.replayer is not None and (
            precision == "bf16" or precision == "auto" and cpu_has_bf16_matrix_units()
            and (macs is None or macs >= BF16_MIN_MACS)) and \
            module_device(module).type == "cpu"
        self.dense_full = losses_of(module, self.x, self.y, self.num_classes, self.batch)
        self.dense_replay = per_sample_loss(self.replayer.output, self.y, self.num_classes) \
            if self.replayer is not None else None

    @property
    def precision(self) -> str:
        """What the variants' forwards ran in: 'bf16' or 'fp32'."""
        return "bf16" if self.bf16 and self.replayer is not None else "fp32"

    def per_pass(self, k: int) -> int:
        """How many of ``k`` variants one call of :meth:`changes` computes together (the replay stacks them)."""
        if self.replayer is None:
            return 1
        if self.bf16:   # half the bytes per activation, and AMX tiles want tall matrices: stack more
            return min(k, BF16_STACK * self.replayer.variants_per_pass(k))
        return self.replayer.variants_per_pass(k)

    def changes(self, variants: list[dict[str, torch.Tensor]], cancel: CancelToken | None = None) -> list[float]:
        """The estimated mean loss change of each variant (parameter name -> tensor, swapped in for the pass)."""
        out = []
        if self.replayer is not None and not self.checked and variants:
            self.checked = True     # as the scan does: replaying the dense weights must give the full forward
            dense = {k: self.params[k].detach() for k in variants[0]}
            try:
                again = self.replayer.run_variants({k.rsplit(".", 1)[0] for k in dense}, [dense])
                if not torch.allclose(again, self.replayer.output, rtol=1e-4, atol=1e-5):
                    self.replayer = None
            except Exception:
                self.replayer = None
        if self.replayer is not None:
            n = int(self.x.shape[0])
            per = self.per_pass(len(variants))
            for i in range(0, len(variants), per):
                if cancel is not None:
                    cancel.check()
                chunk = variants[i:i + per]
                changed = {k.rsplit(".", 1)[0] for v in chunk for k in v}
                if self.bf16:
                    base = self._bf16_dense(changed, {k for v in chunk for k in v})
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        logits = self.replayer.run_variants(changed, chunk)
                    out += [self._change(logits[j * n:(j + 1) * n], base) for j in range(len(chunk))]
                else:
                    logits = self.replayer.run_variants(changed, chunk)
                    out += [self._change(logits[j * n:(j + 1) * n], self.dense_replay) for j in range(len(chunk))]
            return out
        for v in variants:
            if cancel is not None:
                cancel.check()
            saved = {k: self.params[k].data for k in v}
            try:
                for k, t in v.items():
                    self.params[k].data = t.to(saved[k].device)
                out.append(weighted_mean(losses_of(self.module, self.x, self.y, self.num_classes, self.batch)
                                         - self.dense_full, self.sample))
            finally:
                for k, t in saved.items():
                    self.params[k].data = t
        return out

    def _bf16_dense(self, changed: set[str], keys: set[str]) -> torch.Tensor:
        """Each sample's dense loss with the part downstream of ``changed`` replayed in bfloat16, as the variants
        are: the baseline of their differences (once per changed layer)."""
        key = frozenset(changed)
        if key not in self._bf16_base:
            dense = {k: self.params[k].detach() for k in keys}
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = self.replayer.run_variants(changed, [dense])
            self._bf16_base = {key: per_sample_loss(logits, self.y, self.num_classes)}   # the latest layer only
        return self._bf16_base[key]

    def _change(self, logits, dense: torch.Tensor) -> float:
        return weighted_mean(per_sample_loss(logits, self.y, self.num_classes) - dense, self.sample)


def _replayer(module, x, full):
    """A suffix replayer of ``module`` on ``x`` if it reproduces the full forward ``full``; else None."""
    from .replay import Replayer
    try:
        r = Replayer(module, x)
        if r.output.shape == full.shape and torch.allclose(r.output, full, rtol=1e-4, atol=1e-5):
            return r
    except Exception:       # not traceable by torch.fx (data-dependent control flow, ...): full forwards
        pass
    return None
