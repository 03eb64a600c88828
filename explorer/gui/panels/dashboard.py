"""The dashboard: params, nonzeros, MACs, sizes, compression ratio, accuracy (or perplexity), latency."""
from __future__ import annotations

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from explorer.core.model.metrics import Totals, format_bytes, format_count
from explorer.core.train.metric import ACCURACY, Metric, metric_of


class Card(QFrame):
    def __init__(self, title: str, tooltip: str, parent=None):
        super().__init__(parent)
        self.setObjectName("card")
        self.setFrameShape(QFrame.StyledPanel)
        self.title = QLabel(title)
        self.title.setObjectName("cardTitle")
        self.value = QLabel("—")
        self.value.setObjectName("cardValue")
        self.sub = QLabel(" ")
        self.sub.setObjectName("cardSub")
        self.sub.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 6, 10, 6)
        lay.setSpacing(1)
        lay.addWidget(self.title)
        lay.addWidget(self.value)
        lay.addWidget(self.sub)
        self.setToolTip(tooltip)

    def set(self, value: str, sub: str = " ", tone: str | None = None) -> None:
        if self.value.text() != value:
            self.value.setText(value)
        if self.sub.text() != sub:
            self.sub.setText(sub)
        if self.value.property("tone") != (tone or ""):   # re-style only when the colour changes
            self.value.setProperty("tone", tone or "")
            self.value.style().unpolish(self.value)
            self.value.style().polish(self.value)


SIZE_TITLE = "Size dense → pruned"
RATIO_TITLE = "Compression · pruned"


