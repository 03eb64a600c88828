"""A results bundle: the folder a prune run writes, as a whole.

The prune flow (``flows/prune.py``: evaluate dense -> apply the plan -> optional fine-tune -> evaluate -> optional
compaction -> measure latencies) ends here.
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
                 module: nn.Module | None = None, like: nn.Module | None = None,
                 sparse_runtime=None) -> dict[str, str]:
    """Write a results folder as a whole; every file is reloaded and checked before the folder is swapped in.

    ``archive_meta`` set: also ``model_sparse.npz``; ``compacted`` set: also ``model_compact.pt`` and,
    when it traces, ``model_compact.ts``. ``exports`` may hold ``safetensors`` (``model.safetensors``, the
    tensors of model.pt) and ``onnx`` (``model.onnx``: the compacted model if there is one, else ``module``,
    the pruned model). A Hugging Face ``module`` is also written back as the folder ``model_hf/``
    (``from_pretrained`` loads it). model.pt keeps the state_dict's ``_metadata`` (module versions): ``state``'s own,
    else ``module``'s or ``like``'s (a module of the same architecture). Returns {file name: final path}.
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
        export.export_checkpoint(state, stage / "model.pt", like=module if module is not None else like)
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
