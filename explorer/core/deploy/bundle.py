"""The CLI's prune and sensitivity flows, as plain functions on a session.

``prune``: plan (recipe | uniform/global sparsity | sensitivity allocation)
-> evaluate dense -> apply -> optional fine-tune -> evaluate -> optional
compaction -> measure latencies -> write model.pt, recipe.json, report.json
(and model_compact.pt / model_sparse.npz). Re-running with the written
recipe.json reproduces model.pt exactly.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ExplorerError, PlanError
from ..train.evaluate import evaluate
from ..jobs import CancelToken, Progress, ProgressFn
from ..prune.recipe import Plan, plan_to_recipe, read_recipe


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tqdm_progress(desc: str):
    """A Progress callback drawing a tqdm bar on stderr (quiet when not a terminal)."""
    from tqdm import tqdm

    bar = tqdm(total=1000, desc=desc, leave=False, disable=not sys.stderr.isatty(), file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def cb(p: Progress) -> None:
        if p.fraction is not None:
            bar.n = int(p.fraction * 1000)
        if p.message:
            bar.set_postfix_str(p.message[:60], refresh=False)
        bar.refresh()
    cb.close = bar.close  # type: ignore[attr-defined]
    return cb


def plan_from_args(session, args) -> Plan:
    """The plan the prune command asks for. Refuses ambiguous or impossible requests clearly."""
    sources = [bool(args.recipe), args.sparsity is not None, bool(getattr(args, "from_sensitivity", None))]
    if sum(sources) == 0:
        raise PlanError("Nothing to prune: give --sparsity S (with --granularity/--criterion/--scope), "
                        "--recipe R.json, or --from-sensitivity S.json --max-drop D.")
    if sum(sources) > 1:
        raise PlanError("Give only one of --recipe, --sparsity and --from-sensitivity.")
    if args.recipe:
        plan, d = read_recipe(args.recipe)
        if d.get("model") and d["model"] != session.model_spec:
            _log(f"note: recipe written for {d['model']}, applying to {session.model_spec}")
        if isinstance(d.get("seed"), int):
            session.set_seed(d["seed"])      # the random criterion replays exactly
        session.set_plan(plan)
        args._recipe_finetune = d.get("finetune")
        return session.plan
    if getattr(args, "from_sensitivity", None):
        from ..analyse.allocate import allocate_from_file
        if args.max_drop is None:
            raise PlanError("--from-sensitivity needs --max-drop D (allowed accuracy drop in points).")
        if getattr(args, "search", False):
            from ..train.finetune import FinetuneConfig
            from ..analyse.search import search_allocation
            from ..analyse.sensitivity import read_scan

            cfg = FinetuneConfig(epochs=args.finetune_epochs or 3, optimizer=args.optimizer,
                                 lr=args.lr if args.lr is not None else (1e-3 if args.optimizer == "adam" else 0.01),
                                 batch_size=args.batch_size, seed=args.seed)
            r = search_allocation(session, read_scan(args.from_sensitivity), args.max_drop, cfg,
                                  cap=args.max_layer_sparsity, progress=tqdm_progress("search"))
            for t in r.trials:
                _log(f"  tried {t.sparsity:.1%}: val {t.val_accuracy:.2f}% ({'ok' if t.ok else 'too low'})")
            _log(f"search: sparsest within {args.max_drop:g} points after fine-tuning: {r.sparsity:.1%} "
                 f"(val {r.val_accuracy:.2f}% vs dense {r.dense_val_accuracy:.2f}%)")
            session.set_plan(r.plan)
            return session.plan
        plan, info = allocate_from_file(session, args.from_sensitivity, max_drop=args.max_drop,
                                        cap=args.max_layer_sparsity)
        _log(f"allocated from sensitivity: predicted overall sparsity {info['sparsity']:.1%}")
        session.set_plan(plan)
        return session.plan
    names = args.layers or session.layer_names
    for n in names:
        session.layer(n)  # unknown layer -> clear error
    explicit = bool(args.layers)
    if args.scope == "global":
        skipped = session.set_global(names, args.sparsity, args.granularity, args.criterion, args.max_layer_sparsity)
    else:
        skipped = session.set_uniform(names, args.sparsity, args.granularity, args.criterion)
    if skipped:
        if explicit:
            raise PlanError("; ".join(skipped.values()))
        for n, why in skipped.items():
            _log(f"note: {n} left dense: {why}")
    return session.plan


@dataclass
class PruneOutcome:
    report: dict
    files: dict[str, str] = field(default_factory=dict)


def run_prune(session, out_dir: Path, finetune_cfg=None, compact: bool = False, sparse_archive: bool = False,
              latency_runs: int = 30, latency_batch: int = 1, measure: bool = True,
              progress: ProgressFn | None = None, cancel: CancelToken | None = None, log=_log) -> PruneOutcome:
    """Apply the session's plan (fine-tune, compact), measure, and write the outputs into ``out_dir``."""
    from . import export
    from .compact import channel_removals, compact_model, has_structure, max_output_difference
    from ..train.finetune import finetune
    from ..analyse.latency import latency_input, measure_latency
    from .report import build_report, compact_block

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExplorerError(f"--out {out_dir} is a file, not a folder.")
    ds = session.dataset
    labelled = ds.has_labels and ds.size("test") > 0
    plan = session.plan.copy()
    dense_state = {k: v.clone() for k, v in session.original_state().items()}
    module = session.module

    session.apply(Plan())
    dense_acc = evaluate(module, ds, "test", cancel=cancel).accuracy if labelled else None
    example = latency_input(ds, session.require().input_shape, latency_batch)
    dense_lat = measure_latency(module, example, runs=latency_runs, cancel=cancel, label="dense") if measure else None
    if dense_acc is not None:
        log(f"dense: accuracy {dense_acc:.2f}%" + (f", latency {dense_lat}" if dense_lat else ""))

    if finetune_cfg is not None:
        # one-shot starts from the pruned weights; iterative/AGP start dense and prune along the way
        start = plan if finetune_cfg.schedule == "oneshot" else Plan()
        session.apply(start)
        result = finetune(module, ds, session.layer_names, plan, start, session.masks_for_state, finetune_cfg,
                          progress=progress, cancel=cancel)
        for r in result.history:
            log(f"  epoch {r.epoch}: train loss {r.train_loss:.4f}, val acc "
                + (f"{r.val_accuracy:.2f}%" if r.val_accuracy is not None else "n/a") + f", sparsity {r.sparsity:.1%}")
        session.adopt(result.state, result.plan, "fine-tuned")
    else:
        session.apply(plan)
    pruned_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    pruned_acc = evaluate(module, ds, "test", cancel=cancel).accuracy if labelled else None
    pruned_lat = measure_latency(module, example, runs=latency_runs, cancel=cancel, label="pruned") if measure else None
    log(f"pruned: sparsity of prunable weights {1 - sum(int(torch.count_nonzero(pruned_state[f'{n}.weight'])) for n in session.layer_names) / session.profile.prunable_params:.1%}"
        + (f", accuracy {pruned_acc:.2f}%" if pruned_acc is not None else "")
        + (f", latency {pruned_lat}" if pruned_lat else ""))

    files: dict[str, str] = {}
    compact_info = None
    compacted = None
    if compact:
        if not has_structure(session.applied_plan):
            log("note: --compact: the plan has no channel-pruned layers, so compaction removes nothing")
        compacted = compact_model(module, pruned_state, channel_removals(session, session.applied_plan), example,
                                  cancel=cancel)
        diff = max_output_difference(module, compacted, example)
        with torch.inference_mode():
            scale = float(module.eval()(example).abs().max())
        if diff > 1e-3 * max(1.0, scale):
            raise ExplorerError(f"The compacted model's outputs differ from the masked model's by {diff:.3g}; "
                                "not exporting it.")
        c_acc = evaluate(compacted, ds, "test", cancel=cancel).accuracy if labelled else None
        c_lat = measure_latency(compacted, example, runs=latency_runs, cancel=cancel, label="compact") if measure else None
        compact_info = compact_block(compacted, session.require().input_shape, c_acc, c_lat.median_ms if c_lat else None)
        compact_info["max_output_difference"] = diff
        files["model_compact.pt"] = str(export.export_module(compacted, out_dir / "model_compact.pt", example))
        try:
            files["model_compact.ts"] = str(export.export_torchscript(compacted, out_dir / "model_compact.ts", example))
        except Exception as e:  # tracing can fail on exotic models; the whole-module export above stands
            log(f"note: TorchScript export of the compacted model skipped ({type(e).__name__}: {e})")
        log(f"compact: {compact_info['params']:,} params, {compact_info['macs']:,} MACs"
            + (f", latency {c_lat}" if c_lat else ""))

    recipe = plan_to_recipe(plan, session.model_spec, ds.spec, seed=session.seed,
                            extra={"finetune": dict(finetune_cfg.__dict__) if finetune_cfg else None})
    if finetune_cfg is None:
        # without fine-tuning the recipe alone reproduces model.pt: check it now
        check = session.masked_state(session.applied_plan)
        for k, v in pruned_state.items():
            if not torch.equal(check[k], v):
                raise ExplorerError(f"Internal check failed: the recipe does not reproduce tensor {k}.")
    files["model.pt"] = str(export.export_checkpoint(pruned_state, out_dir / "model.pt"))
    files["recipe.json"] = str(export.export_recipe(recipe, out_dir / "recipe.json"))
    if sparse_archive:
        meta = {"model": session.model_spec, "arch": session.require().model.arch, "dataset": ds.spec}
        files["model_sparse.npz"] = str(export.export_sparse_archive(pruned_state, session.layer_names, meta,
                                                                      out_dir / "model_sparse.npz"))
    report = build_report(session, session.applied_plan, dense_state, pruned_state, dense_acc, pruned_acc,
                          dense_lat.median_ms if dense_lat else None, pruned_lat.median_ms if pruned_lat else None,
                          compact_info,
                          extra={"latency": {"batch": latency_batch, "runs": latency_runs,
                                             "threads": dense_lat.threads if dense_lat else None,
                                             "dense": dense_lat.as_dict() if dense_lat else None,
                                             "pruned": pruned_lat.as_dict() if pruned_lat else None},
                                 "finetune": ({"epochs": finetune_cfg.epochs, "schedule": finetune_cfg.schedule,
                                               "steps": finetune_cfg.steps, "lr": finetune_cfg.lr,
                                               "optimizer": finetune_cfg.optimizer}
                                              if finetune_cfg else None),
                                 "tool_version": recipe["tool_version"]})
    files["report.json"] = str(export.atomic_write_json(out_dir / "report.json", report))
    session.saved_plan = session.applied_plan.copy()
    return PruneOutcome(report=report, files=files)


