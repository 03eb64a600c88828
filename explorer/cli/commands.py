"""The subcommands: argument -> core call -> print. (Parsing is in parser.py; the work is in core.)"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from explorer.core.errors import ExplorerError, PlanError
from explorer.core.fileio import expand
from explorer.core.model.metrics import format_bytes, format_count

from .progress import log, tqdm_progress
from .speed_cmd import cmd_speed


def open_session(args):
    from explorer.core.model.loading import parse_input_shape
    from explorer.core.session import Session

    return Session.open(args.model, args.dataset, weights=args.weights, arch=args.arch, trust=args.trust,
                        input_shape=parse_input_shape(args.input_shape))


def device_of(args):
    """The torch device ``--device`` names (auto: CUDA when present); refused clearly when absent."""
    from explorer.core.device import describe, resolve_device

    dev = resolve_device(getattr(args, "device", "auto"))
    if dev.type != "cpu" and not getattr(args, "_device_logged", False):
        log(f"device: {describe(dev)}")
        args._device_logged = True
    return dev


def _runtime(args):
    from explorer.core.train.distributed import Runtime

    dev = device_of(args)
    return Runtime(device=dev) if dev.type != "cpu" else None


def run_command(args) -> int:
    commands = {"gui": _gui, "info": cmd_info, "prune": cmd_prune, "sensitivity": cmd_sensitivity,
                "train-builtin": cmd_train, "compress": cmd_compress, "compare": cmd_compare,
                "finetune": cmd_finetune, "speed": lambda a: cmd_speed(a, open_session, device_of)}
    fn = commands.get(args.command)
    if fn is None:
        raise ExplorerError(f"Unknown command {args.command}")
    if getattr(args, "device", None) is not None and args.command != "finetune":
        device_of(args)          # an absent device is refused before any work starts
    return fn(args)


def _gui(args) -> int:
    from explorer.gui.window.app import run_gui
    return run_gui(args)


# ---------------------------------------------------------------- info

def info_dict(session) -> dict:
    t = session.totals()
    r = session.require()
    layers = []
    for l in session.layers:
        c = session.layer_counts(l.name)
        lp = session.plan.get(l.name)
        linked = session.linked_layers(l.name)
        layers.append({
            "name": l.name, "type": l.kind, "shape": list(l.weight_shape), "params": l.params,
            "macs": l.macs, "sparsity": round(c.sparsity, 6), "nonzero": c.nonzero,
            "granularity": str(lp.granularity), "criterion": str(lp.criterion), "output_shape": list(l.output_shape),
            "is_output": l.is_output, "linked": list(linked) if len(linked) > 1 else [],
        })
    return {
        "model": session.model_spec, "dataset": session.dataset.spec, "input_shape": list(r.input_shape),
        "layers": layers,
        "totals": {"params": t.params, "prunable_params": t.prunable_params, "nonzero_params": t.nonzero_params,
                   "macs": t.macs, "size_bytes": t.dense_bytes, "sparsity": round(t.sparsity, 6),
                   "layers": len(layers)},
        "notes": r.notes,
    }


def cmd_info(args) -> int:
    if args.list_models:
        from explorer.core.model.zoo import BUILTINS, torchvision_archs

        if args.json:
            print(json.dumps({"builtin": list(BUILTINS), "torchvision": torchvision_archs()}, indent=2))
        else:
            print("built-in:")
            for b in BUILTINS.values():
                print(f"  {b.name:12s} {b.description}")
            print("torchvision (random weights; torchvision:<arch>):")
            print("  " + ", ".join(torchvision_archs()))
        return 0
    s = open_session(args)
    d = info_dict(s)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"model {d['model']}   dataset {d['dataset']}   input {tuple(d['input_shape'])}")
    rows = [(l["name"], l["type"], "x".join(map(str, l["shape"])), format_count(l["params"]),
             format_count(l["macs"]), f"{l['sparsity']:.1%}") for l in d["layers"]]
    head = ("layer", "type", "shape", "params", "MACs", "sparsity")
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print("  ".join(h.ljust(w[i]) if i < 3 else h.rjust(w[i]) for i, h in enumerate(head)))
    for r in rows:
        print("  ".join(str(v).ljust(w[i]) if i < 3 else str(v).rjust(w[i]) for i, v in enumerate(r)))
    t = d["totals"]
    print(f"{t['layers']} prunable layers; {t['params']:,} parameters ({t['prunable_params']:,} prunable), "
          f"{t['macs']:,} MACs per sample, {format_bytes(t['size_bytes'])} fp32")
    for n in d["notes"]:
        print(f"note: {n}")
    return 0


# ---------------------------------------------------------------- prune

def plan_from_args(session, args):
    """The plan the prune command asks for (set on the session). Refuses ambiguous or impossible requests.
    Returns the fine-tuning a recipe recorded (or None)."""
    from explorer.core.prune.recipe import read_recipe

    sources = [bool(args.recipe), args.sparsity is not None, bool(getattr(args, "from_sensitivity", None))]
    if sum(sources) == 0:
        raise PlanError("Nothing to prune: give --sparsity S (with --granularity/--criterion/--scope), "
                        "--recipe R.json, or --from-sensitivity S.json --max-drop D.")
    if sum(sources) > 1:
        raise PlanError("Give only one of --recipe, --sparsity and --from-sensitivity.")
    if args.recipe:
        from explorer.core.finetune_job import apply_recipe

        _, d = read_recipe(args.recipe)
        apply_recipe(session, d, log, calibration_given=getattr(args, "calibration_samples", None) is not None)
        if d.get("reconstruct"):
            args.reconstruct = True
        if d.get("sequential_calibration") and hasattr(args, "sequential_calibration"):
            args.sequential_calibration = True
        return d.get("finetune")
    if getattr(args, "from_sensitivity", None):
        _plan_from_scan(session, args)
        return None
    names = args.layers or session.layer_names
    for n in names:
        session.layer(n)  # unknown layer -> clear error
    if getattr(args, "allocation", "uniform") != "uniform":
        _plan_from_allocation(session, args, names)
        return None
    if args.scope == "global":
        skipped = session.set_global(names, args.sparsity, args.granularity, args.criterion, args.max_layer_sparsity)
    else:
        skipped = session.set_uniform(names, args.sparsity, args.granularity, args.criterion)
    if skipped:
        if args.layers or len(skipped) == len(names):
            raise PlanError("; ".join(dict.fromkeys(skipped.values())))
        for n, why in skipped.items():
            log(f"note: {n} left dense: {why}")
    return None


def _plan_from_allocation(session, args, names) -> None:
    """--allocation owl|alpha: per-layer (per-block) sparsities around --sparsity (analyse/owl.py)."""
    from explorer.core.analyse.owl import allocate, fitting_layers

    if args.scope == "global":
        raise PlanError(f"--allocation {args.allocation} sets each layer's sparsity itself; it works with the local "
                        "scope, not --scope global.")
    fits, skipped = fitting_layers(session, names, args.sparsity, args.granularity, args.criterion,
                                   strict=bool(args.layers))
    for n, why in skipped.items():
        log(f"note: {n} left dense: {why}")
    a = allocate(session, args.allocation, args.sparsity, fits, args.granularity, args.criterion,
                 m=args.owl_m, lam=args.owl_lambda, progress=tqdm_progress(args.allocation))
    session.set_plan(a.plan)
    spread = sorted(set(round(v, 4) for v in a.sparsities.values()))
    log(f"allocation {args.allocation} ({a.record()['level']} level): sparsities {spread[0]:.1%} to {spread[-1]:.1%}, "
        f"overall {session.totals(session.plan).sparsity:.1%}")
    args.allocation_record = a.record()


def _finetune_config(args, epochs: int, session=None, **kw):
    """The fine-tune settings of ``args``, resolved like every other door does (train/settings.py)."""
    from explorer.core.train.settings import finetune_settings

    return finetune_settings(session.profile if session is not None else None, epochs=epochs,
                             optimizer=args.optimizer, lr=args.lr, batch_size=args.batch_size, seed=args.seed, **kw)


def _schedule_settings(args) -> dict:
    """The schedule flags that were given, as FinetuneConfig fields (the others keep their defaults)."""
    kw: dict = {}
    if getattr(args, "spacing", None):
        kw["spacing"] = args.spacing
    if getattr(args, "step_sparsities", None):
        try:
            kw["step_sparsities"] = tuple(float(v) for v in args.step_sparsities.split(",") if v.strip())
        except ValueError:
            raise PlanError(f"--step-sparsities takes comma-separated numbers such as 0.5,0.8,0.9 "
                            f"(got '{args.step_sparsities}').") from None
        kw["steps"] = len(kw["step_sparsities"])
    if getattr(args, "no_rewind", False):
        kw["rewind"] = False
    if getattr(args, "agp_end", None) is not None:
        kw["agp_end"] = args.agp_end
    if getattr(args, "agp_updates", None) is not None:
        kw["agp_updates"] = args.agp_updates
    return kw


def _plan_from_scan(session, args) -> None:
    from explorer.core.analyse.allocate import allocate_from_file

    if args.max_drop is None:
        raise PlanError("--from-sensitivity needs --max-drop D (allowed accuracy drop in points).")
    if getattr(args, "search", False):
        from explorer.core.analyse.search import search_allocation
        from explorer.core.analyse.sensitivity import read_scan

        cfg = _finetune_config(args, args.finetune_epochs or 3, session, **_schedule_settings(args))
        r = search_allocation(session, read_scan(args.from_sensitivity), args.max_drop, cfg,
                              cap=args.max_layer_sparsity, progress=tqdm_progress("search"), device=device_of(args))
        for t in r.trials:
            log(f"  tried {t.sparsity:.1%}: val {t.val_accuracy:.2f}% ({'ok' if t.ok else 'too low'})")
        log(f"search: sparsest within {args.max_drop:g} points after fine-tuning: {r.sparsity:.1%} "
            f"(val {r.val_accuracy:.2f}% vs dense {r.dense_val_accuracy:.2f}%)")
        session.set_plan(r.plan)
        return
    plan, info = allocate_from_file(session, args.from_sensitivity, max_drop=args.max_drop,
                                    cap=args.max_layer_sparsity)
    log(f"allocated from sensitivity: predicted overall sparsity {info['sparsity']:.1%}")
    for n in info["notes"][1:]:
        log(f"note: {n}")
    session.set_plan(plan)


def check_prune_flags(args) -> None:
    """The prune command's numeric flags, checked like a recipe's values (before any work starts)."""
    from explorer.core.checks import number
    from explorer.core.train.recipe_settings import FINETUNE_LIMITS as L

    number(args.finetune_epochs, "--finetune-epochs", 0, L["epochs"][1], integer=True)
    number(args.iterative_steps, "--iterative-steps", *L["steps"], integer=True)
    number(args.batch_size, "--batch-size", *L["batch_size"], integer=True)
    number(args.seed, "--seed", *L["seed"], integer=True)
    if args.lr is not None:
        number(args.lr, "--lr", *L["lr"][:2], lo_open=True)
    number(args.latency_runs, "--latency-runs", 1, 100_000, integer=True)
    number(args.latency_batch, "--latency-batch", 1, 4096, integer=True)
    number(args.max_layer_sparsity, "--max-layer-sparsity", 0.0, 1.0)
    if args.sparsity is not None:
        number(args.sparsity, "--sparsity", 0.0, 1.0)
    if args.max_drop is not None:
        number(args.max_drop, "--max-drop", 0.0, 100.0)
    if getattr(args, "allocation", "uniform") != "uniform" and args.sparsity is None:
        raise PlanError(f"--allocation {args.allocation} distributes a target sparsity: give --sparsity S.")


def cmd_prune(args) -> int:
    from explorer.core.deploy.formats import parse_exports
    from explorer.core.flows.prune import run as run_prune
    from explorer.core.train.recipe_settings import finetune_from_recipe

    from .compress_args import model_from_recipe

    check_prune_flags(args)
    exports = parse_exports(getattr(args, "export", None))
    out_dir = expand(args.out)
    model_from_recipe(args)          # --recipe without --model: the recipe's own model and dataset
    session = open_session(args)
    for note in session.require().notes:
        if note.startswith("non-finite"):
            log(f"note: {note}")
    session.set_seed(args.seed)
    _calibration_from_args(session, args)
    if _is_block_request(args):
        return _prune_blocks(session, args, out_dir)
    recorded = plan_from_args(session, args)
    cfg = None
    sched_kw = _schedule_settings(args)
    if recorded and not args.finetune_epochs:
        # the recipe records the fine-tuning that produced its model: replay it for an identical result
        cfg = finetune_from_recipe(recorded)
        log(f"replaying the recipe's fine-tuning: {cfg.epochs} epoch(s), {cfg.schedule}")
    elif args.finetune_epochs and args.finetune_epochs > 0:
        iterative = args.iterative_steps > 1 or "step_sparsities" in sched_kw
        schedule = args.schedule or ("iterative" if iterative else "oneshot")
        if "step_sparsities" in sched_kw and schedule != "iterative":
            raise PlanError(f"--step-sparsities are the steps of an iterative schedule, not of {schedule}.")
        sched_kw.setdefault("steps", args.iterative_steps)
        cfg = _finetune_config(args, args.finetune_epochs, session, schedule=schedule, **sched_kw)
    elif args.schedule not in (None, "oneshot") or args.iterative_steps > 1 or sched_kw:
        raise PlanError("--schedule/--iterative-steps (and the schedule's settings) need fine-tuning: "
                        "add --finetune-epochs N.")
    bar = tqdm_progress("prune")
    try:
        out = run_prune(session.snapshot(), out_dir, finetune_cfg=cfg, compact=args.compact,
                        sparse_archive=args.sparse_archive, sparse_runtime=args.sparse_runtime,
                        latency_runs=args.latency_runs,
                        latency_batch=args.latency_batch, measure=not args.no_latency, progress=bar, log=log,
                        reconstruct=args.reconstruct, runtime=_runtime(args), exports=exports,
                        own_loaded=True,   # the session ends here: big layers may be pruned in place
                        sequential_calibration=args.sequential_calibration,
                        recipe_extra=({"allocation": args.allocation_record}
                                      if getattr(args, "allocation_record", None) else None),
                        report_extra=({"allocation": args.allocation_record}
                                      if getattr(args, "allocation_record", None) else None))
        session.mark_pruned_in_place(out.plan, out.in_place)
    finally:
        bar.close()
    r = out.report
    summary = {"sparsity": r["sparsity"], "compression_ratio": r["compression_ratio"],
               "dense_accuracy": r["dense"]["accuracy"], "pruned_accuracy": r["pruned"]["accuracy"]}
    if "perplexity" in r["dense"]:
        summary.update(dense_perplexity=r["dense"]["perplexity"], pruned_perplexity=r["pruned"]["perplexity"])
    print(json.dumps({**summary, "files": out.files}, indent=2))
    return 0


def _is_block_request(args) -> bool:
    if args.recipe:
        from explorer.core.prune.recipe import read_recipe
        return read_recipe(args.recipe)[1].get("granularity") == "block"
    return args.granularity == "block"


def _prune_blocks(session, args, out_dir) -> int:
    """--granularity block (or a block recipe): drop whole blocks (flows/depth.py)."""
    from explorer.core.flows.depth import recorded_blocks
    from explorer.core.flows.depth import run as run_depth
    from explorer.core.prune.recipe import read_recipe

    recipe = read_recipe(args.recipe)[1] if args.recipe else None
    dropped = recorded_blocks(recipe) if recipe else None
    if recipe:
        args.sparsity = (recipe.get("blocks") or {}).get("sparsity")
    if dropped is None and args.sparsity is None:
        raise PlanError("--granularity block needs --sparsity S: the share of the skippable blocks to drop.")
    if args.finetune_epochs or args.reconstruct or args.scope == "global" or args.layers or \
            getattr(args, "allocation", "uniform") != "uniform":
        raise PlanError("--granularity block drops whole blocks; it does not combine with fine-tuning, "
                        "--reconstruct, --scope global, --layers or --allocation.")
    bar = tqdm_progress("blocks")
    try:
        out = run_depth(session.snapshot(), out_dir, sparsity=args.sparsity, dropped=dropped,
                        latency_runs=args.latency_runs, latency_batch=args.latency_batch,
                        measure=not args.no_latency, progress=bar, log=log)
    finally:
        bar.close()
    r = out.report
    summary = {"dropped_blocks": out.dropped, "sparsity": r["sparsity"],
               f"dense_{r.get('metric', 'accuracy')}": r["dense"].get(r.get("metric", "accuracy")),
               f"pruned_{r.get('metric', 'accuracy')}": r["pruned"].get(r.get("metric", "accuracy")),
               "dense_latency_ms": r["dense"]["latency_ms"], "pruned_latency_ms": r["pruned"]["latency_ms"]}
    print(json.dumps({**summary, "files": out.files}, indent=2))
    return 0


# ---------------------------------------------------------------- finetune

def cmd_finetune(args) -> int:
    from explorer.core.checks import number
    from explorer.core.finetune_job import run_finetune_job
    from explorer.core.model.loading import parse_input_shape
    from explorer.core.train.recipe_settings import FINETUNE_LIMITS

    if args.epochs is not None:
        number(args.epochs, "--epochs", *FINETUNE_LIMITS["epochs"], integer=True)
    number(args.latency_runs, "--latency-runs", 1, 100_000, integer=True)
    open_kw = {"weights": args.weights, "arch": args.arch, "trust": args.trust,
               "input_shape": parse_input_shape(args.input_shape)}
    bar = tqdm_progress("finetune")
    try:
        out, rt = run_finetune_job(args.recipe, expand(args.out), model=args.model, dataset=args.dataset,
                                   epochs=args.epochs, device=args.device, resume=args.resume,
                                   measure=not args.no_latency, latency_runs=args.latency_runs, open_kw=open_kw,
                                   progress=bar, log=log)
    finally:
        bar.close()
    if rt.is_main:
        r = out.report
        print(json.dumps({"world_size": r["world_size"], "sparsity": r["sparsity"],
                          "dense_accuracy": r["dense"]["accuracy"], "pruned_accuracy": r["pruned"]["accuracy"],
                          "files": out.files}, indent=2))
    return 0


# ---------------------------------------------------------------- sensitivity

def _runtime(args):
    """Under torchrun: this process's place among the processes the points are dealt out to (else None)."""
    from explorer.core.train.distributed import launched_by_torchrun, start

    return start(getattr(args, "device", "auto")) if launched_by_torchrun() else None


