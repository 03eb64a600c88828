"""Depth pruning: how much each block of the model's block stack matters, and the metric as blocks are dropped.

- **Block Influence** (ShortGPT, Men et al. 2024): 1 - the mean cosine similarity between a block's input and
  output hidden states over the calibration samples (per token of a transformer's hidden states; per position of
  a CNN's feature map, over its channels). A block that barely changes its input has a low influence and is the
  first to drop.
- **Metric when skipped**: the validation-split metric (accuracy, or a language model's perplexity) with that one
  block replaced by the identity (``model/blocks.skipping``) -- the measured counterpart of the influence.
- **The depth curve**: the metric with the k least influential skippable blocks skipped, k = 0, 1, ..., n.

``blocks_to_drop(n_skippable, sparsity)`` is the rounding of the ``block`` granularity: floor(S·n + 0.5) blocks
(half rounds up), never more than n.

The functions take a flow's ``Snapshot`` (``snap``: its ``model()``, ``calibration``, ``dataset``); the window and
the benchmarks pass ``session.snapshot()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..device import module_device, on_device
from ..errors import PlanError
from ..jobs import CancelToken, Progress, ProgressFn
from ..model.blocks import BlockStack, find_blocks, first_tensor, skipping
from ..train.evaluate import evaluate
from ..train.metric import metric_of
from .latency import latency_input

SELECTION_SPLIT = "val"      # selection uses the validation split; reports use test


@dataclass
class BlockScore:
    path: str
    skippable: bool
    influence: float | None              # 1 - mean cos(input, output); None when not skippable
    metric_when_skipped: float | None = None
    why: str = ""

    def as_dict(self) -> dict:
        d = {"path": self.path, "skippable": self.skippable, "influence": self.influence,
             "metric_when_skipped": self.metric_when_skipped}
        if self.why:
            d["why"] = self.why
        return d


@dataclass
class DepthAnalysis:
    stack: BlockStack
    blocks: list[BlockScore]
    metric: str
    split: str
    dense_metric: float | None = None
    curve: list[dict] = field(default_factory=list)     # [{"dropped": k, "blocks": [...], "metric": v}]

    def order(self) -> list[str]:
        """Skippable blocks, least influential first (ties: the later block first)."""
        ok = [b for b in self.blocks if b.skippable and b.influence is not None]
        return [b.path for b in sorted(ok, key=lambda b: (b.influence, -self.stack.paths.index(b.path)))]

    def as_dict(self) -> dict:
        return {"kind": self.stack.kind, "metric": self.metric, "split": self.split,
                "dense_metric": self.dense_metric, "blocks": [b.as_dict() for b in self.blocks],
                "curve": self.curve}


def blocks_to_drop(n_skippable: int, sparsity: float) -> int:
    if not isinstance(sparsity, (int, float)) or math.isnan(sparsity) or not 0.0 <= sparsity <= 1.0:
        raise PlanError(f"The block sparsity must be between 0 and 1 (got {sparsity}).")
    return min(n_skippable, int(math.floor(sparsity * n_skippable + 0.5)))


def block_stack(snap) -> BlockStack:
    """The snapshot's model's block stack (skippability checked on an example input), or a clear refusal."""
    example = latency_input(snap.dataset, snap.input_shape, 1)
    stack = find_blocks(snap.model(), example)
    if stack is None:
        raise PlanError(f"{snap.model_spec} has no stack of repeated blocks to drop (the block granularity needs "
                        "transformer layers in a ModuleList, or residual blocks as in a ResNet).",
                        "Use element, n:m, kernel or channel granularity for this model.")
    if not stack.skippable:
        raise PlanError(f"None of the {len(stack.blocks)} blocks of {snap.model_spec} can be skipped: each one "
                        "changes the shape of what it gets.")
    return stack


def _cos_per_position(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of x and y per token (last dimension) or, for a feature map, per position (channels)."""
    if x.dim() == 4:
        x, y = x.movedim(1, -1), y.movedim(1, -1)
    x = x.reshape(-1, x.shape[-1]).double()
    y = y.reshape(-1, y.shape[-1]).double()
    return F.cosine_similarity(x, y, dim=-1, eps=1e-12)


