"""The ``block`` granularity's prune flow: drop whole blocks, and write a results folder of the shallower model.

``prune --granularity block --sparsity S`` drops ``analyse.depth.blocks_to_drop(n, S)`` of the model's n skippable
blocks (floor(S·n + 0.5)), the least important by Block Influence (``analyse/depth.py``), from their ModuleList /
Sequential (``model/blocks.without_blocks``): the model is really shallower. Before anything is written the
shallower model is checked to compute what the original does with those blocks skipped. Its test metric and its
latency are *measured* next to the dense model's (interleaved runs, same input).

The folder: ``model_compact.pt`` (the shallower model as a whole module; for other models also ``model_compact.ts``)
-- the architecture travels with it, as for channel-compacted models; ``model.pt`` (the shallower model's
state_dict; for a transformers model ``model_hf/``, whose config records the new layer count, reloads it with
``from_pretrained``); ``recipe.json`` (``"granularity": "block"`` and the blocks dropped: ``prune --recipe``
drops the same ones); ``report.json`` (``"blocks"``: each block's influence and metric when skipped).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..analyse import latency as timing
from ..analyse.depth import analyse_blocks, block_stack, blocks_to_drop
from ..deploy.bundle import Log, _quiet, write_bundle
from ..deploy.report import compact_block
from ..device import on_device
from ..errors import ExplorerError, PlanError
from ..fileio import check_results_folder
from ..jobs import CancelToken, ProgressFn
from ..model.blocks import skipping, without_blocks
from ..prune.compact import relative_difference
from ..prune.plan import Plan
from ..prune.recipe import plan_to_recipe
from ..train.evaluate import evaluate
from ..train.metric import metric_of
from .snapshot import Snapshot

SELECTION = "block influence (ShortGPT): the lowest first"


@dataclass
class DepthOutcome:
    report: dict
    files: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def run(snap: Snapshot, out_dir: Path, sparsity: float | None = None, dropped: list[str] | None = None,
        measure_skipped: bool = True, latency_runs: int = 30, latency_batch: int = 1, measure: bool = True,
        progress: ProgressFn | None = None, cancel: CancelToken | None = None, log: Log = _quiet) -> DepthOutcome:
    """Drop ``sparsity`` of the skippable blocks (or exactly the blocks ``dropped``, as a recipe records them)."""
    out_dir = Path(out_dir)
    check_results_folder(out_dir)
    stack = block_stack(snap)
    n = len(stack.skippable)
    analysis = analyse_blocks(snap, measure_skipped=measure_skipped, progress=progress, cancel=cancel, stack=stack)
    if dropped is None:
        k = blocks_to_drop(n, sparsity)
        if k == 0:
            raise PlanError(f"--sparsity {sparsity:g} of {n} skippable blocks rounds to no block "
                            f"(floor(S·n + 0.5) = 0).", f"Use at least {0.5 / n:.3g} to drop one block.")
        dropped = analysis.order()[:k]
    else:
        skippable = {b.path for b in stack.skippable}
        bad = [p for p in dropped if p not in skippable]
        if bad:
            raise PlanError(f"The recipe drops blocks this model cannot skip or does not have: {', '.join(bad)}.")
    order = [p for p in stack.paths if p in set(dropped)]
    for s in analysis.blocks:
        log(f"  {s.path}: influence {_fmt(s.influence)}"
            + (f", {analysis.metric} when skipped {_fmt(s.metric_when_skipped)}" if s.metric_when_skipped is not None
               else "") + ("" if s.skippable else f" (kept: {s.why})"))
    log(f"dropping {len(order)} of {n} skippable block(s): {', '.join(order)}")

    dense = snap.model()
    shallow = without_blocks(dense, stack, order)
    example = timing.latency_input(snap.dataset, snap.input_shape, latency_batch)
    with skipping(dense, order):
        rel = relative_difference(dense, shallow, example)
    if rel > 1e-4:
        raise ExplorerError(f"The shallower model's outputs differ from the original's with those blocks skipped "
                            f"(relative error {rel:.2g}); not exporting it.")
    ds = snap.dataset
    quality = metric_of(ds)
    labelled = ds.has_labels and ds.size("test") > 0
    dev = snap.device       # evaluation and timing run there (copies; the exported model stays on the CPU)
    dense_q = quality.value(evaluate(on_device(dense, dev), ds, "test", cancel=cancel)) if labelled else None
    shallow_q = quality.value(evaluate(on_device(shallow, dev), ds, "test", cancel=cancel)) if labelled else None
    if labelled:
        log(f"test {quality.name}: dense {quality.format(dense_q)}, {len(order)} block(s) dropped "
            f"{quality.format(shallow_q)}")
    lat = {}
    if measure:   # both models on the same input, runs interleaved
        lat = timing.measure_latencies({"dense": on_device(dense, dev), "compact": on_device(shallow, dev)}, example,
                                       runs=latency_runs,
                                       progress=progress, cancel=cancel)
        for key, v in lat.items():
            log(f"latency {key}: {v}")
    note = timing.spread_note(lat) if lat else None

    dense_b = compact_block(dense, snap.input_shape, dense_q, _ms(lat, "dense"), quality.name, example[:1])
    shallow_b = compact_block(shallow, snap.input_shape, shallow_q, _ms(lat, "compact"), quality.name, example[:1])
    gone = {lyr.name for lyr in snap.layers if any(lyr.name.startswith(p + ".") for p in order)}
    prunable = snap.profile.prunable_params
    removed = sum(snap.layer(name).params for name in gone)
    blocks = {"granularity": "block", "requested_sparsity": sparsity, "skippable": n, "total": len(stack.blocks),
              "dropped": order, "rounding": "floor(S·n + 0.5) of the n skippable blocks",
              "selection": SELECTION if sparsity is not None else "as the recipe records", **analysis.as_dict()}
    report = {"model": snap.model_spec, "split": "test", "dataset": ds.spec,
              "dense": dense_b, "pruned": shallow_b, "compact": shallow_b,
              "sparsity": removed / prunable if prunable else 0.0,
              "compression_ratio": dense_b["size_bytes"] / shallow_b["size_bytes"] if shallow_b["size_bytes"] else None,
              "layers": [{"name": lyr.name, "granularity": "block", "criterion": "block-influence",
                          "sparsity": 1.0 if lyr.name in gone else 0.0, "params": lyr.params,
                          "nonzero": 0 if lyr.name in gone else lyr.params, "macs": 0 if lyr.name in gone else lyr.macs}
                         for lyr in snap.layers],
              "blocks": blocks,
              "latency": {"batch": latency_batch, "runs": latency_runs, "interleaved": True if measure else None,
                          "dense": lat["dense"].as_dict() if lat else None, "pruned": None,
                          "compact": lat["compact"].as_dict() if lat else None, "note": note}}
    if quality.name != "accuracy":
        report["metric"] = quality.name
    recipe = plan_to_recipe(Plan(), snap.model_spec, ds.spec, seed=snap.seed,
                            extra={"granularity": "block", "blocks": {"sparsity": sparsity, "dropped": order},
                                   **snap.calibration.record()})
    report["tool_version"] = recipe["tool_version"]
    state = {k: v.detach() for k, v in shallow.state_dict().items()}
    files = write_bundle(out_dir, state, recipe, report, [], compacted=shallow, example=example, log=log,
                         module=shallow)
    return DepthOutcome(report, files, order)


def _ms(lat: dict, key: str):
    return lat[key].median_ms if key in lat else None


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def recorded_blocks(recipe: dict) -> list[str] | None:
    """The blocks a block recipe dropped (None for other recipes)."""
    if recipe.get("granularity") != "block":
        return None
    b = recipe.get("blocks") or {}
    dropped = b.get("dropped")
    if not isinstance(dropped, list) or not all(isinstance(p, str) for p in dropped):
        raise PlanError("The block recipe's 'blocks' entry needs a 'dropped' list of block paths.")
    return dropped

