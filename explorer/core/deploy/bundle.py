"""A results bundle: the folder a prune run writes, as a whole.

``run_prune`` is the prune flow as a plain function on a session: evaluate dense -> apply the plan ->
optional fine-tune -> evaluate -> optional compaction -> measure latencies -> write the bundle.
``write_bundle`` writes ``model.pt``, ``recipe.json``, ``report.json`` (and ``model_compact.pt`` /
``.ts``, ``model_sparse.npz``, ``model.safetensors``, ``model.onnx``, ``model_hf/``) into a staged folder that replaces the destination in one step, so
a folder never mixes two runs. The CLI's ``prune`` and the window's "Export everything" both end here.
Re-running with the written recipe.json reproduces model.pt exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ExplorerError
from ..fileio import StagedFolder, atomic_write_json
from ..jobs import CancelToken, ProgressFn
from ..model.sharing import twin
from ..prune.plan import Plan
from ..prune.recipe import plan_to_recipe
from ..train.evaluate import evaluate
from ..train.metric import metric_of
from . import export

Log = Callable[[str], None]


# ``keep_loaded=False``: prune the loaded weights in place once the plan's new tensors would take this much
IN_PLACE_MIN_BYTES = 64 << 20


def _quiet(_: str) -> None:
    pass


@dataclass
class PruneOutcome:
    report: dict
    files: dict[str, str] = field(default_factory=dict)


def write_bundle(out_dir: str | Path, state: dict[str, torch.Tensor], recipe: dict, report: dict,
                 layer_names: list[str], archive_meta: dict | None = None, compacted: nn.Module | None = None,
                 example: torch.Tensor | None = None, log: Log = _quiet, exports: tuple[str, ...] = (),
                 module: nn.Module | None = None, sparse_runtime=None) -> dict[str, str]:
    """Write a results folder as a whole; every file is reloaded and checked before the folder is swapped in.

    ``archive_meta`` set: also ``model_sparse.npz``; ``compacted`` set: also ``model_compact.pt`` and,
    when it traces, ``model_compact.ts``. ``exports`` may hold ``safetensors`` (``model.safetensors``, the
    tensors of model.pt) and ``onnx`` (``model.onnx``: the compacted model if there is one, else ``module``,
    the pruned model). A Hugging Face ``module`` is also written back as the folder ``model_hf/``
    (``from_pretrained`` loads it). Returns {file name: final path}.
    """
    out = Path(out_dir)
    names: list[str] = []
    with StagedFolder(out) as stage:
        if compacted is not None:
            export.export_module(compacted, stage / "model_compact.pt", example)
            names.append("model_compact.pt")
            if _is_hf(compacted):
                log("note: no TorchScript export of a transformers model (tracing does not capture its masking code "
                    "reliably); model.onnx (--export onnx) is the deployable graph")
            else:
                try:
                    export.export_torchscript(compacted, stage / "model_compact.ts", example)
                    names.append("model_compact.ts")
                except Exception as e:  # tracing can fail on exotic models; the whole-module export stands
                    log(f"note: TorchScript export of the compacted model skipped ({type(e).__name__}: {e})")
        export.export_checkpoint(state, stage / "model.pt")
        export.export_recipe(recipe, stage / "recipe.json")
        names += ["model.pt", "recipe.json"]
        if archive_meta is not None:
            export.export_sparse_archive(state, layer_names, archive_meta, stage / "model_sparse.npz")
            names.append("model_sparse.npz")
        names += _deploy_exports(stage, state, exports, module, compacted, example, log)
        if sparse_runtime is not None:     # issue 22: deploy/sparse_runtime.py
            from .sparse_runtime import FILE, save_sparse_runtime
            save_sparse_runtime(sparse_runtime, stage / FILE, example)
            names.append(FILE)
        atomic_write_json(stage / "report.json", report)
        names.append("report.json")
    return {n: str(out / n) for n in names}


def _is_hf(module) -> bool:
    from ..model.hf import is_hf

    return is_hf(module)


def _deploy_exports(stage: Path, state, exports, module, compacted, example, log: Log) -> list[str]:
    """model.safetensors, model.onnx and model_hf/ (see :func:`write_bundle`)."""
    from ..model.hf import is_hf, save_folder
    from .formats import export_onnx, export_safetensors

    names = []
    if "safetensors" in exports:
        export_safetensors(state, stage / "model.safetensors")
        names.append("model.safetensors")
    if "onnx" in exports:
        target = compacted if compacted is not None else module
        if target is None or example is None:
            raise ExplorerError("The ONNX export needs the model and an example input.")
        if target is module:
            import copy

            from ..model.layers import load_state
            target = copy.deepcopy(module)
            load_state(target, state)
        export_onnx(target, example, stage / "model.onnx")
        names.append("model.onnx")
    if module is not None and is_hf(module) and example is not None:
        save_folder(module, state, stage / "model_hf", example)
        names.append("model_hf")
    return names


def run_prune(session, out_dir: Path, finetune_cfg=None, compact: bool = False, sparse_archive: bool = False,
              latency_runs: int = 30, latency_batch: int = 1, measure: bool = True,
              progress: ProgressFn | None = None, cancel: CancelToken | None = None, log: Log = _quiet,
              reconstruct: bool = False, runtime=None, checkpoint: Path | None = None,
              resume: bool = False, report_extra: dict | None = None,
              exports: tuple[str, ...] = (), keep_loaded: bool = True, sparse_runtime: bool = False) -> PruneOutcome:
    """Apply the session's plan (reconstruct, fine-tune, compact), measure, and write the results bundle into
    ``out_dir``.

    ``runtime`` (:class:`~explorer.core.train.distributed.Runtime`): the device evaluation and fine-tuning run
    on, and the process group of a data-parallel run (then every rank calls this; only rank 0 measures latency
    and writes, and the others return an empty outcome). ``checkpoint``/``resume``: see
    :func:`~explorer.core.train.finetune.finetune`. ``exports``: also ``safetensors``/``onnx`` files.

    ``keep_loaded=False`` (a caller that discards the session afterwards): without fine-tuning or
    reconstruction, big layers (at least :data:`IN_PLACE_MIN_BYTES` of one-off masks) are pruned in the loaded
    weights themselves (:meth:`Session.prune_loaded_in_place`), so a big model is held once, not twice. The dense
    model's latency is then timed before pruning instead of interleaved with the pruned one's (the report's
    ``latency.interleaved`` says which)."""
    from ..analyse.latency import latency_input, measure_latencies, spread_note
    from ..device import on_device
    from ..model.metrics import Totals
    from ..train.distributed import Runtime
    from ..train.finetune import finetune
    from .compact import (
        COMPACT_RTOL,
        compact_checked,
        compaction_plan,
        has_structure,
        max_output_difference,
        relative_difference,
    )
    from .report import build_report, compact_block, counts_from_state

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExplorerError(f"--out {out_dir} is a file, not a folder.")
    rt = runtime or Runtime()
    ds = session.dataset
    labelled = ds.has_labels and ds.size("test") > 0
    plan = session.plan.copy()
    # the loaded tensors themselves: the session never writes into them (applying rebinds the model's tensors)
    dense_state = dict(session.original_state())
    module = session.module

    quality = metric_of(ds)          # accuracy, or perplexity for a language model

    def test_quality(m):
        return quality.value(evaluate(on_device(m, rt.device), ds, "test", cancel=cancel, runtime=rt)) \
            if labelled else None

    session.apply(Plan())
    dense_acc = test_quality(module)
    example = latency_input(ds, session.require().input_shape, latency_batch)
    if not keep_loaded:
        # nothing asks this session another question afterwards: element/|w| masks of every size one-off (the
        # same masks; a ranking sorts the whole layer and is only worth it for later lookups)
        session.masks.one_off_min_params = 1
    in_place = (not keep_loaded and finetune_cfg is None and not reconstruct
                and session.masks.one_off_bytes(plan) >= IN_PLACE_MIN_BYTES)
    dense_totals: Totals = counts_from_state(session, dense_state)[1]
    dense_model, lat = None, {}
    if measure and in_place:
        # the loaded weights become the pruned ones below: time the dense model now, while it exists
        lat = measure_latencies({"dense": on_device(module, rt.device)}, example, runs=latency_runs,
                                progress=progress, cancel=cancel)
    elif measure:
        # timed later, interleaved with the others; it shares the loaded tensors (it is only run, never trained)
        dense_model = twin(module, dense_state)
    if dense_acc is not None:
        log(f"dense: test {quality.name} {quality.format(dense_acc)}")
    fits = _reconstruct(session, plan, finetune_cfg, progress, cancel, log) if reconstruct else None

    ft_run: dict | None = None
    if finetune_cfg is not None:
        # one-shot starts from the pruned weights; iterative/AGP start dense and prune along the way
        start = plan if finetune_cfg.schedule == "oneshot" else Plan()
        session.apply(start)
        session.own_module_tensors()   # it trains in place: not into the loaded tensors it shares
        result = finetune(module, ds, session.layer_names, plan, start, session.masks_for_state, finetune_cfg,
                          progress=progress, cancel=cancel, runtime=rt, checkpoint=checkpoint, resume=resume)
        if result.resumed_from_epoch is not None:
            log(f"resumed after epoch {result.resumed_from_epoch} from {checkpoint}")
        ft_run = {"device": str(rt.device), "world_size": rt.world_size, "backend": rt.backend,
                  "resumed_from_epoch": result.resumed_from_epoch, "mask_digests": result.mask_digests,
                  "state_digests": result.state_digests,
                  "history": [r.as_dict() for r in result.history]}
        for r in result.history:
            val = r.val_accuracy if quality.name == "accuracy" else getattr(r, "val_perplexity", None)
            log(f"  epoch {r.epoch}: train loss {r.train_loss:.4f}, val {quality.name} {quality.format(val)}, "
                f"sparsity {r.sparsity:.1%}")
        session.adopt(result.state, result.plan, "fine-tuned")
    elif in_place:
        done = session.prune_loaded_in_place(plan)
        log(f"note: {len(done)} layer(s) pruned in the loaded weights themselves, to hold one copy of the "
            "model" + ("; the dense latency was timed before pruning, not interleaved" if measure else ""))
    else:
        session.apply(plan)
    # the model's own tensors (not copied): nothing below writes into them
    pruned_state = {k: v.detach() for k, v in module.state_dict().items()}
    pruned_acc = test_quality(module)
    if not rt.is_main:          # rank 0 measures and writes; the others wait until the folder is in place
        rt.barrier()
        return PruneOutcome(report={})
    nonzero = sum(int(torch.count_nonzero(pruned_state[k])) for k in session.profile.weight_keys.values())
    log(f"pruned: sparsity of prunable weights {1 - nonzero / session.profile.prunable_params:.1%}"
        + (f", test {quality.name} {quality.format(pruned_acc)}" if pruned_acc is not None else ""))

    compact_info = None
    compacted = None
    if compact:
        if not has_structure(session.applied_plan):
            log("note: --compact: the plan has no channel-pruned layers, so compaction removes nothing")
        removals, kept = compaction_plan(session, session.applied_plan)
        compacted, dropped = compact_checked(module, pruned_state, removals, example, cancel=cancel)
        kept.update(dropped)
        for root, why in kept.items():
            log(f"note: --compact: the pruned channels of {root} stay in the compact model (zeroed): {why}")
        diff = max_output_difference(module, compacted, example)
        if relative_difference(module, compacted, example) > 10 * COMPACT_RTOL:
            raise ExplorerError(f"The compacted model's outputs differ from the masked model's by {diff:.3g}; "
                                "not exporting it.")
        c_acc = (quality.value(evaluate(on_device(compacted, rt.device), ds, "test", cancel=cancel))  # rank 0 alone
                 if labelled else None)
        compact_info = compact_block(compacted, session.require().input_shape, c_acc, None, quality.name, example[:1])
        compact_info["max_output_difference"] = diff
        compact_info["kept_zeroed"] = kept
        log(f"compact: {compact_info['params']:,} params, {compact_info['macs']:,} MACs")

    sparse_rt = None
    if sparse_runtime:     # issue 22: layers measured faster as CSR replaced (deploy/sparse_runtime.py)
        from .sparse_runtime import build_sparse_runtime
        sparse_rt = build_sparse_runtime(on_device(module, rt.device), example, session.layer_names,
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
        lat = {**lat, **measure_latencies(models, example, runs=latency_runs, progress=progress, cancel=cancel)}
        for k, v in lat.items():
            log(f"latency {k}: {v}")
        latency_note = spread_note(lat)
        if latency_note:
            log(f"note: {latency_note}")
        if compact_info is not None:
            compact_info["latency_ms"] = lat["compact"].median_ms
    dense_lat, pruned_lat = lat.get("dense"), lat.get("pruned")

    recipe = plan_to_recipe(plan, session.model_spec, ds.spec, seed=session.seed,
                            extra={"finetune": finetune_cfg.as_dict() if finetune_cfg else None,
                                   **session.calibration_record(), "reconstruct": bool(reconstruct)})
    if finetune_cfg is None:
        # without fine-tuning the recipe alone reproduces model.pt: check it now
        bad = session.masks.mismatches(session.applied_plan, pruned_state)   # one layer at a time
        if bad:
            raise ExplorerError(f"Internal check failed: the recipe does not reproduce tensor {bad[0]}.")
    report = build_report(session, session.applied_plan, dense_totals, pruned_state, dense_acc, pruned_acc,
                          dense_lat.median_ms if dense_lat else None, pruned_lat.median_ms if pruned_lat else None,
                          compact_info,
                          extra={"latency": {"batch": latency_batch, "runs": latency_runs, "interleaved": (not in_place) if measure else None,
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
                                 **({"sparse_runtime": sparse_rt.report()} if sparse_rt is not None else {}),
                                 "tool_version": recipe["tool_version"]}, metric=quality.name)
    dense_model = None   # its tensors are the session's; only the model object goes
    meta = {"model": session.model_spec, "arch": session.require().model.arch, "dataset": ds.spec}
    files = write_bundle(out_dir, pruned_state, recipe, report, session.layer_names,
                         archive_meta=meta if sparse_archive else None, compacted=compacted, example=example, log=log,
                         exports=exports, module=module, sparse_runtime=sparse_rt)
    if checkpoint is not None:   # the run is complete and written: its checkpoint has served
        Path(checkpoint).unlink(missing_ok=True)
    rt.barrier()
    session.mark_saved(session.applied_plan)
    return PruneOutcome(report=report, files=files)


def _reconstruct(session, plan: Plan, finetune_cfg, progress, cancel, log: Log) -> dict:
    """Refit the plan's remaining weights on the calibration samples and keep them as the session's weights."""
    from ..errors import PlanError
    from ..prune.reconstruct import reconstruct_plan

    if finetune_cfg is not None and finetune_cfg.schedule != "oneshot":
        raise PlanError("--reconstruct refits the remaining weights for one mask; with the iterative and agp "
                        "schedules the mask changes during fine-tuning.", "Use --schedule oneshot with --reconstruct.")
    rec = reconstruct_plan(session, plan, progress=progress, cancel=cancel)
    for f in rec.layers:
        log(f"  reconstructed {f.name}: output error {f.error_before:.4f} -> {f.error_after:.4f} ({f.method})")
    session.adopt(rec.state, plan, f"reconstructed ({session.calibration_samples} samples)")
    return {"samples": session.calibration_samples,
            "layers": [{"name": f.name, "method": f.method, "error_before": f.error_before,
                        "error_after": f.error_after} for f in rec.layers]}