def cmd_prune(args) -> int:
    from explorer.commands import _open_session
    from ..train.finetune import FinetuneConfig

    session = _open_session(args)
    session.set_seed(args.seed)
    plan_from_args(session, args)
    cfg = None
    if args.finetune_epochs is not None and args.finetune_epochs < 0:
        raise PlanError(f"--finetune-epochs must be 0 or more (got {args.finetune_epochs}).")
    recorded = getattr(args, "_recipe_finetune", None)
    if recorded and not args.finetune_epochs:
        # the recipe records the fine-tuning that produced its model: replay it for an identical result
        try:
            cfg = FinetuneConfig(**recorded).validated()
        except TypeError as e:
            raise PlanError(f"The recipe's 'finetune' entry is not valid ({e}).") from None
        _log(f"replaying the recipe's fine-tuning: {cfg.epochs} epoch(s), {cfg.schedule}")
    elif args.finetune_epochs and args.finetune_epochs > 0:
        schedule = args.schedule or ("iterative" if args.iterative_steps > 1 else "oneshot")
        lr = args.lr if args.lr is not None else (1e-3 if args.optimizer == "adam" else 0.01)
        cfg = FinetuneConfig(epochs=args.finetune_epochs, lr=lr, optimizer=args.optimizer,
                             batch_size=args.batch_size, seed=args.seed, schedule=schedule,
                             steps=args.iterative_steps).validated()
    elif args.schedule not in (None, "oneshot") or args.iterative_steps > 1:
        raise PlanError("--schedule/--iterative-steps need fine-tuning: add --finetune-epochs N.")
    bar = tqdm_progress("prune")
    try:
        out = run_prune(session, Path(args.out), finetune_cfg=cfg, compact=args.compact,
                        sparse_archive=args.sparse_archive, latency_runs=args.latency_runs,
                        latency_batch=args.latency_batch, measure=not args.no_latency, progress=bar)
    finally:
        bar.close()
    r = out.report
    print(json.dumps({"sparsity": r["sparsity"], "compression_ratio": r["compression_ratio"],
                      "dense_accuracy": r["dense"]["accuracy"], "pruned_accuracy": r["pruned"]["accuracy"],
                      "files": out.files}, indent=2))
    return 0


def cmd_sensitivity(args) -> int:
    from explorer.commands import _open_session
    from ..analyse.sensitivity import parse_sparsities, run_scan_to_files

    session = _open_session(args)
    sparsities = parse_sparsities(args.sparsities)
    bar = tqdm_progress("sensitivity")
    try:
        result = run_scan_to_files(session, sparsities, args.granularity, args.criterion, args.layers,
                                   Path(args.out), csv=args.csv, split=args.split, early_stop=args.early_stop,
                                   latency=args.latency, naive=args.naive, progress=bar)
    finally:
        bar.close()
    print(json.dumps({"out": str(args.out), "dense_accuracy": result["dense_accuracy"],
                      "layers": len(result["layers"]), "seconds": result.get("seconds")}, indent=2))
    return 0
