"""The ``compress`` command's flags -> the settings of the flow: quantization (bits, index bits, init), the
fine-tuning after pruning, and the training of the shared values; a recipe written by ``compress`` replays
all three (flags given on the command line win)."""
from __future__ import annotations

from explorer.core.errors import PlanError


def _config(d: dict, what: str):
    from explorer.core.train.finetune import FinetuneConfig

    if not isinstance(d, dict):
        raise PlanError(f"The recipe's '{what}' entry must be an object.")
    try:
        return FinetuneConfig(**{**d, "step_sparsities": tuple(d.get("step_sparsities") or ())}).validated()
    except TypeError as e:
        raise PlanError(f"The recipe's '{what}' entry is not valid ({e}).") from None


def model_from_recipe(args) -> None:
    """``prune/compress --recipe R.json`` (or ``prune --from-sensitivity S.json``) without --model/--dataset:
    the recipe's (the scan's) own model and dataset."""
    if args.recipe and args.model is None:
        from explorer.core.prune.recipe import read_recipe

        d = read_recipe(args.recipe)[1]
        args.model = d.get("model") or None
        if args.dataset is None:
            args.dataset = d.get("dataset") or None
    elif getattr(args, "from_sensitivity", None) and args.model is None:
        from explorer.core.analyse.sensitivity import read_scan

        scan = read_scan(args.from_sensitivity)
        args.model = scan.model or None
        if args.dataset is None:
            args.dataset = scan.dataset or None


def compress_configs(session, args, recorded: dict | None, log):
    """(QuantSettings, fine-tuning config or None, shared-value training config or None) for ``args``."""
    from dataclasses import replace

    from explorer.core.compress.quantize import QuantSettings
    from explorer.core.prune.recipe import read_recipe
    from explorer.core.train.quantize import DEFAULT_CONFIG
    from explorer.core.train.settings import finetune_settings

    for flag in ("finetune_epochs", "quantize_epochs"):
        if getattr(args, flag) < 0:
            raise PlanError(f"--{flag.replace('_', '-')} must be 0 or more (got {getattr(args, flag)}).")
    if args.quantize_lr is not None and not args.quantize_lr > 0:
        raise PlanError(f"--quantize-lr must be a positive number (got {args.quantize_lr}).")
    quant = (read_recipe(args.recipe)[1].get("quantize") or {}) if args.recipe else {}
    if not isinstance(quant, dict):
        raise PlanError("The recipe's 'quantize' entry must be an object.")
    settings = QuantSettings.build(session.layers,
                                   args.bits if args.bits is not None else quant.get("bits"),
                                   args.index_bits if args.index_bits is not None else quant.get("index_bits"),
                                   args.init or quant.get("init", "linear"),
                                   quant.get("seed", args.seed) if args.recipe else args.seed)

    finetune_cfg = None
    if recorded and not args.finetune_epochs:
        finetune_cfg = _config(recorded, "finetune")
        log(f"replaying the recipe's fine-tuning: {finetune_cfg.epochs} epoch(s), {finetune_cfg.schedule}")
    elif args.finetune_epochs > 0:
        schedule = args.schedule or ("iterative" if args.iterative_steps > 1 else "oneshot")
        finetune_cfg = finetune_settings(session.profile, epochs=args.finetune_epochs, optimizer=args.optimizer,
                                         lr=args.lr, batch_size=args.batch_size, seed=args.seed, schedule=schedule,
                                         steps=args.iterative_steps)
    elif args.schedule not in (None, "oneshot") or args.iterative_steps > 1:
        raise PlanError("--schedule/--iterative-steps need fine-tuning: add --finetune-epochs N.")

    quantize_cfg = None
    if quant.get("finetune") and not args.quantize_epochs:
        quantize_cfg = _config(quant["finetune"], "quantize.finetune")
        log(f"replaying the recipe's training of the shared values: {quantize_cfg.epochs} epoch(s)")
    elif args.quantize_epochs > 0:
        quantize_cfg = replace(DEFAULT_CONFIG, epochs=args.quantize_epochs, batch_size=args.batch_size,
                               seed=args.seed,
                               lr=args.quantize_lr if args.quantize_lr is not None else DEFAULT_CONFIG.lr).validated()
    elif args.quantize_lr is not None:
        raise PlanError("--quantize-lr needs --quantize-epochs N.")
    return settings, finetune_cfg, quantize_cfg
