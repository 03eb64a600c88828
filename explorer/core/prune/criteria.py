"""Pruning criteria: how important is each weight?

A criterion turns a weight tensor into non-negative per-element scores and
says how element scores combine into one score per group (a kernel row, a
kernel, a channel). Lower scores are pruned first. Adding a criterion is one
small class plus a line in :data:`CRITERIA`.

Data-aware criteria name the calibration statistic they read (``needs``: ``fisher``, ``input_norm``,
``apoz``, ``bn_gamma``; see :mod:`calibration`), whether that needs labels, whether they only score whole
channels (``channel_only``), and whether element scores are compared within each output row (``per_row``).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import PlanError
from .named import Named


@dataclass
class ScoreContext:
    """What a criterion may need beyond the weight itself."""

    layer: str
    seed: int = 0
    gradient: Callable[[str], torch.Tensor | None] | None = None  # accumulated dL/dW of a layer
    statistic: Callable[[str, str], torch.Tensor | None] | None = None   # (kind, layer) -> calibration statistic

    def require(self, criterion: "Criterion", kind: str) -> torch.Tensor:
        """The calibration statistic ``kind`` of this layer, or a clear refusal."""
        t = self.statistic(kind, self.layer) if self.statistic else None
        if t is None:
            raise PlanError(f"The {criterion.name} criterion has no {kind.replace('_', ' ')} statistic for layer "
                            f"{self.layer}.", criterion.missing_hint)
        return t


class Criterion(Named):
    """A criterion (see :mod:`named`: it is its name); the registry holds one instance each."""

    needs_gradients: bool = False
    needs: str | None = None        # calibration statistic the scores read (None: the weight alone)
    needs_labels: bool = False      # that statistic needs labelled data
    channel_only: bool = False      # scores whole output channels: channel granularity only
    per_row: bool = False           # element granularity compares scores within each output row
    missing_hint: str = ""

    def __new__(cls):
        return str.__new__(cls, cls.NAME)

    def element_scores(self, weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
        raise NotImplementedError

    def group_scores(self, grouped: torch.Tensor) -> torch.Tensor:
        """Combine element scores of shape (groups, group_size) into (groups,)."""
        return grouped.sum(dim=1)

    def comparable(self, group_scores: torch.Tensor, group_size: int) -> torch.Tensor:
        """Scores on a scale shared by layers with different group sizes (for global scope)."""
        return group_scores / group_size


class L1(Criterion):
    NAME, label = "l1", "L1 magnitude"
    tooltip = "Magnitude: a weight's |w|, a group's sum of |w| (L1 norm); the smallest go first."

    def element_scores(self, weight, ctx):
        return weight.detach().abs().float()


class L2(Criterion):
    NAME, label = "l2", "L2 norm"
    tooltip = "Group L2 norm: sqrt of the sum of w^2 over each group (|w| for single weights); the smallest go first."

    def element_scores(self, weight, ctx):
        return weight.detach().abs().float()

    def group_scores(self, grouped):
        return grouped.pow(2).sum(dim=1).sqrt()

    def comparable(self, group_scores, group_size):
        return group_scores / (group_size ** 0.5)


class Random(Criterion):
    NAME, label = "random", "Random"
    tooltip = "Random (seeded) scores: a baseline that shows how much a real criterion helps."

    def element_scores(self, weight, ctx):
        seed = (zlib.crc32(ctx.layer.encode()) + 7919 * ctx.seed) % (2**31)
        g = torch.Generator().manual_seed(seed)
        return torch.rand(weight.shape, generator=g)


class Taylor(Criterion):
    NAME, label = "taylor", "Taylor (|w·dL/dw|)"
    tooltip = ("First-order Taylor: |w · dL/dw| with gradients accumulated over a few batches; estimates how "
               "much the loss changes when the weight is removed.")
    needs_gradients = True

    def element_scores(self, weight, ctx):
        g = ctx.gradient(ctx.layer) if ctx.gradient else None
        if g is None:
            raise PlanError("The taylor criterion needs gradients, which need a dataset with labels.",
                            "Choose a labelled dataset, or use l1/l2.")
        return (weight.detach().float() * g.float()).abs()


def _broadcast_rows(per_channel: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A per-output-channel value as a tensor of the weight's shape."""
    return per_channel.float().reshape((-1,) + (1,) * (weight.dim() - 1)).expand(weight.shape)


class Hessian(Criterion):
    NAME, label = "hessian", "Hessian (OBD ½·H·w²)"
    tooltip = ("Second order (Optimal Brain Damage): ½·H_ii·w², with H_ii the empirical Fisher (mean squared "
               "per-sample gradient) over the calibration samples: the loss increase a weight's removal predicts.")
    needs, needs_labels = "fisher", True
    missing_hint = "The Fisher needs a labelled dataset with training samples."

    def element_scores(self, weight, ctx):
        f = ctx.require(self, "fisher")
        w = weight.detach().float()
        return 0.5 * f.float() * w * w


