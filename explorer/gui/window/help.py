"""Help menu: the pruning concepts in one sentence each, the keyboard shortcuts, About."""
from __future__ import annotations

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QMessageBox

from explorer import __version__
from explorer.core.prune.criteria import CRITERIA
from explorer.core.prune.granularity import get_granularity

from ..panels.layer_table import GRANULARITY_CHOICES
from .dialogs import free_when_closed

CONCEPTS = [
    ("Sparsity", "the share of a layer's weights set to exactly zero."),
    ("Scope", "local gives every layer its own sparsity; global puts one threshold on comparable scores across "
              "layers, so robust layers lose more (capped per layer)."),
    ("Compression ratio", "dense fp32 size / size with every pruned weight stored as CSR or bitmask (the smaller)."),
    ("MACs", "multiply-accumulates per sample; 'nonzero MACs' count only those with a nonzero weight, which dense "
             "hardware still executes."),
    ("Compaction", "physically removing pruned channels (and what depends on them): a smaller dense network that is "
                   "really faster."),
    ("Sensitivity", "the accuracy when one layer alone is pruned: which layers can lose the most."),
    ("Fine-tuning", "training the pruned network with its masks held at zero to recover accuracy."),
    ("Weight sharing", "Deep Compression's second stage: a layer's kept weights clustered (k-means) into 2^b shared "
                       "values, each weight stored as a b-bit index into them; training then moves the shared "
                       "values (the Compress tab)."),
    ("Relative index", "the gap from one stored weight to the previous one, in a few bits; a longer gap is bridged "
                       "by filler zeros."),
    ("Huffman coding", "lossless: frequent indices and gaps get short codes, rare ones long codes (the last stage of "
                       "Deep Compression; the bytes of model.dcz)."),
    ("Calibration samples", "a few seeded training samples (default 128) on which hessian, wanda and apoz measure "
                            "their statistics and reconstruction refits weights; recipes record the number."),
    ("Reconstruction", "after the mask is chosen, refitting each pruned layer's remaining weights so its output "
                       "matches the dense layer's on the calibration samples (least squares): one-shot accuracy "
                       "without fine-tuning."),
]


def _box(parent, title: str, html: str, min_width: int | None = None) -> QMessageBox:
    box = QMessageBox(parent)
    free_when_closed(box)
    box.setWindowTitle(title)
    box.setText(html)
    if min_width:
        box.setStyleSheet(f"QLabel {{ min-width: {min_width}px; }}")
    box.open()
    return box


def show_concepts(parent) -> QMessageBox:
    rows = list(CONCEPTS)
    rows += [(f"Granularity {g}", get_granularity(g).tooltip) for g in GRANULARITY_CHOICES]
    rows += [(f"Criterion {n}", c.tooltip) for n, c in CRITERIA.items()]
    html = "<table cellspacing=6>" + "".join(f"<tr><td><b>{a}</b></td><td>{b}</td></tr>" for a, b in rows) + "</table>"
    return _box(parent, "Pruning concepts", html, 620)


def show_shortcuts(parent, menus) -> QMessageBox:
    seen, rows = set(), []
    for m in menus:
        for a in m.actions():
            if a.shortcut().isEmpty():
                continue
            key = a.shortcut().toString(QKeySequence.NativeText)
            if (key, a.text()) not in seen:
                seen.add((key, a.text()))
                rows.append(f"<tr><td><b>{key}</b></td><td>{a.text().replace('&', '')}</td></tr>")
    rows.append("<tr><td><b>Esc</b></td><td>Cancel the running job</td></tr>")
    return _box(parent, "Keyboard shortcuts", "<table cellspacing=4>" + "".join(rows) + "</table>")


def show_about(parent) -> QMessageBox:
    return _box(parent, "About Pruning Explorer",
                f"<b>Pruning Explorer {__version__}</b><p>Explore neural-network pruning: granularity, criteria, "
                "sensitivity, fine-tuning, measured latency.</p><p>Built on the MIT EfficientML lecture 'Pruning and "
                "Sparsity'.</p>")