def block_influence(snap, stack: BlockStack, batch_size: int = 32,
                    cancel: CancelToken | None = None) -> dict[str, float]:
    """{skippable block: 1 - mean cosine similarity of its input and output} on the calibration samples."""
    model = on_device(snap.model(), snap.device)
    mods = dict(model.named_modules())
    sums = {b.path: [0.0, 0] for b in stack.skippable}
    handles = []

    def hook(p):
        def fn(_m, args, kwargs, out):
            xi = first_tensor(args[0] if args else kwargs.get("hidden_states"))
            xo = first_tensor(out)
            if xi is not None and xo is not None and xi.shape == xo.shape:
                c = _cos_per_position(xi.detach(), xo.detach())
                sums[p][0] += float(c.sum())
                sums[p][1] += c.numel()
        return fn

    for p in sums:
        handles.append(mods[p].register_forward_hook(hook(p), with_kwargs=True))
    x, _ = snap.calibration.data()
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                if cancel is not None:
                    cancel.check()
                model(x[i:i + batch_size].to(module_device(model)))
    finally:
        for h in handles:
            h.remove()
    return {p: 1.0 - s / n for p, (s, n) in sums.items() if n > 0}


def _metric_with(snap, model, skipped, split: str, cancel) -> float | None:
    quality = metric_of(snap.dataset)
    with skipping(model, skipped):
        return quality.value(evaluate(model, snap.dataset, split, cancel=cancel))


def analyse_blocks(snap, measure_skipped: bool = True, curve: bool = False,
                   progress: ProgressFn | None = None, cancel: CancelToken | None = None,
                   stack: BlockStack | None = None) -> DepthAnalysis:
    """Each block's influence and (``measure_skipped``) its validation metric when skipped alone; with ``curve``
    also the depth-pruning curve (the metric with the k least influential blocks skipped, for every k)."""
    stack = stack or block_stack(snap)
    ds = snap.dataset
    quality = metric_of(ds)
    split = SELECTION_SPLIT if ds.size(SELECTION_SPLIT) > 0 else "test"
    labelled = ds.has_labels and ds.size(split) > 0
    if progress:
        progress(Progress(0.0, "block influence on the calibration samples"))
    infl = block_influence(snap, stack, cancel=cancel)
    scores = [BlockScore(b.path, b.skippable, infl.get(b.path), why=b.why) for b in stack.blocks]
    res = DepthAnalysis(stack, scores, quality.name, split)
    if not labelled:
        return res
    model = on_device(snap.model(), snap.device)
    res.dense_metric = _metric_with(snap, model, [], split, cancel)
    todo = [s for s in scores if s.skippable] if measure_skipped else []
    steps = len(todo) + (len(stack.skippable) if curve else 0)
    done = 0
    for s in todo:
        if progress:
            progress(Progress(done / max(1, steps), f"{quality.name} with {s.path} skipped"))
        s.metric_when_skipped = _metric_with(snap, model, [s.path], split, cancel)
        done += 1
    if curve:
        order = res.order()
        res.curve = [{"dropped": 0, "blocks": [], "metric": res.dense_metric}]
        for k in range(1, len(order) + 1):
            if progress:
                progress(Progress(done / max(1, steps), f"{quality.name} with {k} block(s) skipped"))
            res.curve.append({"dropped": k, "blocks": order[:k],
                              "metric": _metric_with(snap, model, order[:k], split, cancel)})
            done += 1
    if progress:
        progress(Progress(1.0, "blocks measured"))
    return res


def weakest_block(snap, split: str = "test", progress: ProgressFn | None = None,
                  cancel: CancelToken | None = None) -> DepthAnalysis:
    """Every block's influence, and the ``split`` metric (a lesson's: test, as its other numbers) with only the
    least influential skippable block skipped -- one evaluation, where :func:`analyse_blocks` skips each."""
    stack = block_stack(snap)
    if progress:
        progress(Progress(0.0, "block influence on the calibration samples"))
    infl = block_influence(snap, stack, cancel=cancel)
    scores = [BlockScore(b.path, b.skippable, infl.get(b.path), why=b.why) for b in stack.blocks]
    res = DepthAnalysis(stack, scores, metric_of(snap.dataset).name, split)
    order = res.order()
    if order and snap.dataset.has_labels and snap.dataset.size(split) > 0:
        if progress:
            progress(Progress(0.2, f"{res.metric} with {order[0]} skipped"))
        model = on_device(snap.model(), snap.device)
        next(s for s in scores if s.path == order[0]).metric_when_skipped = \
            _metric_with(snap, model, [order[0]], split, cancel)
    if progress:
        progress(Progress(1.0, "blocks measured"))
    return res