def _bar(desc: str, rt):
    from explorer.cli.progress import tqdm_progress as bar

    if rt is None or rt.is_main:
        return bar(desc)
    quiet = lambda p: None      # noqa: E731 -- the other processes draw no bar
    quiet.close = lambda: None
    return quiet


def cmd_sensitivity(args) -> int:
    from explorer.core.analyse.sensitivity import parse_sparsities, run_scan_to_files
    from explorer.core.analyse.sequential import parse_drops
    from explorer.core.train.distributed import stop

    sparsities = parse_sparsities(args.sparsities)
    drops = parse_drops(args.drops)
    rt = _runtime(args)
    try:
        session = open_session(args)
        _calibration_from_args(session, args)
        bar = _bar("sensitivity", rt)
        try:
            result = run_scan_to_files(session, sparsities, args.granularity, args.criterion, args.layers,
                                       Path(args.out), csv=args.csv, split=args.split, early_stop=args.early_stop,
                                       latency=args.latency, naive=args.naive, progress=bar,
                                       device=rt.device if rt else device_of(args), exact=args.exact, drops=drops,
                                       runtime=rt, precision=args.precision)
        finally:
            bar.close()
    finally:
        if rt is not None:
            stop(rt)
    if rt is not None and not rt.is_main:
        return 0
    dense = "dense_" + result.get("metric", "accuracy")       # dense_perplexity for a language model
    print(json.dumps({"out": str(args.out), dense: result[dense],
                      "layers": len(result["layers"]), "seconds": result.get("seconds"),
                      "exact": result["exact"]}, indent=2))
    return 0