class Wanda(Criterion):
    NAME, label = "wanda", "Wanda (|w|·‖x‖)"
    tooltip = ("Activation-aware (Wanda): |w_ij|·‖x_j‖₂, the weight's magnitude times the L2 norm of its input "
               "feature over the calibration samples (a conv's input channel); single weights are compared "
               "within each output row.")
    needs, per_row = "input_norm", True
    missing_hint = "The layer's inputs were not seen in a forward pass over the calibration samples."

    def element_scores(self, weight, ctx):
        norms = ctx.require(self, "input_norm").float()
        w = weight.detach().float()
        out, cin_g = w.shape[0], w.shape[1]
        groups = max(1, norms.numel() // cin_g)
        per_row = norms.reshape(groups, cin_g)[torch.arange(out) // max(1, out // groups)]   # (out, in/groups)
        return w.abs() * per_row.reshape(per_row.shape + (1,) * (w.dim() - 2))


class SparseGPT(Criterion):
    """SparseGPT: the real mask is chosen during its OBS sweep (``sparsegpt.py``), run by Apply/Reconstruct in the
    window and by ``prune``; these scores are only its preview -- the first-step OBS saliency w²·H_jj with a
    diagonal Hessian H_jj = ‖x_j‖², i.e. |w|·‖x_j‖ compared across the whole layer. Over the swept weights the
    pruned ones are exactly 0 and go first, so the plan's masks are then the sweep's."""

    NAME, label = "sparsegpt", "SparseGPT (OBS sweep)"
    tooltip = ("SparseGPT: the mask is chosen layer after layer during an OBS sweep that also updates the kept "
               "weights (element or n:m only); the slider preview shows |w|·‖x‖ across the layer, and "
               "Apply runs the real sweep.")
    needs = "input_norm"
    missing_hint = Wanda.missing_hint

    def element_scores(self, weight, ctx):
        return Wanda.element_scores(self, weight, ctx)


class BNScale(Criterion):
    NAME, label = "bn-scale", "BN scale (|γ|)"
    tooltip = ("Network slimming: a channel's score is |γ| of the BatchNorm that follows the layer (the channel's "
               "learned scale). Channel granularity only.")
    needs, channel_only = "bn_gamma", True
    missing_hint = "bn-scale needs a BatchNorm right after the layer whose entries go with its channels."

    def element_scores(self, weight, ctx):
        return _broadcast_rows(ctx.require(self, "bn_gamma").abs(), weight)

    def group_scores(self, grouped):
        return grouped.mean(dim=1)

    def comparable(self, group_scores, group_size):
        return group_scores


class APoZ(Criterion):
    NAME, label = "apoz", "APoZ (zero activations)"
    tooltip = ("Network trimming: the average percentage of zeros of each output channel after its ReLU over the "
               "calibration samples; channels that are mostly zero go first (score 1 − APoZ). Channel granularity "
               "only.")
    needs, channel_only = "apoz", True
    missing_hint = "apoz needs a ReLU after the layer (directly or after its BatchNorm)."

    def element_scores(self, weight, ctx):
        return _broadcast_rows(1.0 - ctx.require(self, "apoz").float(), weight)

    def group_scores(self, grouped):
        return grouped.mean(dim=1)

    def comparable(self, group_scores, group_size):
        return group_scores


class Manual(Criterion):
    """Pruning by hand: the plan names the pruned units itself (``LayerPlan.units``; see :mod:`manual`). Not one
    of :data:`CRITERIA` -- it is chosen by clicking the heatmap, never from a list -- but plans and recipes
    name it like any other."""

    NAME, label = "manual", "Manual (by hand)"
    tooltip = "By hand: exactly the channels, kernels or weights you clicked are pruned (click again to restore)."

    def element_scores(self, weight, ctx):
        raise PlanError("The manual criterion has no scores of its own: its plan lists the pruned units.")


MANUAL = Manual()
CRITERIA: dict[str, Criterion] = {c.name: c for c in (L1(), L2(), Random(), Taylor(), Hessian(), Wanda(),
                                                      SparseGPT(), BNScale(), APoZ())}
DATA_CRITERIA = tuple(n for n, c in CRITERIA.items() if c.needs)


def get_criterion(name: str) -> Criterion:
    """Parse a criterion name (a Criterion passes through)."""
    if isinstance(name, Criterion):
        return name
    if isinstance(name, str) and name.strip().lower() == MANUAL.name:
        return MANUAL
    try:
        return CRITERIA[name.strip().lower() if isinstance(name, str) else name]
    except (KeyError, TypeError):
        raise PlanError(f"Unknown criterion '{name}'.", f"Use one of: {', '.join(CRITERIA)}.") from None


Criterion.parse = staticmethod(get_criterion)
