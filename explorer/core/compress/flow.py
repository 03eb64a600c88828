"""The Deep Compression flow: prune (and fine-tune) -> share weights (and train the shared values) ->
Huffman-code, with the bytes and the test accuracy of every stage, and the results folder.

``compress_state`` compresses weights that are already pruned (the window's job calls it on the session's
applied weights); ``run_compress`` is the whole flow on a session (the CLI's ``compress``), and
``write_compress_folder`` writes ``model.dcz``, ``model.pt``, ``recipe.json`` and ``compression.json`` as one
folder (each file reloaded and checked before the folder is swapped in).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..device import on_device
from ..errors import ExplorerError
from ..fileio import StagedFolder, atomic_write_json, bit_equal, check_results_folder
from ..jobs import CancelToken, Progress, ProgressFn
from ..model.data import DatasetBundle
from ..model.layers import load_state
from ..prune.plan import Plan
from ..prune.recipe import plan_to_recipe
from ..train.evaluate import evaluate
from ..train.finetune import EpochRecord, FinetuneConfig
from ..train.quantize import SharedLayer, train_centroids
from . import accounting, dcz
from .quantize import LayerQuant, QuantSettings, quantize_state, quantized_state

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class CompressResult:
    model: str
    dataset: str
    stages: list[dict]                     # dense, pruned, quantized, huffman: size_bytes, ratio, accuracy
    layers: list[dict]                     # accounting.LAYER_KEYS per prunable layer
    quants: dict[str, LayerQuant]          # per layer: positions, labels, trained centroids (and the initial ones)
    state: dict[str, torch.Tensor]         # the quantized model: what model.dcz decodes to, bit for bit
    archives: dict[str, dcz.Encoded]       # pruned, quantized, huffman (the last is model.dcz)
    settings: QuantSettings
    untrained_accuracy: float | None = None    # test accuracy right after k-means, before training the values
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def archive(self) -> dcz.Encoded:
        return self.archives["huffman"]

    def stage(self, name: str) -> dict:
        return next(s for s in self.stages if s["name"] == name)

    def to_json(self) -> dict:
        """compression.json: exactly the documented keys."""
        return {"model": self.model, "dataset": self.dataset, "stages": self.stages, "layers": self.layers}


def _phase(progress: ProgressFn | None, lo: float, hi: float) -> ProgressFn:
    def cb(p: Progress) -> None:
        if progress is not None:
            f = None if p.fraction is None else lo + (hi - lo) * p.fraction
            progress(Progress(f, p.message, p.data, p.eta_s))
    return cb


def compress_state(module: nn.Module, dataset: DatasetBundle, state: dict[str, torch.Tensor], settings: QuantSettings,
                   meta: dict, quantize_cfg: FinetuneConfig | None = None, accuracy: dict | None = None,
                   dense_size: int | None = None, progress: ProgressFn | None = None,
                   cancel: CancelToken | None = None, log: Log = _quiet,
                   device: torch.device | None = None) -> CompressResult:
    """Weight-share, (train,) encode and measure already pruned weights ``state`` (training and evaluation on
    ``device``).

    ``module``: a private copy of the model (its weights are overwritten for evaluations). ``accuracy`` may
    bring the dense and pruned test accuracies (measured elsewhere); the others are measured here on the
    test split when the dataset has labels. ``dense_size`` defaults to the size of ``state`` at its dtypes.
    """
    labelled = dataset.has_labels and dataset.size("test") > 0
    acc = dict(accuracy or {})
    seconds: dict[str, float] = {}

    def test_acc(st: dict[str, torch.Tensor]) -> float | None:
        if not labelled:
            return None
        load_state(module, st)
        return evaluate(on_device(module, device), dataset, "test", cancel=cancel).accuracy

    if "pruned" not in acc:
        acc["pruned"] = test_acc(state)
    t = time.perf_counter()
    quants = quantize_state(state, settings, _phase(progress, 0.0, 0.1), cancel)
    seconds["cluster"] = time.perf_counter() - t
    q_state = quantized_state(state, quants)
    untrained = test_acc(q_state)
    log(f"weight sharing: k-means ({settings.init}) on {len(quants)} layer(s) in {seconds['cluster']:.2f} s"
        + (f", test accuracy {untrained:.2f}%" if untrained is not None else ""))
    history, best_epoch = [], 0
    if quantize_cfg is not None:
        t = time.perf_counter()
        load_state(module, q_state)
        layers = {n: SharedLayer(q.positions, q.labels, q.centroids) for n, q in quants.items()}
        r = train_centroids(module, dataset, layers, quantize_cfg, progress=_phase(progress, 0.1, 0.85),
                            cancel=cancel, device=device)
        quants = {n: q.with_centroids(r.centroids[n]) for n, q in quants.items()}
        q_state = quantized_state(r.state, quants)
        history, best_epoch = r.history, r.best_epoch
        seconds["train"] = time.perf_counter() - t
        for h in history:
            log(f"  shared values, epoch {h.epoch}: train loss {h.train_loss:.4f}"
                + (f", val {h.val_accuracy:.2f}%" if h.val_accuracy is not None else ""))
        log(f"trained the shared values for {quantize_cfg.epochs} epoch(s) in {seconds['train']:.1f} s; "
            f"kept epoch {best_epoch}")
    acc["quantized"] = test_acc(q_state)
    if cancel is not None:
        cancel.check()
    progress = progress or (lambda p: None)
    progress(Progress(0.9, "encoding the archives"))
    t = time.perf_counter()
    index_bits = {n: q.index_bits for n, q in quants.items()}
    archives = {"pruned": dcz.encode_archive(state, meta, "pruned", index_bits=index_bits),
                "quantized": dcz.encode_archive(q_state, meta, "quantized", quants=quants)}
    t_enc = time.perf_counter()
    archives["huffman"] = dcz.encode_archive(q_state, meta, "huffman", quants=quants)
    seconds["huffman_encode"] = time.perf_counter() - t_enc
    seconds["encode"] = time.perf_counter() - t
    t = time.perf_counter()
    decoded = dcz.decode_archive(archives["huffman"].data, "model.dcz").state
    seconds["huffman_decode"] = time.perf_counter() - t
    for k, v in q_state.items():
        if not bit_equal(decoded[k], v):
            raise ExplorerError(f"Internal check failed: the archive does not decode to the quantized model "
                                f"(tensor {k}).")
    acc["huffman"] = test_acc(decoded)
    progress(Progress(1.0, "compressed"))
    dense_size = dense_size if dense_size is not None else accounting.state_bytes(state)
    stages = accounting.stage_rows(dense_size, {s: a.size for s, a in archives.items()}, acc)
    rows = accounting.layer_rows(list(quants), archives["quantized"], archives["huffman"])
    return CompressResult(model=meta.get("model") or "", dataset=dataset.spec, stages=stages, layers=rows,
                          quants=quants, state=q_state, archives=archives, settings=settings,
                          untrained_accuracy=untrained, history=history, best_epoch=best_epoch, seconds=seconds)


def archive_meta(session) -> dict:
    return {"arch": session.require().model.arch, "model": session.model_spec}


def compress_recipe(session, plan: Plan, settings: QuantSettings, finetune_cfg: FinetuneConfig | None,
                    quantize_cfg: FinetuneConfig | None) -> dict:
    """recipe.json of a compress run: the plan, its fine-tuning, and the quantization settings."""
    quant = {**settings.to_dict(), "finetune": asdict(quantize_cfg) if quantize_cfg else None}
    return plan_to_recipe(plan, session.model_spec, session.dataset.spec, seed=session.seed,
                          extra={"finetune": asdict(finetune_cfg) if finetune_cfg else None, "quantize": quant})


def write_compress_folder(out_dir: str | Path, result: CompressResult, recipe: dict) -> dict[str, str]:
    """model.dcz, model.pt, recipe.json and compression.json, written as one folder (each checked)."""
    from ..deploy import export

    out = Path(out_dir)
    with StagedFolder(out) as stage:
        dcz.write_archive(stage / "model.dcz", result.archive, result.state)
        export.export_checkpoint(result.state, stage / "model.pt")
        export.export_recipe(recipe, stage / "recipe.json")
        atomic_write_json(stage / "compression.json", result.to_json())
    return {n: str(out / n) for n in ("model.dcz", "model.pt", "recipe.json", "compression.json")}


def run_compress(session, settings: QuantSettings, out_dir: str | Path, finetune_cfg: FinetuneConfig | None = None,
                 quantize_cfg: FinetuneConfig | None = None, progress: ProgressFn | None = None,
                 cancel: CancelToken | None = None, log: Log = _quiet,
                 device: torch.device | None = None) -> tuple[CompressResult, dict[str, str]]:
    """The whole flow on a session whose plan is set: dense -> pruned (fine-tuned) -> quantized -> Huffman,
    then the results folder (evaluation and training on ``device``). Returns the result and {file name: path}."""
    from ..train.distributed import Runtime
    from ..train.finetune import finetune

    out_dir = Path(out_dir)
    check_results_folder(out_dir)     # before any work: a folder the swap would damage is refused now
    ds = session.dataset
    labelled = ds.has_labels and ds.size("test") > 0
    plan = session.plan.copy()
    module = session.module
    session.apply(Plan())
    dense_size = accounting.state_bytes(session.original_state())
    dense_acc = evaluate(on_device(module, device), ds, "test", cancel=cancel).accuracy if labelled else None
    if dense_acc is not None:
        log(f"dense: {dense_size:,} bytes, test accuracy {dense_acc:.2f}%")
    t = time.perf_counter()
    if finetune_cfg is not None:
        start = plan if finetune_cfg.schedule == "oneshot" else Plan()
        session.apply(start)
        session.own_module_tensors()   # it trains in place: not into the loaded tensors it shares
        r = finetune(module, ds, session.layer_names, plan, start, session.masks_for_state, finetune_cfg,
                     progress=_phase(progress, 0.0, 0.4), cancel=cancel,
                     runtime=Runtime(device=device) if device is not None else None)
        for h in r.history:
            log(f"  epoch {h.epoch}: train loss {h.train_loss:.4f}"
                + (f", val {h.val_accuracy:.2f}%" if h.val_accuracy is not None else "")
                + f", sparsity {h.sparsity:.1%}")
        session.adopt(r.state, r.plan, "fine-tuned")
    else:
        session.apply(plan)
    prune_s = time.perf_counter() - t
    pruned = {k: v.detach().clone() for k, v in module.state_dict().items()}
    pruned_acc = evaluate(on_device(module, device), ds, "test", cancel=cancel).accuracy if labelled else None
    log(f"pruned: sparsity {session.totals(session.applied_plan).sparsity:.1%}"
        + (f", test accuracy {pruned_acc:.2f}%" if pruned_acc is not None else "") + f" ({prune_s:.1f} s)")
    lo = 0.4 if finetune_cfg is not None else 0.0
    result = compress_state(session.model_copy(), ds, pruned, settings, archive_meta(session), quantize_cfg,
                            {"dense": dense_acc, "pruned": pruned_acc}, dense_size, _phase(progress, lo, 1.0),
                            cancel, log, device=device)
    result.seconds["prune"] = prune_s
    recipe = compress_recipe(session, plan, settings, finetune_cfg, quantize_cfg)
    files = write_compress_folder(out_dir, result, recipe)
    return result, files
