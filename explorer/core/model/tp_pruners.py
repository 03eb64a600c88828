"""Torch-Pruning's dependency graph, with two pruning functions it lacks.

- Grouped convolutions (ResNeXt, RegNet): Torch-Pruning removes a grouped conv's input channels by
  position in the first group only, which is wrong (and out of bounds) unless every group loses the same
  relative channels. Here each group keeps its own channels; every group must lose the same number
  (the channel ranking of such groups is balanced per block, see ``ChannelGroup.blocks``).
- transformers' ``Conv1D`` (GPT-2): a Linear whose weight is stored inputs x outputs.

Torch-Pruning's reshape analysis divides by a channel count it infers as 0 on a channel shuffle
(ShuffleNet); such a reshape is left without an index mapping instead of failing the whole graph. The
coupling it then assumes may be wrong, which compaction's output check catches (``prune.compact``).
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .layers import is_conv1d_transposed


def torch_pruning():
    """Torch-Pruning, imported without timm: its FLOP counter (``torch_pruning.utils.op_counter``, which this app
    does not use: it counts with ``model.layers``) imports timm when it is installed, and timm imports
    torchvision's models and huggingface_hub -- 2.3 s of CPU in every process that opened a model, against
    0.01 s for Torch-Pruning itself. A timm model opened first keeps timm imported; timm imports as usual later."""
    from ..extras import import_without

    return import_without("torch_pruning", "timm")


class UnbalancedGroups(ValueError):
    """A grouped convolution would lose a different number of channels in different groups."""


def _per_group(idxs, size: int, groups: int) -> list[list[int]]:
    out = [[] for _ in range(groups)]
    for i in idxs:
        out[int(i) // size].append(int(i) % size)
    if len({len(b) for b in out}) > 1:
        raise UnbalancedGroups(f"every group must lose the same number of channels (got {[len(b) for b in out]})")
    return out


def _grouped(layer) -> bool:
    return layer.groups > 1 and not (layer.groups == layer.out_channels == layer.in_channels)


def _pruners():
    tp = torch_pruning()

    base = tp.pruner.function

    class GroupedConvPruner(base.ConvPruner):
        def prune_out_channels(self, layer, idxs):
            if _grouped(layer) and not layer.transposed:
                _per_group(idxs, layer.out_channels // layer.groups, layer.groups)
            return super().prune_out_channels(layer, idxs)

        def prune_in_channels(self, layer, idxs):
            if not _grouped(layer) or layer.transposed:
                return super().prune_in_channels(layer, idxs)
            G = layer.groups
            per_in, per_out = layer.in_channels // G, layer.out_channels // G
            gone = _per_group(idxs, per_in, G)
            w = layer.weight
            parts = []
            for g in range(G):
                keep = torch.tensor([j for j in range(per_in) if j not in set(gone[g])], dtype=torch.long)
                parts.append(w[g * per_out:(g + 1) * per_out].index_select(1, keep))
            layer.weight = nn.Parameter(torch.cat(parts, 0).contiguous())
            layer.in_channels -= len(idxs)
            return layer

    class Conv1DPruner(base.BasePruningFunc):
        """transformers.pytorch_utils.Conv1D: y = x @ W + b with W of shape (in, out)."""

        def prune_out_channels(self, layer, idxs):
            keep = sorted(set(range(layer.nf)) - set(int(i) for i in idxs))
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
            if layer.bias is not None:
                layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
            layer.nf = len(keep)
            return layer

        def prune_in_channels(self, layer, idxs):
            keep = sorted(set(range(layer.weight.shape[0])) - set(int(i) for i in idxs))
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
            return layer

        def get_out_channels(self, layer):
            return layer.nf

        def get_in_channels(self, layer):
            return layer.weight.shape[0]

    return GroupedConvPruner(), Conv1DPruner()


def _guard_reshape_mapping() -> None:
    torch_pruning()
    from torch_pruning.dependency import index_mapping as im

    original = im.update_reshape_index_mapping
    if getattr(original, "_explorer_guarded", False):
        return

    def guarded(graph, node):
        try:
            return original(graph, node)
        except ZeroDivisionError:   # channel count inferred as 0 (a channel shuffle): no mapping
            return None
    guarded._explorer_guarded = True
    im.update_reshape_index_mapping = guarded


def build_dependency_graph(module: nn.Module, example: torch.Tensor):
    """Torch-Pruning's dependency graph of ``module`` traced on ``example``, with the pruners above."""
    tp = torch_pruning()

    _guard_reshape_mapping()
    grouped, conv1d = _pruners()
    dg = tp.DependencyGraph()
    dg.REGISTERED_PRUNERS[tp.ops.OPTYPE.CONV] = grouped
    dg._in_channel_pruning_fn.add(grouped.prune_in_channels)
    dg._out_channel_pruning_fn.add(grouped.prune_out_channels)
    custom = {type(m): conv1d for m in module.modules() if is_conv1d_transposed(m)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dg.build_dependency(module, example_inputs=example, verbose=False, customized_pruners=custom or None,
                                   output_transform=_first_tensor)


def _first_tensor(out):
    """The tensor Torch-Pruning traces back from: logits of a transformers output or the first of a tuple."""
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out