class Dashboard(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.cards = {
            "params": Card("Nonzero params", "Parameters left nonzero (all tensors) of the total"),
            "sparsity": Card("Sparsity", "Share of the prunable weights (conv/linear) that are zero"),
            "macs": Card("MACs", "Multiply-accumulates per sample that involve a nonzero weight, vs dense. "
                                 "Element/n:m zeros only save MACs on sparse hardware; channel pruning saves "
                                 "them for real once compacted."),
            "size": Card(SIZE_TITLE, "fp32 storage: dense, and with every prunable weight in the smaller "
                                     "of CSR (values + column indices + row pointers) and bitmask "
                                     "(values + 1 bit per weight). After Compress (Deep Compression) it shows the "
                                     "Huffman stage: the bytes of model.dcz."),
            "ratio": Card(RATIO_TITLE, "Dense size / size at the stage the title names: pruned (sparse fp32), or "
                                       "Huffman after Compress"),
            "accuracy": Card("Accuracy (test)", "Top-1 accuracy on the test split: dense, and the evaluated plan"),
            "latency": Card("Latency", "Measured median latency: dense vs current masked model vs compacted"),
        }
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.setSpacing(6)
        for c in self.cards.values():
            lay.addWidget(c, 1)

    def show_totals(self, t: Totals | None, pending: bool = False, mac_note: str = "") -> None:
        c = self.cards
        if t is None:
            for k in ("params", "sparsity", "macs", "size", "ratio"):
                c[k].set("…", "indexing weights")
            return
        c["params"].set(format_count(t.nonzero_params), f"of {format_count(t.params)}")
        c["sparsity"].set(f"{t.sparsity:.1%}", f"{format_count(t.prunable_params - t.prunable_nonzero)} weights zero"
                          + (" (plan not applied)" if pending else ""))
        c["macs"].set(format_count(t.nonzero_macs), f"of {format_count(t.macs)} dense  ({t.mac_ratio:.2f}× fewer)"
                      + (f"; {mac_note}" if mac_note and t.mac_ratio > 1.005 else ""))
        c["size"].title.setText(SIZE_TITLE)
        c["size"].set(format_bytes(t.sparse_bytes), f"dense {format_bytes(t.dense_bytes)}; stage: pruned")
        tone = "good" if t.compression_ratio >= 2 else None
        sub = "dense / sparse storage" if t.sparsity > 0.05 else "sparse formats cost overhead when few weights are zero"
        c["ratio"].title.setText(RATIO_TITLE)
        c["ratio"].set(f"{t.compression_ratio:.2f}×", sub, tone)

    def show_compression(self, result) -> None:
        """The size and compression cards at the Huffman stage of Deep Compression (model.dcz)."""
        st = {s["name"]: s for s in result.stages}
        h, c = st["huffman"], self.cards
        c["size"].title.setText("Size dense → Huffman")
        c["size"].set(format_bytes(h["size_bytes"]), f"dense {format_bytes(st['dense']['size_bytes'])}; stage: "
                      f"Huffman-coded (model.dcz)")
        c["ratio"].title.setText("Compression · Huffman")
        c["ratio"].set(f"{h['ratio']:.1f}×", f"pruned {st['pruned']['ratio']:.1f}× → quantized "
                       f"{st['quantized']['ratio']:.1f}× → Huffman", "good")

    def show_accuracy(self, dense: float | None, current: float | None, stale: bool,
                      losses: tuple[float | None, float | None] = (None, None), metric: Metric = ACCURACY) -> None:
        """The quality card: accuracy, or a language model's perplexity (lower is better) -- ``metric`` says."""
        card = self.cards["accuracy"]
        title = f"{metric.name.capitalize()} (test)"
        if card.title.text() != title:
            card.title.setText(title)
        dl, cl = losses
        card.setToolTip(metric.tooltip + " Measured on the test split: dense, and the evaluated plan."
                        + (f"\ncross-entropy loss: dense {dl:.4f}" if dl is not None else "")
                        + (f", current {cl:.4f}" if cl is not None else ""))
        if dense is None and current is None:
            card.set("—", "Run ▸ Evaluate (F5)")
            return
        if current is None:
            card.set(metric.format(dense), "dense; current not evaluated")
            return
        delta = current - dense if dense is not None else None
        worse = metric.drop(dense, current) if dense is not None else None   # points, or % more perplexity
        tone = None if worse is None else ("bad" if worse > 1.0 else ("good" if worse <= 0.1 else None))
        sub = f"dense {metric.format(dense)}  Δ {delta:+.2f}" if delta is not None else "dense not evaluated"
        card.set(metric.format(current), sub + ("  (stale)" if stale else ""), tone)

    def show_latency(self, text: str, sub: str) -> None:
        self.cards["latency"].set(text, sub)

    def show_measurements(self, session) -> None:
        """The accuracy and latency cards from the session's measurements, marked stale when an edit made them so."""
        m = session.measurements
        if m.compression is not None and session.is_fresh(m.compression):
            self.show_compression(m.compression.value)
        dense, cur = m.dense, m.current
        metric = metric_of(session.dataset if session.loaded_ok else None)
        self.show_accuracy(metric.value(dense), metric.value(cur.value) if cur else None,
                           cur is not None and not session.is_fresh(cur),
                           (dense.loss if dense else None, cur.value.loss if cur else None), metric)
        if m.latency is None:
            self.show_latency("—", "Run ▸ Measure latency (F6)")
            return
        L = m.latency.value
        best = L.best
        speed = L.dense.median_ms / best.median_ms if best.median_ms else 0
        which = "compacted" if L.compact else "masked"
        self.show_latency(f"{best.median_ms:.3g} ms", f"{which}; dense {L.dense.median_ms:.3g} ms = {speed:.2f}× "
                          + ("" if session.is_fresh(m.latency) else "(stale)"))


def totals_text(t: Totals, layers: int) -> str:
    """The one-paragraph totals under the layer table."""
    return (f"<b>Totals</b>: {layers} prunable layers, {t.prunable_params:,} prunable of {t.params:,} params; "
            f"{format_count(t.prunable_nonzero)} nonzero ({t.sparsity:.1%} sparse); MACs {format_count(t.nonzero_macs)}"
            f" / {format_count(t.macs)}; {format_bytes(t.sparse_bytes)} sparse vs {format_bytes(t.dense_bytes)} dense "
            f"= <b>{t.compression_ratio:.2f}×</b>")
