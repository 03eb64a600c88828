"""The speed maps measured in this window (Latency tab ▸ Speed map), per layer: what the plot draws and what the
layer table's Break-even column says. Held here (the AppContext's ``speed_results``), not in the session: they
describe this machine's kernels, not the model's state, and are cleared when another model opens."""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from explorer.core.analyse.speed import LayerSpeed

SPARSE_KERNELS = ("csr", "2:4")


class SpeedResults(QObject):
    changed = Signal(list)          # the layer names whose speed map arrived (or [] when cleared)

    def __init__(self):
        super().__init__()
        self._layers: dict[str, LayerSpeed] = {}
        self._batch: dict[str, int] = {}
        self.model_key: object = None

    @staticmethod
    def key_of(session) -> tuple:
        """Which loaded model the results belong to."""
        return (session.model_spec, id(session.result))

    def put(self, model_key, batch: int, layers: list[LayerSpeed]) -> None:
        if model_key != self.model_key:
            self._layers.clear()
            self._batch.clear()
            self.model_key = model_key
        for l in layers:
            self._layers[l.name] = l
            self._batch[l.name] = batch
        self.changed.emit([l.name for l in layers])

    def clear(self) -> None:
        self._layers.clear()
        self._batch.clear()
        self.model_key = None
        self.changed.emit([])

    def get(self, name: str) -> LayerSpeed | None:
        return self._layers.get(name)

    def batch(self, name: str) -> int | None:
        return self._batch.get(name)

    def best_sparse(self, name: str):
        """(kernel, break-even) of the sparse kernel that wins earliest, or (None, None)."""
        l = self._layers.get(name)
        if l is None:
            return None, None
        found = [(k.break_even, k.kernel) for k in l.kernels if k.kernel in SPARSE_KERNELS and k.break_even is not None]
        if not found:
            return None, None
        be, kernel = min(found)
        return kernel, be

    def break_even_text(self, name: str) -> tuple[str, str]:
        """(cell text, tooltip) for the layer table: '—' until measured."""
        l = self._layers.get(name)
        if l is None:
            return "—", "Not measured yet: Latency tab ▸ Speed map measures where a sparse kernel beats dense"
        kernel, be = self.best_sparse(name)
        b = self._batch.get(name, 1)
        top = max((max(k.sparsities) for k in l.kernels if k.sparsities), default=0.0)
        if kernel is None:
            return (f"dense wins to {top * 100:.0f} %",
                    f"No sparse kernel beat the dense layer at any measured sparsity up to {top:.0%} (batch {b})")
        return (f"sparse wins above {be * 100:.0f} %",
                f"{kernel} is faster than the dense layer from {be:.0%} sparsity on (batch {b}, measured here)")
