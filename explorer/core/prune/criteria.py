"""Pruning criteria: how important is each weight?

A criterion turns a weight tensor into non-negative per-element scores and
says how element scores combine into one score per group (a kernel row, a
kernel, a channel). Lower scores are pruned first. Adding a criterion is one
small class plus a line in :data:`CRITERIA`.
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


class Criterion(Named):
    """A criterion (see :mod:`named`: it is its name); the registry holds one instance each."""

    needs_gradients: bool = False

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


CRITERIA: dict[str, Criterion] = {c.name: c for c in (L1(), L2(), Random(), Taylor())}


def get_criterion(name: str) -> Criterion:
    """Parse a criterion name (a Criterion passes through)."""
    if isinstance(name, Criterion):
        return name
    try:
        return CRITERIA[name.strip().lower() if isinstance(name, str) else name]
    except (KeyError, TypeError):
        raise PlanError(f"Unknown criterion '{name}'.", f"Use one of: {', '.join(CRITERIA)}.") from None


Criterion.parse = staticmethod(get_criterion)
