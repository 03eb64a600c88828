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
