"""Install the feature panels (tabs, menu actions) into the main window."""
from __future__ import annotations


def install_panels(win) -> list:
    from .export_actions import ExportActions
    from .finetune_panel import FinetunePanel
    from .history_panel import HistoryPanel
    from .latency_panel import LatencyPanel
    from .results import ResultsController
    from .sensitivity_panel import SensitivityPanel

    win.results = ResultsController(win)
    win.finetune_panel = FinetunePanel(win)
    win.latency_panel = LatencyPanel(win)
    win.sensitivity_panel = SensitivityPanel(win)
    win.history_panel = HistoryPanel(win)
    win.exports = ExportActions(win)
    win.tabs.addTab(win.finetune_panel, "Fine-tune")
    win.tabs.addTab(win.latency_panel, "Latency")
    win.tabs.addTab(win.sensitivity_panel, "Sensitivity")
    win.tabs.addTab(win.history_panel, "History")
    win.tabs.setTabToolTip(0, "The selected layer's weights and mask")
    win.tabs.setTabToolTip(1, "Fine-tune with masks enforced: one-shot, iterative or AGP")
    win.tabs.setTabToolTip(2, "Measured latency: dense vs masked vs compacted")
    win.tabs.setTabToolTip(3, "Per-layer sensitivity scan and automatic allocation")
    win.tabs.setTabToolTip(4, "Every evaluated state: accuracy vs compression and latency")
    _view_menu(win)
    return [win.results, win.latency_panel, win.sensitivity_panel, win.history_panel]


def _view_menu(win) -> None:
    """View: jump to a tab (Ctrl+1..5) and the weight view's toggles, with shortcuts."""
    from PySide6.QtGui import QKeySequence

    m = win.view_menu
    for i in range(win.tabs.count()):
        win._act(win.tabs.tabText(i), lambda _=False, i=i: win.tabs.setCurrentIndex(i),
                 QKeySequence(f"Ctrl+{i + 1}"), win.tabs.tabToolTip(i), m)
    m.addSeparator()
    wv = win.weight_view
    for box, text, key in ((wv.abs_box, "Histogram of |w|", "Ctrl+Shift+A"), (wv.log_box, "Log counts", "Ctrl+Shift+L"),
                           (wv.detail_btn, "Detail zoom", "Ctrl+Shift+D")):
        act = win._act(text, lambda checked, b=box: b.setChecked(checked), QKeySequence(key), box.toolTip(), m)
        act.setCheckable(True)
        box.toggled.connect(act.setChecked)