# ---------------------------------------------------------------- compare

def _calibration_from_args(session, args) -> None:
    if getattr(args, "calibration_samples", None) is not None:
        session.set_calibration_samples(args.calibration_samples)


def cmd_compare(args) -> int:
    from explorer.core.analyse.compare import compare_criteria, winners, write_compare

    session = open_session(args)
    session.set_seed(args.seed)
    _calibration_from_args(session, args)
    if args.finetune_epochs < 0:
        raise PlanError(f"--finetune-epochs must be 0 or more (got {args.finetune_epochs}).")
    cfg = _finetune_config(args, args.finetune_epochs, session) if args.finetune_epochs else None
    rt = _runtime(args)
    bar = _bar("compare", rt)
    try:
        result = compare_criteria(session, args.criteria, args.sparsities, args.granularity,
                                  reconstruct=args.reconstruct, finetune=cfg, layers=args.layers, progress=bar,
                                  device=rt.device if rt else device_of(args), runtime=rt)
    finally:
        bar.close()
        if rt is not None:
            from explorer.core.train.distributed import stop
            stop(rt)
    if rt is not None and not rt.is_main:
        return 0
    for n in result.notes:
        log(f"note: {n}")
    write_compare(result, Path(args.out))
    summary = {"out": str(args.out), "split": result.split, "dense_accuracy": result.dense_accuracy,
               "best_one_shot": dict(zip(map(str, result.sparsities), winners(result))),
               "seconds": {k: round(v, 2) for k, v in result.seconds.items()}}
    if cfg is not None:
        summary["best_finetuned"] = dict(zip(map(str, result.sparsities), winners(result, finetuned=True)))
    print(json.dumps(summary, indent=2))
    return 0


