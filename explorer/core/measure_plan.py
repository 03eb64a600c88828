"""The dense baseline measured on open: the one measurement the session takes for itself, through the same
evaluate flow as every other door (``flows/measure.py``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .flows.measure import DENSE_ON_OPEN_S, dense_eval_seconds, evaluate_plan

if TYPE_CHECKING:
    from .session import Session

__all__ = ["DENSE_ON_OPEN_S", "evaluate_dense_if_quick"]


def evaluate_dense_if_quick(session: Session, limit_s: float = DENSE_ON_OPEN_S) -> bool:
    """Evaluate the dense loaded model (the baseline every card compares with) right away when that takes about
    ``limit_s`` or less; returns whether it did. Bigger models wait for Evaluate."""
    if session.measurements.dense is not None or not session.dataset.has_labels:
        return False
    if session.plan.active() or session.base_label != "loaded weights":
        return False
    snap = session.snapshot()
    if dense_eval_seconds(snap) > limit_s:
        return False
    current, _ = evaluate_plan(snap, need_dense=False)    # no plan, loaded weights: this is the dense model
    session.results.record_evaluation(snap.plan, snap.base_id, current, current)
    return True
