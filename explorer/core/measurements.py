"""What was measured, and on which state: evaluations, latency, the sensitivity scan.

Each measurement of a model state is a :class:`Measured` that remembers the state it was taken on -- a
plan over some kept weights -- and :meth:`explorer.core.session.Session.is_fresh` decides, in one place,
whether it still describes the plan the window shows. ``changed`` fires after every update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from psygnal import Signal

from .analyse.latency import LatencyComparison  # noqa: F401  (re-exported: the session's measurements hold one)
from .prune.plan import Plan

T = TypeVar("T")


@dataclass(frozen=True)
class Measured(Generic[T]):
    value: T
    base_id: int        # the kept weights it was measured on (a WeightStore id)
    plan: Plan          # the plan it was measured on


class Measurements:
    changed = Signal()

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.dense = None          # EvalResult of the loaded (dense) weights on the test split
        self.current: Measured | None = None     # EvalResult of the last evaluated plan
        self.latency: Measured | None = None     # LatencyComparison
        self.scan = None           # analyse.sensitivity.ScanResult
        self.compression: Measured | None = None   # compress.flow.CompressResult of the applied (quantized) weights
        self.speed = None          # analyse.speed.SpeedMap of the loaded weights (a lesson's "speed" measurement)
        self.sweep: Measured | None = None       # prune.sparsegpt.OneShot whose weights the session adopted
        self.allocation: Measured | None = None  # (analyse.owl.LayerAllocation, the uniform plan it replaced)
        self.blocks: Measured | None = None      # analyse.depth.DepthAnalysis (influences, metric when skipped)
        self.evaluations: dict = {}  # (kept weights id, plan) -> EvalResult on the test split: nothing twice

    @staticmethod
    def key(base_id: int, plan: Plan) -> tuple:
        return base_id, tuple(sorted(plan.active().items()))

    def evaluation(self, base_id: int, plan: Plan):
        """The test evaluation of ``plan`` over the kept weights ``base_id``, if it was measured (else None)."""
        return self.evaluations.get(self.key(base_id, plan))

    def remember(self, base_id: int, plan: Plan, result) -> None:
        self.evaluations[self.key(base_id, plan)] = result

    def record_speed(self, result) -> None:
        """A speed map (analyse.speed.SpeedMap): it describes this machine's kernels on the loaded weights, so no
        plan makes it stale; opening another model clears it."""
        self.speed = result
        self.changed.emit()

    def record_compression(self, result, base_id: int, plan: Plan, test_samples: int) -> float | None:
        """A Deep Compression result (compress.flow.CompressResult) of the kept weights ``base_id``: it is also the
        current model's test accuracy, and the dense one if that was not measured yet. Returns the accuracy."""
        from .train.metric import ACCURACY, METRICS

        m = METRICS.get(getattr(result, "metric", "accuracy"), ACCURACY)   # or perplexity / mean squared error
        acc, dense = result.stage("huffman").get(m.name), result.stage("dense").get(m.name)
        if self.dense is None and dense is not None:
            self.dense = m.result("test", test_samples, dense)
        self.current = None if acc is None else Measured(m.result("test", test_samples, acc), base_id, plan)
        self.compression = Measured(result, base_id, plan)
        return acc
