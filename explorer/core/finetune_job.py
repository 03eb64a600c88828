"""Fine-tuning a recipe as a job of its own: on one process, or data-parallel under ``torchrun``.

``run_finetune_job`` opens the recipe's model and dataset (or the ones given), replays its plan, fine-tunes with
the recipe's recorded fine-tuning (or the per-model defaults), and writes the usual results folder
(``model.pt``, ``recipe.json`` with the fine-tuning recorded, ``report.json`` with ``"world_size"``) through
the prune flow (:func:`explorer.core.flows.prune.run`). Launched by torchrun, every process runs it; the process group, the sharded data,
the broadcast masks and the all-reduced metrics are :mod:`explorer.core.train.distributed`'s. A checkpoint
(``DIR/checkpoint.pt``) is written after every epoch and removed once the folder is complete; ``resume``
carries on from it.

``fine_tune_job_files`` is the other end: the window writes a recipe and a ready torchrun command line for a
cluster; the folder the cluster writes back is read in with :func:`read_result`.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .deploy.bundle import Log, _quiet
from .errors import ExplorerError, PlanError
from .fileio import atomic_write, expand
from .flows.prune import PruneOutcome
from .flows.prune import run as run_prune

if TYPE_CHECKING:
    from .session import Session

JOB_RECIPE = "recipe.json"
JOB_SCRIPT = "run_finetune.sh"


def apply_recipe(session: Session, d: dict, log: Log = _quiet, calibration_given: bool = False) -> dict:
    """Replay a recipe's plan, seed and calibration on ``session``; returns the recipe (for its fine-tuning)."""
    from .prune.recipe import recipe_to_plan

    plan = recipe_to_plan(d)
    if d.get("model") and d["model"] != session.model_spec:
        log(f"note: recipe written for {d['model']}, applying to {session.model_spec}")
    if isinstance(d.get("seed"), int):
        session.set_seed(d["seed"])      # the random criterion replays exactly
    cal = d.get("calibration")
    if isinstance(cal, dict) and "samples" in cal and not calibration_given:
        session.set_calibration_samples(cal["samples"])   # so do the data criteria and reconstruction
    session.set_plan(plan)
    return d


def finetune_config_for(session: Session, recorded: dict | None, epochs: int | None):
    """The recipe's recorded fine-tuning, else the model's defaults (3 epochs, one-shot); ``epochs`` overrides."""
    from .train.recipe_settings import finetune_from_recipe
    from .train.settings import finetune_settings

    return finetune_settings(session.profile, finetune_from_recipe(recorded) if recorded else None,
                             epochs=epochs or None)


def run_finetune_job(recipe_path: str | Path, out_dir: str | Path, model: str | None = None,
                     dataset: str | None = None, epochs: int | None = None, device: str | None = "auto",
                     resume: bool = False, measure: bool = True, latency_runs: int = 30, open_kw: dict | None = None,
                     progress=None, log: Log = _quiet) -> tuple[PruneOutcome, object]:
    """Fine-tune ``recipe_path``'s plan into ``out_dir`` (see the module's doc). Returns (outcome, runtime);
    on ranks other than 0 the outcome's report is empty."""
    from .prune.recipe import read_recipe
    from .session import Session
    from .train.checkpoint import CHECKPOINT_NAME
    from .train.distributed import start, stop

    out = expand(out_dir)
    if out.exists() and not out.is_dir():
        raise ExplorerError(f"--out {out} is a file, not a folder.")
    checkpoint = out / CHECKPOINT_NAME
    if resume and not checkpoint.is_file():
        raise ExplorerError(f"There is no checkpoint to resume from in {out}.",
                            "Run without --resume to start the fine-tuning from the beginning.")
    if not resume and checkpoint.exists():
        raise ExplorerError(f"{out} holds the checkpoint of an unfinished fine-tuning run.",
                            "Add --resume to carry on from it, or delete it (or choose another --out) to start over.")
    _, d = read_recipe(recipe_path)
    model = model or d.get("model")
    if not model:
        raise PlanError(f"The recipe {recipe_path} names no model.", "Give --model SPEC.")
    rt = start(device)
    try:
        session = Session.open(model, dataset or d.get("dataset"), **(open_kw or {}))
        apply_recipe(session, d, log if rt.is_main else _quiet, calibration_given=False)
        if d.get("reconstruct"):
            raise PlanError("This recipe refits weights by reconstruction; the finetune command replays only "
                            "pruning and fine-tuning.", "Use `pruning-explorer prune --recipe` for it.")
        cfg = finetune_config_for(session, d.get("finetune"), epochs)
        if rt.is_main:
            log(f"fine-tuning on {rt.describe()}: {cfg.epochs} epoch(s) per step, {cfg.schedule}, "
                f"{cfg.optimizer} lr {cfg.lr:g}, batch {cfg.batch_size}"
                + (f" ({-(-cfg.batch_size // rt.world_size)} per process)" if rt.distributed else ""))
            out.mkdir(parents=True, exist_ok=True)
        rt.barrier()
        outcome = run_prune(session.snapshot(), out, finetune_cfg=cfg, measure=measure and rt.is_main,
                            sequential_calibration=bool(d.get("sequential_calibration")),
                            latency_runs=latency_runs, progress=progress if rt.is_main else None,
                            log=log if rt.is_main else _quiet, runtime=rt, checkpoint=checkpoint, resume=resume,
                            report_extra={"world_size": rt.world_size})
    finally:
        stop(rt)
    return outcome, rt


