"""The compress flow (Deep Compression): a snapshot's plan pruned (and fine-tuned, by the fine-tune flow), then
weight sharing, training of the shared values and Huffman coding (``compress.flow.compress_state``), written as a
results folder: ``model.dcz``, ``model.pt``, ``recipe.json`` and ``compression.json``.

The CLI's ``compress`` runs it; the window's Compress tab and the lessons run ``compress_state`` on a snapshot's
masked weights. The pruned stage fine-tunes exactly as ``prune`` does (same settings, same flow), so the same
request gives the same pruned weights by both commands.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..compress import accounting, dcz
from ..compress.flow import CompressResult, _phase, _quiet, compress_state
from ..compress.quantize import QuantSettings
from ..deploy import export
from ..fileio import StagedFolder, atomic_write_json, check_results_folder
from ..jobs import CancelToken, ProgressFn
from ..prune.plan import Plan
from ..prune.recipe import plan_to_recipe
from ..train.evaluate import evaluate
from ..train.finetune import FinetuneConfig
from ..train.metric import metric_of
from . import finetune as finetune_flow
from .snapshot import Snapshot


def archive_meta(snap) -> dict:
    """What model.dcz records of its model (``snap``: a snapshot, or the session)."""
    return {"arch": snap.load.model.arch if isinstance(snap, Snapshot) else snap.require().model.arch,
            "model": snap.model_spec}


def compress_recipe(snap: Snapshot, plan: Plan, settings: QuantSettings, finetune_cfg: FinetuneConfig | None,
                    quantize_cfg: FinetuneConfig | None) -> dict:
    """recipe.json of a compress run: the plan, its fine-tuning, and the quantization settings."""
    quant = {**settings.to_dict(), "finetune": asdict(quantize_cfg) if quantize_cfg else None}
    return plan_to_recipe(plan, snap.model_spec, snap.dataset.spec, seed=snap.seed,
                          extra={"finetune": asdict(finetune_cfg) if finetune_cfg else None, "quantize": quant})


def write_compress_folder(out_dir: str | Path, result: CompressResult, recipe: dict,
                          like: nn.Module | None = None) -> dict[str, str]:
    """model.dcz, model.pt, recipe.json and compression.json, written as one folder (each checked); model.pt keeps
    the state_dict's metadata (module versions) of ``like``, a module of the model's architecture."""
    out = Path(out_dir)
    with StagedFolder(out) as stage:
        dcz.write_archive(stage / "model.dcz", result.archive, result.state)
        export.export_checkpoint(result.state, stage / "model.pt", like=like)
        export.export_recipe(recipe, stage / "recipe.json")
        atomic_write_json(stage / "compression.json", result.to_json())
    return {n: str(out / n) for n in ("model.dcz", "model.pt", "recipe.json", "compression.json")}


def run(snap: Snapshot, settings: QuantSettings, out_dir: str | Path, finetune_cfg: FinetuneConfig | None = None,
        quantize_cfg: FinetuneConfig | None = None, progress: ProgressFn | None = None,
        cancel: CancelToken | None = None, log=_quiet, device: torch.device | None = None
        ) -> tuple[CompressResult, dict[str, str]]:
    """dense -> pruned (fine-tuned) -> quantized -> Huffman, then the results folder (evaluation and training on
    ``device``). Returns the result and {file name: path}."""
    from ..device import on_device
    from ..train.distributed import Runtime

    out_dir = Path(out_dir)
    check_results_folder(out_dir)     # before any work: a folder the swap would damage is refused now
    ds, plan = snap.dataset, snap.plan
    labelled = ds.has_labels and ds.size("test") > 0
    dense_size = accounting.state_bytes(snap.original)
    metric = metric_of(ds)
    dense_acc = (metric.value(evaluate(on_device(snap.model(snap.original), device), ds, "test", cancel=cancel))
                 if labelled else None)
    if dense_acc is not None:
        log(f"dense: {dense_size:,} bytes, test {metric.name} {metric.format(dense_acc)}")
    t = time.perf_counter()
    if any(lp.criterion == "sparsegpt" for lp in plan.active().values()):   # its masks come from its sweep
        from .prune import one_shot_snapshot
        snap = one_shot_snapshot(snap, False, progress, cancel, log)[0]
    if finetune_cfg is not None:
        r = finetune_flow.run(snap, finetune_cfg, _phase(progress, 0.0, 0.4), cancel,
                              runtime=Runtime(device=device) if device is not None else None)
        for h in r.history:
            val = getattr(h, f"val_{metric.name}", None)
            log(f"  epoch {h.epoch}: train loss {h.train_loss:.4f}"
                + (f", val {metric.name} {metric.format(val)}" if val is not None else "")
                + f", sparsity {h.sparsity:.1%}")
        snap = snap.with_base(r.state, r.plan)     # as adopted: the fine-tuned weights realise the plan
        pruned = {k: v.detach().clone() for k, v in r.state.items()}
    else:
        pruned = {k: v.detach().clone() for k, v in snap.masked_state(plan).items()}
    prune_s = time.perf_counter() - t
    module = snap.model(pruned)
    pruned_acc = metric.value(evaluate(on_device(module, device), ds, "test", cancel=cancel)) if labelled else None
    log(f"pruned: sparsity {snap.totals(snap.plan).sparsity:.1%}"
        + (f", test {metric.name} {metric.format(pruned_acc)}" if pruned_acc is not None else "")
        + f" ({prune_s:.1f} s)")
    lo = 0.4 if finetune_cfg is not None else 0.0
    result = compress_state(snap.model_copy(pruned), ds, pruned, settings, archive_meta(snap), quantize_cfg,
                            {"dense": dense_acc, "pruned": pruned_acc}, dense_size, _phase(progress, lo, 1.0),
                            cancel, log, device=device)
    result.seconds["prune"] = prune_s
    recipe = compress_recipe(snap, plan, settings, finetune_cfg, quantize_cfg)
    files = write_compress_folder(out_dir, result, recipe, like=snap.module)
    return result, files
