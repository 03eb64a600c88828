"""What was measured, and on which state: evaluations, latency, the sensitivity scan.

Each measurement of the current model is a :class:`Measured` that remembers the weights version and the
applied plan it was taken on; :meth:`explorer.core.session.Session.is_fresh` decides, in one place,
whether it still describes what the window shows. ``changed`` fires after every update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from psygnal import Signal

from .prune.plan import Plan

T = TypeVar("T")


@dataclass(frozen=True)
class Measured(Generic[T]):
    value: T
    version: int        # the session's weights version when it was measured
    plan: Plan          # the plan it was measured on


@dataclass(frozen=True)
class LatencyComparison:
    """Dense vs masked (vs compacted) latency on one input, runs interleaved."""

    dense: object                 # analyse.latency.Latency
    masked: object
    compact: object | None
    dense_macs: int
    masked_macs: int
    compact_macs: int | None
    compact_params: int | None
    batch: int

    @property
    def best(self):
        return self.compact or self.masked


class Measurements:
    changed = Signal()

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self.dense = None          # EvalResult of the loaded (dense) weights on the test split
        self.current: Measured | None = None     # EvalResult of the applied state
        self.latency: Measured | None = None     # LatencyComparison
        self.scan = None           # analyse.sensitivity.ScanResult
        self.compression: Measured | None = None   # compress.flow.CompressResult of the applied (quantized) weights

    def record_compression(self, result, version: int, plan: Plan, test_samples: int) -> float | None:
        """A Deep Compression result (compress.flow.CompressResult) of the weights at ``version``: it is also the
        current model's test accuracy, and the dense one if that was not measured yet. Returns the accuracy."""
        from .train.evaluate import EvalResult

        acc, dense = result.stage("huffman")["accuracy"], result.stage("dense")["accuracy"]
        if self.dense is None and dense is not None:
            self.dense = EvalResult("test", test_samples, dense, None)
        self.current = None if acc is None else Measured(EvalResult("test", test_samples, acc, None), version, plan)
        self.compression = Measured(result, version, plan)
        return acc