def torchrun_command(recipe: str, out: str, nproc: int = 4, nnodes: int = 1, device: str = "auto",
                     model: str | None = None, dataset: str | None = None, epochs: int | None = None,
                     passthrough: bool = False) -> str:
    """A ready command line for a cluster (multi-node: run it on every node with NODE_RANK and MASTER_ADDR set).
    ``passthrough``: end with "$@" (a script's own arguments, e.g. --resume, go to the command)."""
    rdzv = ("--standalone" if nnodes == 1 else
            f"--nnodes={nnodes} --node_rank=${{NODE_RANK:-0}} --master_addr=${{MASTER_ADDR:?set MASTER_ADDR}} "
            "--master_port=${MASTER_PORT:-29500}")
    args = ["pruning-explorer", "finetune", "--recipe", recipe, "--out", out, "--device", device]
    if model:
        args += ["--model", model]
    if dataset:
        args += ["--dataset", dataset]
    if epochs:
        args += ["--epochs", str(epochs)]
    line = f"torchrun {rdzv} --nproc_per_node={nproc} --no-python " + " ".join(shlex.quote(a) for a in args)
    return line + ' "$@"' if passthrough else line


def write_job(folder: str | Path, recipe: dict, nproc: int = 4, nnodes: int = 1, device: str = "auto",
              dataset: str | None = None, epochs: int | None = None) -> dict[str, Path]:
    """The window's "Export fine-tune job…": ``recipe.json`` and ``run_finetune.sh`` (the torchrun line; pass
    ``--resume`` to it to carry on after an interruption) in ``folder``."""
    from .deploy.export import export_recipe

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recipe_file = folder / JOB_RECIPE
    export_recipe(recipe, recipe_file)
    line = torchrun_command(JOB_RECIPE, "result", nproc, nnodes, device, dataset=dataset, epochs=epochs,
                            passthrough=True)
    script = ("#!/bin/sh\n"
              "# Fine-tune the recipe with PyTorch distributed data parallel (written by Pruning Explorer).\n"
              "# One node: run as is. Several: run on every node with NODE_RANK (0..N-1) and MASTER_ADDR set.\n"
              "# After an interruption, run it again with --resume. The result folder ./result can be imported\n"
              "# back into the window with File > Import result.\n"
              'cd "$(dirname "$0")"\n'
              f"{line}\n")
    script_file = folder / JOB_SCRIPT
    atomic_write(script_file, lambda tmp: Path(tmp).write_text(script))
    script_file.chmod(0o755)
    return {"recipe": recipe_file, "script": script_file}


@dataclass
class ImportedResult:
    """A results folder read back (File ▸ Import result): weights, plan, and what its report measured."""

    state: dict
    plan: object
    label: str
    accuracy: float | None        # test accuracy of the pruned model, when measured on the session's dataset
    report: dict


def read_result(folder: str | Path, session) -> ImportedResult:
    """Read a results folder (``model.pt`` + ``recipe.json``, ``report.json`` if there) written by ``finetune``,
    ``prune`` or "Export everything" for the session's model; refused clearly when it is for another model."""
    from .model.files import read_state_dict
    from .model.zoo import load_state_into
    from .prune.recipe import read_recipe
    from .safe_read import read_json

    folder = expand(folder)
    if not folder.is_dir():
        raise ExplorerError(f"{folder} is not a folder.", "Choose the results folder (it holds model.pt and "
                                                          "recipe.json).")
    missing = [n for n in ("model.pt", "recipe.json") if not (folder / n).is_file()]
    if missing:
        raise ExplorerError(f"{folder} is not a results folder: {' and '.join(missing)} missing.",
                            "Choose the folder `pruning-explorer finetune` or `prune` wrote (--out DIR).")
    plan, recipe = read_recipe(folder / "recipe.json")
    plan = plan.validated(session.layer_names)
    module = session.model_copy()
    load_state_into(module, read_state_dict(folder / "model.pt"), session.model_spec, "model.pt")
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    for name, lp in plan.active().items():
        w = state[session.profile.weight_key(name)]
        zero = float((w == 0).sum()) / max(1, w.numel())
        if zero < lp.sparsity - 0.01:
            raise ExplorerError(f"In {folder}, model.pt's layer {name} is {zero:.1%} zero but recipe.json prunes "
                                f"{lp.sparsity:.1%} of it: the two files do not belong together.")
    report = read_json(folder / "report.json", "report") if (folder / "report.json").is_file() else {}
    same_data = recipe.get("dataset") in (None, session.dataset.spec)
    pruned = report.get("pruned") if isinstance(report.get("pruned"), dict) else {}
    acc = pruned.get("accuracy") if same_data and isinstance(pruned.get("accuracy"), (int, float)) else None
    world = report.get("world_size")
    how = f"fine-tuned on {world} processes" if isinstance(world, int) and world > 1 else \
        ("fine-tuned" if recipe.get("finetune") else "pruned")
    return ImportedResult(state=state, plan=plan, label=f"imported: {how} ({folder.name})", accuracy=acc,
                          report=report)
