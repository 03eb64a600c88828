"""Plumbing for long work: progress records and cooperative cancellation.

Every long computation in core (evaluate, fine-tune, scan, latency,
compaction, building rankings) is a plain function that takes
``progress`` (a callable receiving :class:`Progress`) and ``cancel`` (a
:class:`CancelToken`). It is testable without threads; the GUI runs it in a
worker and applies the result on the main thread.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """An immutable progress record. ``fraction`` is 0..1 (None = indeterminate)."""

    fraction: float | None
    message: str = ""
    data: Any = None        # a partial result (a curve point, a finished step, ...)
    eta_s: float | None = None


ProgressFn = Callable[[Progress], None]


class CancelToken:
    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled()


def no_progress(_: Progress) -> None:
    pass


class ProgressMeter:
    """Turns 'step i of n' into Progress records with an ETA."""

    def __init__(self, progress: ProgressFn | None, total: int, label: str = ""):
        self.progress = progress or no_progress
        self.total = max(1, int(total))
        self.label = label
        self.start = time.perf_counter()
        self.done = 0

    def step(self, n: int = 1, message: str | None = None, data: Any = None) -> None:
        self.done += n
        frac = min(1.0, self.done / self.total)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / frac * (1 - frac) if frac > 0 else None
        self.progress(Progress(frac, message if message is not None else self.label, data, eta))

    def note(self, message: str, data: Any = None) -> None:
        self.progress(Progress(min(1.0, self.done / self.total), message, data))
