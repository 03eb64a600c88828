"""The window's fast start: first frame first, the rest as it arrives.

``MainWindow(session, deferred=True)`` (what ``pruning-explorer gui`` opens) shows the layer table, the
dashboard and the controls at once, with the weight view saying "measuring…" and the other tabs as empty
pages. After the first paint the window fills itself in, in this order: the plots (pyqtgraph is imported
only now), the tab panels, the selected layer's ranking (the session opens on a layer that is quick to
rank), and -- in the background, as a quiet job -- the channel-group analysis (Torch-Pruning's dependency
graph; importing it alone takes seconds), after which the table marks channel-coupled layers.
"""
from __future__ import annotations

from PySide6.QtWidgets import QLabel

from . import gc_guard

TABS = [("finetune_panel", "Fine-tune", "Fine-tune with masks enforced: one-shot, iterative or AGP"),
        ("latency_panel", "Latency", "Measured latency: dense vs masked vs compacted"),
        ("sensitivity_panel", "Sensitivity", "Per-layer sensitivity scan and automatic allocation"),
        ("history_panel", "History", "Every evaluated state: accuracy vs compression and latency"),
        ("compress_panel", "Compress", "Deep Compression: weight sharing (k-means per layer) and Huffman coding after "
                                       "pruning, measured to the byte"),
        ("compare_panel", "Criteria", "Compare pruning criteria on the same plan: accuracy vs sparsity")]
MEASURING = "measuring…"


def pause_gc() -> None:
    """No automatic cyclic GC while the app starts (``gc_guard``: why); :func:`finish` turns it back on."""
    gc_guard.hold(gc_guard.START)


def resume_gc() -> None:
    gc_guard.release(gc_guard.START)


def add_tabs(win, placeholders: bool) -> None:
    """The tab pages after Weights: the panels, or (deferred) empty pages with the same titles."""
    if placeholders:
        for _, title, tip in TABS:
            page = QLabel(MEASURING)
            page.setObjectName("placeholderPage")
            win.tabs.setTabToolTip(win.tabs.addTab(page, title), tip)
        return
    for attr, title, tip in TABS:
        win.tabs.setTabToolTip(win.tabs.addTab(_make_panel(win, attr), title), tip)


def _make_panel(win, attr: str):
    ctx = win.ctx
    if attr == "finetune_panel":
        from ..panels.finetune_panel import FinetunePanel
        w = FinetunePanel(ctx, evaluate_after=win.measure.evaluate)
    elif attr == "latency_panel":
        from ..panels.latency_panel import LatencyPanel
        w = LatencyPanel(ctx, measure=win.measure.measure_latency)
    elif attr == "sensitivity_panel":
        from ..panels.sensitivity_panel import SensitivityPanel
        w = SensitivityPanel(ctx, finetune_config=win.finetune_panel.config)
    elif attr == "history_panel":
        from ..panels.history_panel import HistoryPanel
        w = HistoryPanel(ctx)
    elif attr == "compress_panel":
        from ..panels.compress_panel import CompressPanel
        w = CompressPanel(ctx)
    else:
        from ..panels.compare_panel import ComparePanel
        w = ComparePanel(ctx, finetune_config=win.finetune_panel.config)
    win.set_panel(attr, w)
    return w


def replace_placeholders(win) -> None:
    """Build the panels into the placeholder pages (keeping the current tab)."""
    current = win.tabs.currentIndex()
    for i, (attr, title, tip) in enumerate(TABS, start=1):
        old = win.tabs.widget(i)
        w = _make_panel(win, attr)
        win.tabs.removeTab(i)
        win.tabs.insertTab(i, w, title)
        win.tabs.setTabToolTip(i, tip)
        old.deleteLater()
    win.tabs.setCurrentIndex(current)


def finish(win) -> None:
    """Fill a deferred window in: plots, panels, the selected layer, then channel groups (once: the window's
    ``finish_start`` calls it the first time only)."""
    resume_gc()
    win.weight_view.build_plots()
    win.global_panel.build_plots()
    replace_placeholders(win)
    win.redraw_all(now=True)
    gc_guard.freeze_long_lived()     # later full collections scan only what comes after this (gc_guard)
    s = win.session
    if s.loaded_ok and not s.groups_ready:
        win.runner.run("Analysing channel groups", lambda p, c: _groups_and_warm_imports(s, p, c),
                       on_done=lambda _=None: groups_arrived(win), on_error=lambda e=None: groups_arrived(win),
                       quiet=True)


def _groups_and_warm_imports(s, progress, cancel):
    """The start's background job: the channel groups, then torch._dynamo (with sympy and triton, 3-4 s of imports
    that the first fine-tune or trace would otherwise run in the middle of a job, holding the import lock: the
    GUI-thread stall benchmark's job took 12 s instead of 5-7 and its stalls 0.2-0.4 s once nothing imported it at
    start-up). Groups first: the table's channel checks wait for them."""
    groups = s.ensure_groups(progress, cancel)
    import torch._dynamo  # noqa: F401

    return groups


def groups_arrived(win) -> None:
    """The channel groups are known: the table marks coupled layers, the model's notes gain the analysis's."""
    s = win.session
    if not s.loaded_ok or win.ctx.is_closing():
        return
    r = s.require()
    win.model_label.setToolTip(f"{r.model.spec}\n" + "\n".join(r.notes))
    win.table.rebuild()
    win.redraw_all()
