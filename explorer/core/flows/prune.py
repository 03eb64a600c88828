"""The prune flow: a snapshot's plan applied (reconstructed, fine-tuned, compacted), measured, and written as a
results folder (``deploy/bundle.write_bundle``).

The CLI's ``prune`` and ``finetune`` (also under torchrun) run it; so do the checks of whole architectures. It
works on models made from the snapshot -- read-only ones share its tensors, a trained one owns its own -- and never
on the session: the door that called it marks the plan saved and adopts what it wants of the outcome.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..analyse import latency as timing
from ..deploy import bundle
from ..deploy.bundle import Log, _quiet, write_bundle
from ..deploy.report import build_report, compact_block, counts_from_state
from ..device import on_device
from ..errors import ExplorerError, PlanError
from ..fileio import check_results_folder
from ..jobs import CancelToken, ProgressFn
from ..prune.compact import (
    COMPACT_RTOL,
    compact_checked,
    compaction_plan,
    has_structure,
    max_output_difference,
    relative_difference,
)
from ..prune.plan import Plan
from ..prune.recipe import plan_to_recipe
from ..train.distributed import Runtime
from ..train.evaluate import evaluate
from ..train.metric import metric_of
from . import finetune as finetune_flow
from .snapshot import Snapshot


@dataclass
class PruneOutcome:
    report: dict
    files: dict[str, str] = field(default_factory=dict)
    plan: Plan | None = None          # what model.pt realises (the door marks it saved)
    in_place: list[str] = field(default_factory=list)   # layers pruned in the loaded weights (own_loaded)


def run(snap: Snapshot, out_dir: Path, finetune_cfg=None, compact: bool = False, sparse_archive: bool = False,
        latency_runs: int = 30, latency_batch: int = 1, measure: bool = True,
        progress: ProgressFn | None = None, cancel: CancelToken | None = None, log: Log = _quiet,
        reconstruct: bool = False, runtime=None, checkpoint: Path | None = None,
        resume: bool = False, report_extra: dict | None = None,
        exports: tuple[str, ...] = (), own_loaded: bool = False, sparse_runtime: bool = False,
        recipe_extra: dict | None = None, sequential_calibration: bool = False) -> PruneOutcome:
    """Apply the snapshot's plan (reconstruct, fine-tune, compact), measure, and write the results folder.

    ``runtime`` (:class:`~explorer.core.train.distributed.Runtime`): the device evaluation and fine-tuning run
    on, and the process group of a data-parallel run (then every rank calls this; only rank 0 measures latency
    and writes, and the others return an empty outcome). ``checkpoint``/``resume``: see
    :func:`~explorer.core.train.finetune.finetune`. ``exports``: also ``safetensors``/``onnx`` files.

    ``own_loaded=True`` (a door that discards its session afterwards, like the ``prune`` command): the flow may
    spend the loaded weights. Element/|w| masks of every size are then computed one-off (no ranking is built), and
    without fine-tuning or reconstruction big layers (at least ``deploy.bundle.IN_PLACE_MIN_BYTES`` of one-off masks) are
    pruned in the loaded weights themselves, so a big model is held once, not twice. The dense model's latency is
    then timed before pruning instead of interleaved with the pruned one's (``latency.interleaved`` says which).

    ``sparse_runtime``: also the model with each layer measured faster as CSR replaced by a sparse kernel
    (``deploy/sparse_runtime.py``), timed next to the others and written into the folder. ``recipe_extra``: more
    keys for recipe.json (e.g. the ``allocation`` that made the plan: ``analyse/owl.py``).

    ``sparsegpt`` layers are swept (their masks chosen and kept weights updated) layer after layer on the
    calibration samples before anything else (``prune/sparsegpt.py``); ``sequential_calibration``: wanda's input norms are
    taken from the network as already pruned, layer after layer (recorded in the recipe)."""
    out_dir = Path(out_dir)
    check_results_folder(out_dir)     # before any work: a folder the swap would damage is refused now
    rt = runtime or Runtime()
    snap = snap.with_own_masks()
    ds, plan = snap.dataset, snap.plan
    labelled = ds.has_labels and ds.size("test") > 0
    quality = metric_of(ds)          # accuracy, or perplexity / mean squared error

    def test_quality(m):
        return quality.value(evaluate(on_device(m, rt.device), ds, "test", cancel=cancel, runtime=rt)) \
            if labelled else None

    dense_model = snap.model(snap.original)      # shares the loaded tensors: only run, never trained
    dense_acc = test_quality(dense_model)
    example = timing.latency_input(ds, snap.input_shape, latency_batch)
    if own_loaded:
        # nothing asks these views another question afterwards: element/|w| masks of every size one-off (the same
        # masks; a ranking sorts the whole layer and is only worth it for later lookups)
        snap.masks.one_off_min_params = 1
    one = _needs_one_shot(plan, sequential_calibration, reconstruct)
    in_place = (own_loaded and finetune_cfg is None and not reconstruct and not one
                and snap.masks.one_off_bytes(plan) >= bundle.IN_PLACE_MIN_BYTES)
    dense_totals = counts_from_state(snap, snap.original)[1]
    lat = {}
    if measure and in_place:
        # the loaded weights become the pruned ones below: time the dense model now, while it exists
        lat = timing.measure_latencies({"dense": on_device(dense_model, rt.device)}, example, runs=latency_runs,
                                progress=progress, cancel=cancel)
        dense_model = None
    if dense_acc is not None:
        log(f"dense: test {quality.name} {quality.format(dense_acc)}")
    fits = one_shot = None
    if sequential_calibration and not one:
        log("note: --sequential-calibration changes only wanda's and sparsegpt's statistics; the plan has neither")
    if one:
        snap, one_shot = one_shot_snapshot(snap, sequential_calibration, progress, cancel, log)
    if reconstruct:
        snap, fits = _reconstruct(snap, finetune_cfg, progress, cancel, log)

    ft_run: dict | None = None
    done: list[str] = []
    if finetune_cfg is not None:
        result = finetune_flow.run(snap, finetune_cfg, progress, cancel, runtime=rt, checkpoint=checkpoint,
                                   resume=resume)
        if result.resumed_from_epoch is not None:
            log(f"resumed after epoch {result.resumed_from_epoch} from {checkpoint}")
        ft_run = {"device": str(rt.device), "world_size": rt.world_size, "backend": rt.backend,
                  "resumed_from_epoch": result.resumed_from_epoch, "mask_digests": result.mask_digests,
                  "state_digests": result.state_digests,
                  "history": [r.as_dict() for r in result.history]}
        for r in result.history:
            val = getattr(r, f"val_{quality.name}", None)
            log(f"  epoch {r.epoch}: train loss {r.train_loss:.4f}, val {quality.name} {quality.format(val)}, "
                f"sparsity {r.sparsity:.1%}")
        snap = snap.with_base(result.state, result.plan)      # as adopted: views over the fine-tuned weights
        pruned_state = result.state
    elif in_place:
        pruned_state, done = snap.masks.masked_state_in_place(plan)
        log(f"note: {len(done)} layer(s) pruned in the loaded weights themselves, to hold one copy of the "
            "model" + ("; the dense latency was timed before pruning, not interleaved" if measure else ""))
    else:
        pruned_state = snap.masks.masked_state(plan, share=True)   # new tensors only where masked
    final_plan = snap.plan
    module = snap.model(pruned_state)
    pruned_acc = test_quality(module)
    if not rt.is_main:          # rank 0 measures and writes; the others wait until the folder is in place
        rt.barrier()
        return PruneOutcome(report={})
    prof = snap.profile
    nonzero = sum(int(torch.count_nonzero(pruned_state[k])) for k in prof.weight_keys.values())
    log(f"pruned: sparsity of prunable weights {1 - nonzero / prof.prunable_params:.1%}"
        + (f", test {quality.name} {quality.format(pruned_acc)}" if pruned_acc is not None else ""))

    compacted, compact_info = _compact(snap, final_plan, module, pruned_state, example, quality, labelled, rt,
                                       cancel, log) if compact else (None, None)

    sparse_rt = None
    if sparse_runtime:     # layers measured faster as CSR replaced (deploy/sparse_runtime.py)
        from ..deploy.sparse_runtime import build_sparse_runtime
        sparse_rt = build_sparse_runtime(on_device(module, rt.device), example, snap.layer_names,
                                         base=on_device(compacted, rt.device) if compacted is not None else None,
                                         runs=latency_runs, progress=progress, cancel=cancel)
        log(f"sparse runtime: {len(sparse_rt.layers)} layer(s) run as CSR: {', '.join(sparse_rt.layers) or 'none'}")
        for n, why in sparse_rt.kept_dense.items():
            log(f"  {n} stays dense: {why}")

    latency_note = None
    if measure:
        # all variants on the same input, runs interleaved (dense, pruned, compact, dense, ...), so drift in the
        # machine's load hits them alike (the dense model is already timed when it was pruned in place)
        models = {"dense": dense_model, "pruned": module, **({"compact": compacted} if compacted is not None else {})}
        if sparse_rt is not None:
            models["sparse"] = sparse_rt.module
        models = {k: on_device(m, rt.device) for k, m in models.items() if m is not None}
        lat = {**lat, **timing.measure_latencies(models, example, runs=latency_runs, progress=progress,
                                                 cancel=cancel)}
        for k, v in lat.items():
            log(f"latency {k}: {v}")
        latency_note = timing.spread_note(lat)
        if latency_note:
            log(f"note: {latency_note}")
        if compact_info is not None:
            compact_info["latency_ms"] = lat["compact"].median_ms
    dense_lat, pruned_lat = lat.get("dense"), lat.get("pruned")

    recipe = plan_to_recipe(plan, snap.model_spec, ds.spec, seed=snap.seed,
                            extra={"finetune": finetune_cfg.as_dict() if finetune_cfg else None,
                                   **snap.calibration.record(), "reconstruct": bool(reconstruct),
                                   "sequential_calibration": bool(sequential_calibration),
                                   **(recipe_extra or {})})
    if finetune_cfg is None:
        # without fine-tuning the recipe alone reproduces model.pt: check it now
        bad = snap.masks.mismatches(final_plan, pruned_state)   # one layer at a time
        if bad:
            raise ExplorerError(f"Internal check failed: the recipe does not reproduce tensor {bad[0]}.")
    report = build_report(snap, final_plan, dense_totals, pruned_state, dense_acc, pruned_acc,
                          dense_lat.median_ms if dense_lat else None, pruned_lat.median_ms if pruned_lat else None,
                          compact_info,
                          extra={"latency": {"batch": latency_batch, "runs": latency_runs,
                                             "interleaved": (not in_place) if measure else None,
                                             "threads": dense_lat.threads if dense_lat else None,
                                             "dense": dense_lat.as_dict() if dense_lat else None,
                                             "pruned": pruned_lat.as_dict() if pruned_lat else None,
                                             "compact": lat["compact"].as_dict() if "compact" in lat else None,
                                             **({"sparse": lat["sparse"].as_dict() if "sparse" in lat else None}
                                                if sparse_runtime else {}),
                                             "note": latency_note},
                                 "finetune": ({"epochs": finetune_cfg.epochs, "schedule": finetune_cfg.schedule,
                                               "steps": finetune_cfg.steps, "lr": finetune_cfg.lr,
                                               "optimizer": finetune_cfg.optimizer,
                                               **(ft_run if runtime is not None else {})}
                                              if finetune_cfg else None),
                                 **(report_extra or {}),
                                 "reconstruct": fits,
                                 **({"one_shot": one_shot} if one_shot is not None else {}),
                                 **({"sparse_runtime": sparse_rt.report()} if sparse_rt is not None else {}),
                                 "tool_version": recipe["tool_version"]}, metric=quality.name)
    dense_model = None
    meta = {"model": snap.model_spec, "arch": snap.load.model.arch, "dataset": ds.spec}
    files = write_bundle(out_dir, pruned_state, recipe, report, snap.layer_names,
                         archive_meta=meta if sparse_archive else None, compacted=compacted, example=example, log=log,
                         exports=exports, module=module, sparse_runtime=sparse_rt)
    if checkpoint is not None:   # the run is complete and written: its checkpoint has served
        Path(checkpoint).unlink(missing_ok=True)
    rt.barrier()
    return PruneOutcome(report=report, files=files, plan=final_plan, in_place=done)


def _compact(snap: Snapshot, plan: Plan, module, state, example, quality, labelled: bool, rt, cancel, log: Log):
    """(the compacted model, report.json's "compact" block), checked against the masked model."""
    if not has_structure(plan):
        log("note: --compact: the plan has no channel-pruned layers, so compaction removes nothing")
    removals, kept = compaction_plan(snap, plan)
    compacted, dropped = compact_checked(module, state, removals, example, cancel=cancel)
    kept.update(dropped)
    for root, why in kept.items():
        log(f"note: --compact: the pruned channels of {root} stay in the compact model (zeroed): {why}")
    diff = max_output_difference(module, compacted, example)
    if relative_difference(module, compacted, example) > 10 * COMPACT_RTOL:
        raise ExplorerError(f"The compacted model's outputs differ from the masked model's by {diff:.3g}; "
                            "not exporting it.")
    c_acc = (quality.value(evaluate(on_device(compacted, rt.device), snap.dataset, "test", cancel=cancel))
             if labelled else None)     # rank 0 alone
    info = compact_block(compacted, snap.input_shape, c_acc, None, quality.name, example[:1])
    info["max_output_difference"] = diff
    info["kept_zeroed"] = kept
    log(f"compact: {info['params']:,} params, {info['macs']:,} MACs")
    return compacted, info


def _reconstruct(snap: Snapshot, finetune_cfg, progress, cancel, log: Log) -> tuple[Snapshot, dict]:
    """Refit the plan's remaining weights on the calibration samples; the snapshot continues from them."""
    from ..prune.reconstruct import reconstruct_plan

    if finetune_cfg is not None and finetune_cfg.schedule != "oneshot":
        raise PlanError("--reconstruct refits the remaining weights for one mask; with the iterative and agp "
                        "schedules the mask changes during fine-tuning.", "Use --schedule oneshot with --reconstruct.")
    rec = reconstruct_plan(snap, snap.plan, progress=progress, cancel=cancel)
    for f in rec.layers:
        log(f"  reconstructed {f.name}: output error {f.error_before:.4f} -> {f.error_after:.4f} ({f.method})")
    samples = snap.calibration.samples
    return snap.with_base(rec.state), {"samples": samples,
                                       "layers": [{"name": f.name, "method": f.method, "error_before": f.error_before,
                                                   "error_after": f.error_after} for f in rec.layers]}


def _needs_one_shot(plan: Plan, sequential: bool, reconstruct: bool) -> bool:
    from ..prune.sparsegpt import needs_one_shot

    if reconstruct and any(lp.criterion == "sparsegpt" for lp in plan.active().values()):
        raise PlanError("sparsegpt already updates the kept weights during its sweep; --reconstruct would refit "
                        "them against the swept weights, not the dense ones.", "Leave out --reconstruct.")
    return needs_one_shot(plan, sequential)


def one_shot_snapshot(snap: Snapshot, sequential: bool, progress, cancel,
                      log: Log = _quiet) -> tuple[Snapshot, dict]:
    """Sweep the plan's sparsegpt layers (and take wanda's norms sequentially): the snapshot continues from the
    swept weights, its views ranking with the sequential norms."""
    from ..prune.sparsegpt import one_shot, statistic_with

    r = one_shot(snap, snap.plan, sequential, progress=progress, cancel=cancel)
    new = snap.with_base(r.state) if r.swept else snap
    widths = {n: r.state[snap.layer(n).key].shape[1] for n in r.swept}
    masks = new.masks.renewed(statistic=statistic_with(snap.masks.statistic, r.statistic, widths))
    log(f"  layer after layer ({r.order}): {len(r.swept)} layer(s) swept by sparsegpt"
        + (f", wanda's norms of {len(r.statistic)} layer(s) taken sequentially" if r.statistic else ""))
    return replace(new, masks=masks), {"order": r.order, "sequential_calibration": sequential, "swept": r.swept,
                                       "samples": snap.calibration.samples}