# ---------------------------------------------------------------- train-builtin

def cmd_train(args) -> int:
    from explorer.core.train.builtin_training import TRAINABLE, train_builtin

    out = expand(args.out)
    for name in args.models:
        if name not in TRAINABLE:
            raise ExplorerError(f"Only the built-in models {', '.join(TRAINABLE)} can be retrained here, not "
                                f"'{name}'.")
        train_builtin(name, out, seed=args.seed, log=lambda m: print(m, file=sys.stderr))
    return 0


# ---------------------------------------------------------------- compress (Deep Compression, issue 10)

def cmd_compress(args) -> int:
    from explorer.core.compress.accounting import format_table, table2
    from explorer.core.flows.compress import run as run_compress

    from .compress_args import compress_configs, model_from_recipe

    model_from_recipe(args)
    session = open_session(args)
    session.set_seed(args.seed)
    recorded = plan_from_args(session, args)
    settings, finetune_cfg, quantize_cfg = compress_configs(session, args, recorded, log)
    bar = tqdm_progress("compress")
    try:
        result, files = run_compress(session.snapshot(), settings, Path(args.out), finetune_cfg, quantize_cfg,
                                     progress=bar, log=log, device=device_of(args))
    finally:
        bar.close()
    log(format_table(table2(result.layers, result.stages)))
    print(json.dumps({"stages": result.stages, "files": files}, indent=2))
    return 0
