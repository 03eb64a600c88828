"""The History: every state the user evaluated (the Pareto view's points), and the weights to return to them.

A state is a plan over some *kept weights* -- the loaded ones, or the result of a fine-tune. Fine-tuned
weights are a full copy of the model each, so :class:`WeightStore` keeps at most a byte budget of them in
memory and moves older ones to a temporary folder, from which returning to such a state loads them back.
"""
from __future__ import annotations

import shutil
import tempfile
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from .prune.plan import Plan

MIN_BUDGET_BYTES = 4 * 2**20   # small models: a few states in memory, the rest on disk


@dataclass
class HistoryEntry:
    """A state the user has been through, with what was measured there."""

    id: int
    label: str
    plan: Plan
    base_id: int          # the kept weights the plan applies to (a WeightStore id)
    base_label: str
    sparsity: float
    compression_ratio: float
    nonzero_macs: int
    accuracy: float | None = None
    latency_ms: float | None = None


class History(list):
    """The entries, oldest first. Recording a state that is already there updates its numbers."""

    def record(self, label: str, plan: Plan, base_id: int, base_label: str, totals, accuracy: float | None = None,
               latency_ms: float | None = None) -> HistoryEntry:
        for e in self:
            if e.plan == plan and e.base_id == base_id:
                e.accuracy = e.accuracy if accuracy is None else accuracy
                e.latency_ms = e.latency_ms if latency_ms is None else latency_ms
                return e
        e = HistoryEntry(id=len(self) + 1, label=label, plan=plan, base_id=base_id, base_label=base_label,
                         sparsity=totals.sparsity, compression_ratio=totals.compression_ratio,
                         nonzero_macs=totals.nonzero_macs, accuracy=accuracy, latency_ms=latency_ms)
        self.append(e)
        return e


def state_label(plan: Plan, sparsity: float, base_label: str) -> str:
    """'80% element (fine-tuned)': how History entries name a state."""
    grans = sorted({str(lp.granularity) for lp in plan.active().values()})
    what = "dense" if not grans else f"{sparsity:.0%} {'/'.join(grans)}"
    return f"{what} ({base_label})"


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


class WeightStore:
    """Weight states by id. ``pinned`` ids (the loaded weights) always stay in memory; the others are kept in
    memory up to ``budget_bytes`` (most recently used first) and otherwise saved to a temp folder."""

    def __init__(self, budget_bytes: int = MIN_BUDGET_BYTES):
        self.budget = budget_bytes
        self._mem: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()
        self._disk: dict[int, Path] = {}
        self._size: dict[int, int] = {}
        self._pinned: set[int] = set()
        self.current: int | None = None   # the session's live kept weights: held in memory anyway, never spilled
        self._next = 0
        self._dir: Path | None = None
        self._finalizer = None

    def add(self, state: dict[str, torch.Tensor], pinned: bool = False) -> int:
        sid = self._next
        self._next += 1
        self._mem[sid] = state
        self._size[sid] = state_bytes(state)
        if pinned:
            self._pinned.add(sid)
        self._trim(keep=sid)
        return sid

    def get(self, sid: int) -> dict[str, torch.Tensor]:
        if sid in self._mem:
            self._mem.move_to_end(sid)
            return self._mem[sid]
        path = self._disk[sid]
        state = torch.load(path, map_location="cpu", weights_only=True)
        self._mem[sid] = state
        del self._disk[sid]
        path.unlink(missing_ok=True)
        self._trim(keep=sid)
        return state

    def __contains__(self, sid: int) -> bool:
        return sid in self._mem or sid in self._disk

    def _trim(self, keep: int) -> None:
        for sid in list(self._mem):
            if self.memory_bytes <= self.budget:
                break
            if sid == keep or sid in self._pinned or sid == self.current:
                continue
            self._spill(sid)

    def _spill(self, sid: int) -> None:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="pruning-explorer-states-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        path = self._dir / f"state-{sid}.pt"
        torch.save(self._mem[sid], path)
        self._disk[sid] = path
        del self._mem[sid]

    @property
    def memory_bytes(self) -> int:
        """Bytes held in memory for states other than the loaded and the live weights."""
        return sum(self._size[s] for s in self._mem if s not in self._pinned and s != self.current)

    @property
    def disk_bytes(self) -> int:
        return sum(self._size[s] for s in self._disk)

    @property
    def counts(self) -> tuple[int, int]:
        """(other states in memory, states on disk)."""
        return sum(1 for s in self._mem if s not in self._pinned and s != self.current), len(self._disk)

    def use(self, sid: int) -> None:
        """Make ``sid`` the live state (the previous live one may now move to disk)."""
        self.current = sid
        self._trim(keep=sid)

    def clear(self) -> None:
        self._mem.clear()
        self._disk.clear()
        self._size.clear()
        self._pinned.clear()
        self.current = None
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer, self._dir = None, None
