"""Per-layer diagnostics computed in this window (the layer table's Outliers and Alpha columns): OWL's outlier
ratio and the heavy-tail alpha (``core/analyse/owl.py``). Held in the AppContext like the speed maps, keyed by the
loaded model and its kept weights (both change with fine-tuning), and filled by the allocation box (Diagnose, or
an OWL / alpha allocation)."""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal

OUTLIERS_TIP = ("OWL's outlier ratio: the share of this layer's Wanda scores |w|·‖x‖ above M × their mean on the "
                "calibration samples (more outliers: the layer matters more and gets less sparsity under OWL).")
ALPHA_TIP = ("Heavy-tail alpha: the power-law exponent of the tail of this layer's weight spectrum (eigenvalues of "
             "WᵀW, Hill fit); lower means heavier-tailed, better trained, and gets less sparsity under alpha "
             "allocation.")


class LayerStats(QObject):
    changed = Signal()

    def __init__(self):
        super().__init__()
        self.key: object = None
        self.outliers: dict[str, float] = {}
        self.alpha: dict[str, float | None] = {}
        self.m: float | None = None

    @staticmethod
    def key_of(session) -> tuple:
        return (session.model_spec, id(session.result), id(session.base_state()))

    def put(self, key, outliers: dict | None = None, alpha: dict | None = None, m: float | None = None) -> None:
        if key != self.key:
            self.outliers, self.alpha, self.m, self.key = {}, {}, None, key
        if outliers is not None:
            self.outliers, self.m = dict(outliers), m
        if alpha is not None:
            self.alpha = dict(alpha)
        self.changed.emit()

    def for_session(self, session) -> tuple[dict, dict]:
        """(outliers, alpha) of the session's current model and weights; empty when they were computed for others."""
        if not session.loaded_ok or self.key != self.key_of(session):
            return {}, {}
        return self.outliers, self.alpha
