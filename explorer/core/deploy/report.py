"""report.json: dense vs pruned (vs compacted) numbers, with the keys the README's File formats section fixes.

Counts come from the actual tensors of the exported state (not from the
plan), so a report stays true after fine-tuning.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..model.metrics import LayerCounts, Totals, totals

if TYPE_CHECKING:
    from ..prune.state_view import StateView


def counts_from_state(session: StateView, state: dict[str, torch.Tensor]) -> tuple[list[LayerCounts], Totals]:
    prof = session.profile
    counts = []
    for l in prof.layers:
        nz = int(torch.count_nonzero(state[l.key]))
        counts.append(LayerCounts(l.params, nz, l.matrix_shape[0], l.macs, nz * l.uses))
    params = {n for n, _ in session.module.named_parameters()}
    prunable = set(prof.weight_keys.values())
    other_nz = sum(int(torch.count_nonzero(v)) for k, v in state.items() if k in params and k not in prunable)
    model_bytes = sum(state[k].numel() * state[k].element_size() for k in params if k in state)
    return counts, totals(counts, prof.total_params, model_bytes, prof.total_macs, other_nonzero=other_nz)


def model_block(accuracy, params, nonzero_params, macs, size_bytes, latency_ms, metric: str = "accuracy") -> dict:
    """One model's numbers; ``accuracy`` is the value of ``metric`` -- for a language model the block says
    ``"perplexity"`` and its ``"accuracy"`` is null."""
    block = {"accuracy": accuracy if metric == "accuracy" else None, "params": int(params),
             "nonzero_params": int(nonzero_params), "macs": int(macs), "size_bytes": int(size_bytes),
             "latency_ms": latency_ms}
    if metric != "accuracy":
        block[metric] = accuracy
    return block


def build_report(session: StateView, plan, dense: dict | Totals, pruned_state: dict, dense_acc=None, pruned_acc=None,
                 dense_latency=None, pruned_latency=None, compact: dict | None = None, extra: dict | None = None,
                 metric: str = "accuracy") -> dict:
    """report.json; ``dense_acc``/``pruned_acc`` are values of ``metric`` (accuracy, or a language model's
    perplexity). ``dense``: the dense model's state, or its totals counted before its tensors were pruned in
    place."""
    dense_t = dense if isinstance(dense, Totals) else counts_from_state(session, dense)[1]
    pruned_counts, pruned_t = counts_from_state(session, pruned_state)
    layers = []
    for l, c in zip(session.profile.layers, pruned_counts):
        lp = plan.get(l.name)
        layers.append({"name": l.name, "granularity": lp.granularity, "criterion": lp.criterion,
                       "sparsity": round(c.sparsity, 6), "planned_sparsity": lp.sparsity,
                       "params": c.params, "nonzero": c.nonzero, "macs": c.nonzero_macs, "dense_macs": c.macs})
    report = {
        "model": session.model_spec,
        "split": "test",                  # every accuracy in a report is measured on the test split
        "dataset": session.dataset.spec,
        "dense": model_block(dense_acc, dense_t.params, dense_t.nonzero_params, dense_t.macs, dense_t.dense_bytes,
                             dense_latency, metric),
        "pruned": model_block(pruned_acc, pruned_t.params, pruned_t.nonzero_params, pruned_t.nonzero_macs,
                              pruned_t.sparse_bytes, pruned_latency, metric),
        "compact": compact,
        "sparsity": pruned_t.sparsity,
        "compression_ratio": dense_t.dense_bytes / pruned_t.sparse_bytes if pruned_t.sparse_bytes else None,
        "layers": layers,
    }
    if metric != "accuracy":
        report["metric"] = metric
    if extra:
        report.update(extra)
    return report


def compact_block(module: nn.Module, input_shape, accuracy=None, latency_ms=None, metric: str = "accuracy",
                  example=None) -> dict:
    from ..model.layers import profile_model
    from ..model.metrics import nonzero_count, param_bytes, param_count

    prof = profile_model(module, input_shape, example=example)
    return model_block(accuracy, param_count(module), nonzero_count(module), prof.total_macs, param_bytes(module),
                       latency_ms, metric)
