"""What the session does with the results of jobs (a part of :class:`Session`): adopting fine-tuned, searched
and compressed weights, recording measurements and History entries, and returning to a remembered state.

Every method here changes state only through the session's own helpers and emits the session's events, like
the rest of :class:`Session`.
"""
from __future__ import annotations

import torch

from ..history import HistoryEntry, state_label
from ..measurements import LatencyComparison, Measured
from ..prune.masks import masked_state
from ..prune.plan import Plan
from ..train.metric import metric_of


class SessionResults:
    """Mixed into :class:`Session`; uses its plan, kept weights, History, weight store and measurements."""

    # ------------------------------------------------------------------ adopting results of jobs
    def adopt(self, state: dict[str, torch.Tensor], plan: Plan, label: str) -> None:
        """Take weights that already realise ``plan`` (fine-tuned with masks enforced) as the new kept weights
        and the model's state, without re-masking; rankings are rebuilt lazily (in a worker for big layers)."""
        state = {k: v.detach().clone() for k, v in state.items()}
        self._set_base(state, label, self.weights.add(state))
        self._write_state(plan, state)
        self.weights_changed.emit()

    def adopt_finetune(self, snapshots: list, state: dict[str, torch.Tensor], plan: Plan,
                       label: str = "fine-tuned") -> None:
        """A fine-tune's result: earlier iterative steps become History entries one can return to, the final
        weights become the kept weights, and the plan follows them (undoable)."""
        for snap in snapshots[:-1]:
            self.adopt(snap.state, snap.plan, f"{label} ({snap.label})")
            self.record(f"{snap.label}: {snap.sparsity:.0%}", accuracy=snap.test_accuracy)
        self.adopt(state, plan, label)
        self.measurements.current = None
        self._replace_plan(plan.copy())
        self.measurements.changed.emit()

    def adopt_search(self, result, label: str) -> None:
        """A search's winner: its fine-tuned weights and plan, with the test accuracy it was reported at."""
        self.adopt(result.state, result.plan, "fine-tuned (search)")
        self._replace_plan(result.plan.copy())
        self.measurements.current = Measured(metric_of(self.dataset).result("test", self.dataset.size("test"),
                                                                            result.test_accuracy),
                                             self._base_id, self.applied_plan.copy())
        self.record(label, accuracy=result.test_accuracy)
        self.measurements.changed.emit()

    def adopt_result(self, result) -> None:
        """A results folder read back (``deploy.finetune_job.read_result``), e.g. fine-tuned on a cluster: its
        weights become the kept weights and the plan follows (undoable); a History entry with its test accuracy."""
        self.adopt(result.state, result.plan, result.label)
        self._replace_plan(result.plan.copy())
        self.measurements.current = (Measured(metric_of(self.dataset).result("test", self.dataset.size("test"),
                                                                             result.accuracy),
                                              self._base_id, self.applied_plan.copy())
                                     if result.accuracy is not None else None)
        self.record(result.label, accuracy=result.accuracy)
        self.measurements.changed.emit()

    def adopt_compression(self, result, plan: Plan) -> None:
        """Deep Compression's result (compress.flow): its quantized weights become the kept weights and the model's;
        its stages and test accuracy are remembered (measurements) until the weights or the plan change."""
        self.adopt(result.state, plan, "quantized (Deep Compression)")
        if plan != self.plan:
            self._replace_plan(plan.copy())
        acc = self.measurements.record_compression(result, self._base_id, plan.copy(), self.dataset.size("test"))
        self.record(f"Deep Compression {result.stage('huffman')['ratio']:.0f}×", accuracy=acc)
        self.measurements.changed.emit()

    # ------------------------------------------------------------------ measurements
    @property
    def base_id(self) -> int:
        """Which kept weights masks apply to now (a WeightStore id): what measurements and History refer to."""
        return self._base_id

    def is_fresh(self, m: Measured | None) -> bool:
        """Does a measurement describe the plan the window shows, over the kept weights it has now?"""
        return m is not None and m.base_id == self._base_id and m.plan == self.plan

    def state_label(self, plan: Plan | None = None) -> str:
        plan = self.applied_plan if plan is None else plan
        return state_label(plan, self.totals(plan).sparsity, self.base_label)

    def record_evaluation(self, plan: Plan, base_id: int, current, dense=None) -> None:
        """Evaluate's result for ``plan`` over the kept weights ``base_id`` (measured on a copy: evaluating
        never applies anything), with a History point for that state."""
        if dense is not None:
            self.measurements.dense = dense
        self.measurements.current = Measured(current, base_id, plan.copy())
        if base_id == self._base_id:   # History keeps the dataset's metric (accuracy, or perplexity)
            self.record(self.state_label(plan), accuracy=metric_of(self.dataset).value(current), plan=plan)
        self.measurements.changed.emit()

    def record_latency(self, plan: Plan, base_id: int, comparison: LatencyComparison) -> None:
        """A latency comparison for ``plan`` over the kept weights ``base_id`` (measured on copies)."""
        self.measurements.latency = Measured(comparison, base_id, plan.copy())
        if base_id == self._base_id:
            self.record(self.state_label(plan), latency_ms=comparison.best.median_ms, plan=plan)
        self.measurements.changed.emit()

    def record_scan(self, result) -> None:
        self.measurements.scan = result
        self.measurements.changed.emit()

    # ------------------------------------------------------------------ history (Pareto view)
    def record(self, label: str, accuracy: float | None = None, latency_ms: float | None = None,
               plan: Plan | None = None) -> HistoryEntry:
        """Remember a state (``plan``, default the applied one, over the current kept weights) with what was
        measured there; an entry for the same state is updated."""
        plan = self.applied_plan if plan is None else plan
        e = self.history.record(label, plan, self._base_id, self.base_label, self.totals(plan), accuracy, latency_ms)
        self.history_changed.emit()
        return e

    def entry_state(self, entry: HistoryEntry) -> dict[str, torch.Tensor]:
        """The model state of a remembered entry (its kept weights under its plan); thread-safe, may be slow."""
        if entry.base_id == self._base_id:
            return self.masked_state(entry.plan)
        base = self.weights.get(entry.base_id)
        return masked_state(base, *self.masks_for_state(entry.plan, base))

    def restore(self, entry: HistoryEntry, state: dict[str, torch.Tensor] | None = None) -> None:
        """Return to a remembered state (its kept weights and plan); undoable for the plan. ``state`` is
        :meth:`entry_state`, when a worker computed it already."""
        if state is None:
            state = self.entry_state(entry)
        if entry.base_id != self._base_id:
            self._set_base(self.weights.get(entry.base_id), entry.base_label, entry.base_id)
        self.undo_stack.push(self._edit())
        self.plan = entry.plan.copy()
        self._write_state(self.plan, state)
        self.weights_changed.emit()
        self.plan_changed.emit(None)
        self.history_changed.emit()
