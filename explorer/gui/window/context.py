"""What a panel gets instead of the window: the session, the job runner, settings, and a few services.

Panels read the session and change it only through its public methods; they subscribe to its events to
redraw. Inputs from other panels come through their constructors (e.g. the fine-tune settings that the
Search button uses), never by reaching into the window.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from PySide6.QtCore import QSettings
from PySide6.QtGui import QAction, QKeySequence

from explorer.core.session import Session

from ..panels.layer_stats import LayerStats
from ..panels.speed_results import SpeedResults
from .jobs import JobRunner


@dataclass
class AppContext:
    session: Session
    runner: JobRunner
    settings: QSettings
    status: Callable[..., None]                 # status(text, ms=4000)
    report_error: Callable[[Exception], None]
    show_error: Callable[..., None]             # show_error(title, message, details="")
    selected_layers: Callable[[], list[str]]    # rows selected in the layer table
    is_closing: Callable[[], bool]
    action_parent: object                       # the QWidget that owns actions (their shortcuts work window-wide)
    speed_results: SpeedResults = field(default_factory=SpeedResults)   # Latency tab's speed maps (per layer)
    layer_stats: LayerStats = field(default_factory=LayerStats)         # outlier ratios and alphas (per layer)

    def action(self, text: str, slot, shortcut=None, tip: str = "", menu=None) -> QAction:
        """A menu action with an optional shortcut and tooltip (also shown in the status bar)."""
        a = QAction(text, self.action_parent)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
        if tip:
            a.setToolTip(tip)
            a.setStatusTip(tip)
        a.triggered.connect(slot)
        if menu is not None:
            menu.addAction(a)
        return a

    def require_labels(self, what: str) -> bool:
        """True when the dataset has labels; otherwise say why ``what`` cannot run."""
        ds = self.session.dataset
        if ds.has_labels:
            return True
        self.show_error("No labels", f"{what} needs labels; the dataset {ds.spec} has none. Choose a labelled "
                                     "dataset (digits, mnist:…, cifar10:…, imagefolder:…, tensors:…).")
        return False

    def start_job(self, title: str, fn, **handlers) -> bool:
        """Run ``fn`` as a job unless another one is running (then say so). ``handlers``: on_done, ..."""
        if self.runner.busy:
            self.status("another job is running; wait or cancel it", 4000)
            return False
        self.runner.run(title, fn, **handlers)
        return True
