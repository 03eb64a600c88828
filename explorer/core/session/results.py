"""Results (a part of the session): adopting the results of flows (fine-tuned, searched, reconstructed,
compressed weights, a results folder read back), recording measurements and History entries, and returning to a
remembered state.

It changes the weights and the plan only through the session's public methods (``use_base``, ``write_state``,
the plan editor's ``replace``/``push``) and announces through the parts' events (``editor.changed``,
``editor.undo_changed``, ``weight_state.changed``, its own ``history_changed``, ``measurements.changed``).
"""
from __future__ import annotations

import torch
from psygnal import Signal

from ..history import HistoryEntry, state_label
from ..measurements import LatencyComparison, Measured
from ..prune.masks import masked_state
from ..prune.plan import Plan
from ..train.metric import metric_of


class Results:
    """Owned by the session (``session.results``): the window, lessons and tests call these on the part.
    ``history_changed`` fires when the History's entries change (an entry added or updated, a new model), and
    only then: the History view subscribes to it, not to every plan edit."""

    history_changed = Signal()

    def __init__(self, owner):
        self.s = owner

    # ------------------------------------------------------------------ adopting results of jobs
    def adopt(self, state: dict[str, torch.Tensor], plan: Plan, label: str) -> None:
        """Take weights that already realise ``plan`` (fine-tuned with masks enforced) as the new kept weights
        and the model's state, without re-masking; rankings are rebuilt lazily (in a worker for big layers)."""
        state = {k: v.detach().clone() for k, v in state.items()}
        self.s.weight_state.use_base(state, label, self.s.weights.add(state))
        self.s.weight_state.write(plan, state)
        self.s.weight_state.changed.emit()

    def adopt_finetune(self, snapshots: list, state: dict[str, torch.Tensor], plan: Plan,
                       label: str = "fine-tuned") -> None:
        """A fine-tune's result: earlier iterative steps become History entries one can return to, the final
        weights become the kept weights, and the plan follows them (undoable)."""
        for snap in snapshots[:-1]:
            self.adopt(snap.state, snap.plan, f"{label} ({snap.label})")
            self.record(f"{snap.label}: {snap.sparsity:.0%}", accuracy=snap.test_accuracy)
        self.adopt(state, plan, label)
        self.s.measurements.current = None
        self.s.editor.replace(plan)
        self.s.measurements.changed.emit()

    def adopt_search(self, result, label: str) -> None:
        """A search's winner: its fine-tuned weights and plan, with the test accuracy it was reported at."""
        self.adopt(result.state, result.plan, "fine-tuned (search)")
        self.s.editor.replace(result.plan)
        self.s.measurements.current = Measured(metric_of(self.s.dataset).result("test", self.s.dataset.size("test"),
                                                                            result.test_accuracy),
                                             self.s.base_id, self.s.applied_plan)
        self.record(label, accuracy=result.test_accuracy)
        self.s.measurements.changed.emit()

    def adopt_result(self, result) -> None:
        """A results folder read back (``finetune_job.read_result``), e.g. fine-tuned on a cluster: its
        weights become the kept weights and the plan follows (undoable); a History entry with its test accuracy."""
        self.adopt(result.state, result.plan, result.label)
        self.s.editor.replace(result.plan)
        self.s.measurements.current = (Measured(metric_of(self.s.dataset).result("test", self.s.dataset.size("test"),
                                                                             result.accuracy),
                                              self.s.base_id, self.s.applied_plan)
                                     if result.accuracy is not None else None)
        self.record(result.label, accuracy=result.accuracy)
        self.s.measurements.changed.emit()

    def adopt_compression(self, result, plan: Plan) -> None:
        """Deep Compression's result (compress.flow): its quantized weights become the kept weights and the model's;
        its stages and test accuracy are remembered (measurements) until the weights or the plan change."""
        self.adopt(result.state, plan, "quantized (Deep Compression)")
        if plan != self.s.plan:
            self.s.editor.replace(plan)
        acc = self.s.measurements.record_compression(result, self.s.base_id, plan, self.s.dataset.size("test"))
        self.record(f"Deep Compression {result.stage('huffman')['ratio']:.0f}×", accuracy=acc)
        self.s.measurements.changed.emit()

    def adopt_sweep(self, result, plan: Plan) -> None:
        """SparseGPT's sweep (``prune.sparsegpt.one_shot``): its masks and updated kept weights become the kept
        weights (``adopt``), and the sweep is remembered for this plan over them (a lesson's "sweep")."""
        self.adopt(result.state, plan, f"sparsegpt ({self.s.calibration_samples} samples)")
        self.s.measurements.sweep = Measured(result, self.s.base_id, plan)
        self.s.measurements.changed.emit()

    # ------------------------------------------------------------------ measurements
    def record_allocation(self, allocation, uniform: Plan, plan: Plan | None = None) -> None:
        """An OWL / alpha allocation (``analyse.owl.allocate``) set as the plan (undoable), remembered with the
        uniform plan it replaced (a lesson compares the two)."""
        self.s.set_plan(allocation.plan if plan is None else plan)
        self.s.measurements.allocation = Measured((allocation, uniform), self.s.base_id, self.s.plan)
        self.s.measurements.changed.emit()

    def record_blocks(self, analysis, plan: Plan, base_id: int) -> None:
        """A depth analysis (``analyse.depth``: block influences, metric when skipped) of ``plan`` over the kept
        weights ``base_id``."""
        self.s.measurements.blocks = Measured(analysis, base_id, plan)
        self.s.measurements.changed.emit()

    def is_fresh(self, m: Measured | None) -> bool:
        """Does a measurement describe the plan the window shows, over the kept weights it has now?"""
        return m is not None and m.base_id == self.s.base_id and m.plan == self.s.plan

    def state_label(self, plan: Plan | None = None) -> str:
        plan = self.s.applied_plan if plan is None else plan
        return state_label(plan, self.s.totals(plan).sparsity, self.s.base_label)

    def record_evaluation(self, plan: Plan, base_id: int, current, dense=None) -> None:
        """Evaluate's result for ``plan`` over the kept weights ``base_id`` (measured on a copy: evaluating
        never applies anything), with a History point for that state."""
        m = self.s.measurements
        if dense is not None:
            m.dense = dense
            m.remember(self.s.weight_state.original_id, Plan(), dense)
        m.remember(base_id, plan, current)
        m.current = Measured(current, base_id, plan)
        if base_id == self.s.base_id:   # History keeps the dataset's metric (accuracy, or perplexity)
            self.record(self.state_label(plan), accuracy=metric_of(self.s.dataset).value(current), plan=plan)
        self.s.measurements.changed.emit()

    def record_latency(self, plan: Plan, base_id: int, comparison: LatencyComparison) -> None:
        """A latency comparison for ``plan`` over the kept weights ``base_id`` (measured on copies)."""
        self.s.measurements.latency = Measured(comparison, base_id, plan)
        if base_id == self.s.base_id:
            self.record(self.state_label(plan), latency_ms=comparison.best.median_ms, plan=plan)
        self.s.measurements.changed.emit()

    def record_scan(self, result) -> None:
        self.s.measurements.scan = result
        self.s.measurements.changed.emit()

    # ------------------------------------------------------------------ history (Pareto view)
    def record(self, label: str, accuracy: float | None = None, latency_ms: float | None = None,
               plan: Plan | None = None) -> HistoryEntry:
        """Remember a state (``plan``, default the applied one, over the current kept weights) with what was
        measured there; an entry for the same state is updated."""
        plan = self.s.applied_plan if plan is None else plan
        e = self.s.history.record(label, plan, self.s.base_id, self.s.base_label, self.s.totals(plan), accuracy, latency_ms)
        self.history_changed.emit()
        return e

    def entry_state(self, entry: HistoryEntry) -> dict[str, torch.Tensor]:
        """The model state of a remembered entry (its kept weights under its plan); thread-safe, may be slow."""
        if entry.base_id == self.s.base_id:
            return self.s.masked_state(entry.plan)
        base = self.s.weights.get(entry.base_id)
        return masked_state(base, *self.s.masks_for_state(entry.plan, base))

    def restore(self, entry: HistoryEntry, state: dict[str, torch.Tensor] | None = None) -> None:
        """Return to a remembered state (its kept weights and plan); undoable for the plan. ``state`` is
        :meth:`entry_state`, when a worker computed it already."""
        if state is None:
            state = self.entry_state(entry)
        if entry.base_id != self.s.base_id:
            self.s.weight_state.use_base(self.s.weights.get(entry.base_id), entry.base_label, entry.base_id)
        self.s.editor.push()
        self.s.editor.plan = entry.plan
        self.s.weight_state.write(entry.plan, state)
        self.s.weight_state.changed.emit()
        self.s.editor.changed.emit(None)
        self.s.editor.undo_changed.emit()
