"""Keeping pruned entries at exactly zero while training: the weights and their optimizer state.

After every optimizer step :class:`MaskEnforcer` does ``masked_fill_(~mask, 0)`` on each masked parameter (the
pruned weights, and the BatchNorm/bias entries of removed channels) and on the optimizer's per-entry state of
that parameter (SGD's momentum buffer, Adam's first and second moments). A pruned weight therefore carries no
velocity or moment estimate into later steps, and the weight decay of a zero is zero.
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.layers import weight_key


class MaskEnforcer:
    """Keeps pruned entries (and, once an optimizer is attached, their optimizer state) at exactly zero."""

    def __init__(self, module: nn.Module, masks: dict[str, torch.Tensor], aux: dict[str, torch.Tensor],
                 optimizer: torch.optim.Optimizer | None = None):
        params = dict(module.named_parameters())
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for key, m in masks.items():      # state_dict keys of the pruned weights (LayerInfo.key)
            p = params[key]
            self.pairs.append((p, ~m.to(torch.bool)))
        for pname, m in aux.items():
            p = params.get(pname)
            if p is not None:
                self.pairs.append((p, ~m.to(torch.bool).reshape((-1,) + (1,) * (p.dim() - 1)).expand_as(p)))
        self.optimizer = optimizer
        self.apply()

    def attach(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Also zero ``optimizer``'s state of the pruned entries (now and after every step)."""
        self.optimizer = optimizer
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        state = self.optimizer.state if self.optimizer is not None else None
        for p, pruned in self.pairs:
            p.masked_fill_(pruned, 0.0)
            if state:
                for t in state.get(p, {}).values():
                    if isinstance(t, torch.Tensor) and t.shape == p.shape:
                        t.masked_fill_(pruned, 0.0)


def optimizer_state_nonzero(optimizer: torch.optim.Optimizer, param: torch.Tensor, pruned: torch.Tensor) -> int:
    """Number of nonzero optimizer-state entries of ``param`` at the ``pruned`` positions (for checks)."""
    n = 0
    for t in optimizer.state.get(param, {}).values():
        if isinstance(t, torch.Tensor) and t.shape == param.shape:
            n += int((t[pruned] != 0).sum())
    return n


def sparsity_of(module: nn.Module, layer_names: list[str]) -> float:
    params = dict(module.named_parameters())
    total = zeros = 0
    for n in layer_names:
        w = params[weight_key(module, n)]
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / total if total else 0.0
