"""Gradients of the prunable weights over a few training batches (what the taylor criterion scores with)."""
from __future__ import annotations

import torch
from torch import nn

from ..model.data import DatasetBundle
from ..model.layers import logits_of
from ..model.outputs import loss_of


def compute_gradients(module: nn.Module, dataset: DatasetBundle, layer_names: list[str], seed: int = 0,
                      batches: int = 4, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """dL/dW of every prunable weight of ``module`` (a copy the caller owns), accumulated over ``batches``
    shuffled training batches; {} without labels. Taken at the weights ``module`` holds (the kept, unmasked
    ones), so the same plan always gives the same taylor masks, whatever was applied before."""
    if not dataset.has_labels:
        return {}
    module.eval()
    mods = dict(module.named_modules())
    params = [mods[n].weight for n in layer_names]
    grads = [torch.zeros_like(p) for p in params]
    loss_fn = nn.CrossEntropyLoss()
    classes = dataset.num_classes
    for i, (x, y) in enumerate(dataset.batches("train", batch_size=batch_size, shuffle=True, seed=seed)):
        if i >= batches:
            break
        out = logits_of(module(x))
        loss = loss_of(out, y) if y.is_floating_point() else \
            loss_fn(out[:, :classes] if classes and out.shape[1] > classes else out, y)
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        for acc, g in zip(grads, gs):
            if g is not None:
                acc += g.detach()
    return dict(zip(layer_names, grads))
