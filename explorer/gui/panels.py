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
    return [win.results, win.latency_panel, win.sensitivity_panel, win.history_panel]
