"""Slider step on VGG-16's largest layer (classifier.0, 25088x4096) vs torch.nn.utils.prune.

A step = threshold lookup + heatmap image (screen-sized sample) + histogram + counts/sizes, from the
layer's cached ranking. Baseline: torch.nn.utils.prune.l1_unstructured recomputing the same layer's
mask at the same sparsity. Also reports the one-off cost of building the cache (``cache_build_s``: until the
layer answers its first step), side by side with the engine before issue 24 (the full sort first,
``before_cache_build_s``), the first step (answered by selection while the sort runs in the background) and
when the background sort is done (``ranking_done_s``). The step times are from the finished ranking.

    python benchmarks/bench_slider.py [--json] [--steps 60] [--baseline-steps 10] [--quick]

``--quick``: digits-cnn's largest layer, 5 steps, 2 baseline steps (a few seconds; the test suite runs it).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import _common  # noqa: F401  (sets sys.path)
import numpy as np
import torch
from torch.nn.utils import prune

from explorer.core.prune import lazy_ranking
from explorer.core.session import Session


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default="torchvision:vgg16")
    ap.add_argument("--layer", default=None, help="default: classifier.0 (the model's largest layer)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--baseline-steps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code path (the test suite runs this)")
    args = ap.parse_args()
    if args.quick:
        args.model, args.steps, args.baseline_steps = "digits-cnn", 5, 2
    torch.manual_seed(0)
    if args.quick:
        lazy_ranking.MIN_PARAMS = 1          # the small layer takes the big layers' path
    s = Session.open(args.model)
    name = args.layer or max(s.layer_names, key=lambda n: s.layer(n).params)
    engine = s.masks.engine
    rng = np.random.default_rng(0)
    sparsities = rng.uniform(0, 1, args.steps)

    def step(view, sp, level):
        t = time.perf_counter()
        s.set_layer(name, sparsity=float(sp), coalesce=("bench", name))
        view.threshold(float(sp))
        img = view.display_image(float(sp), level)
        view.histogram(float(sp))
        c = s.layer_counts(name)
        _ = (c.nonzero, c.sparse_bytes, c.nonzero_macs)
        return (time.perf_counter() - t) * 1000, img

    # before (issue 3's engine): the full sort before the first answer, in the same run
    engine.lazy = False
    t0 = time.perf_counter()
    view = s.layer_mask(name)
    before_build_s = time.perf_counter() - t0
    level = float(np.percentile(np.abs(view.sample.display_values), 99.5))
    before_first_ms, _ = step(view, sparsities[0], level)
    before_first_s = time.perf_counter() - t0
    engine.invalidate([name])
    del view
    # now: selection first, the sort in the background (lazy_ranking.py)
    engine.lazy = True
    t0 = time.perf_counter()
    view = s.layer_mask(name)
    cache_build_s = time.perf_counter() - t0
    pending = not getattr(view.ranking, "ready", True)
    first_ms, img = step(view, sparsities[0], level)
    first_s = time.perf_counter() - t0
    early = [first_ms]
    for sp in sparsities[1:6]:              # a few more steps while the sort may still run
        if getattr(view.ranking, "ready", True):
            break
        early.append(step(view, sp, level)[0])
    if hasattr(view.ranking, "wait"):
        view.ranking.wait()
    ranking_done_s = time.perf_counter() - t0
    steps = []
    for sp in sparsities:
        ms, img = step(view, sp, level)
        steps.append(ms)
    assert img.dtype == np.float32
    layer = dict(s.module.named_modules())[name]
    base = []
    for sp in sparsities[:args.baseline_steps]:
        m = copy.deepcopy(layer)
        t = time.perf_counter()
        prune.l1_unstructured(m, "weight", amount=float(sp))
        base.append((time.perf_counter() - t) * 1000)
    step_ms = statistics.median(steps)
    base_ms = statistics.median(base)
    payload = {"step_ms_median": step_ms, "baseline_ms_median": base_ms, "ratio": base_ms / step_ms,
               "cache_build_s": cache_build_s, "first_step_ms": first_ms, "first_answer_s": first_s,
               "selection_steps_ms": early if pending else [], "ranking_done_s": ranking_done_s,
               "before_cache_build_s": before_build_s, "before_first_answer_s": before_first_s,
               "before_first_step_ms": before_first_ms, "build_ratio": before_build_s / cache_build_s,
               "first_answer_ratio": before_first_s / first_s, "layer": name, "weights": view.layer.params,
               "steps": len(steps), "baseline_steps": len(base), "step_ms_max": max(steps),
               "display": list(view.sample.display_values.shape), "machine": _common.machine()}
    _common.emit(args, [[name, f"{view.layer.params:,}", f"{step_ms:.2f}", f"{max(steps):.2f}", f"{base_ms:.1f}",
                         f"{base_ms / step_ms:.0f}x", f"{before_build_s:.2f}", f"{cache_build_s:.2f}",
                         f"{before_first_s:.2f}", f"{first_s:.2f}", f"{ranking_done_s:.2f}"]],
                 ["layer", "weights", "step ms (median)", "step ms (max)", "torch.prune ms", "ratio",
                  "cache build s (before)", "cache build s", "first answer s (before)", "first answer s",
                  "full ranking s (background)"], payload)


if __name__ == "__main__":
    main()
