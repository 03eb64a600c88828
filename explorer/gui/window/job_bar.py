"""The status bar: messages, and the running job's progress bar (with an ETA) and Cancel button (Esc)."""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QSizePolicy, QStatusBar

from explorer.core.jobs import Progress

from .jobs import Job, JobRunner


class ElidedLabel(QLabel):
    """One line that ends in "…" where the status bar is too narrow (the whole text in its tooltip), instead of
    being cut mid-word or widening the window."""

    def __init__(self, text: str = ""):
        super().__init__()
        self._full = ""
        self.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.setMinimumWidth(40)
        self.setText(text)

    def setText(self, text: str) -> None:          # noqa: N802 (Qt's name)
        self._full = text
        self.setToolTip(text if text else "")
        self._elide()

    def text(self) -> str:
        return self._full

    def resizeEvent(self, e) -> None:              # noqa: N802
        super().resizeEvent(e)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.ElideRight, max(self.width(), 40))
        if shown != super().text():        # (a QLabel's setText re-lays out its parent)
            super().setText(shown)


PROGRESS_MS = 100


class JobBar:
    """Fills a QStatusBar and follows a JobRunner's jobs."""

    def __init__(self, bar: QStatusBar, runner: JobRunner):
        self.runner = runner
        self._timer = QTimer(bar)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(lambda: self.text.setText(""))
        # progress is shown at most 10 times a second: a QProgressBar repaints synchronously whenever its
        # percentage text changes, and a job may report far more often than that (GUI stall, issue 24)
        self._pace = QTimer(bar)
        self._pace.setSingleShot(True)
        self._pace.setInterval(PROGRESS_MS)
        self._pace.timeout.connect(self._show_progress)
        self._pending = None
        self.text = ElidedLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)     # the percentage; the job's title and step are in the text beside it
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop the running job (Esc); the session stays as it was before it")
        self.cancel_btn.setShortcut(QKeySequence(Qt.Key_Escape))
        self.cancel_btn.clicked.connect(runner.cancel)
        self.cancel_btn.hide()
        bar.addWidget(self.text, 1)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_btn)
        runner.job_started.connect(self._started)
        runner.job_progress.connect(self._progressed)
        runner.job_finished.connect(self._finished)

    def show(self, text: str, ms: int = 4000) -> None:
        """A status message, cleared after ``ms`` (0: kept)."""
        self.text.setText(text)
        self._timer.stop()
        if ms:
            self._timer.start(ms)

    def _started(self, job: Job) -> None:
        self._pace.stop()
        self._pending = None
        self.progress.setRange(0, 0)
        self.progress.setFormat("%p%")
        self.progress.show()
        self.cancel_btn.setVisible(job.cancellable)
        self.show(job.title + "…", 0)

    def _progressed(self, job: Job, p: Progress) -> None:
        self._pending = (job, p)
        if not self._pace.isActive():
            self._pace.start()

    def _show_progress(self) -> None:
        if self._pending is None:
            return
        (job, p), self._pending = self._pending, None
        bar = self.progress
        # QProgressBar.setValue repaints at once when the percentage changes, and a synchronous repaint paints
        # every dirty part of the window in this event-loop step (the plots' axes included: 25-35 ms under a
        # profiler, issue 24): with updates off it only changes the value, and turning them on schedules one
        # ordinary paint with the window's next one
        bar.setUpdatesEnabled(False)
        if p.fraction is None:
            bar.setRange(0, 0)
        else:
            bar.setRange(0, 1000)
            bar.setValue(int(p.fraction * 1000))
        bar.setFormat("%p%")
        bar.setUpdatesEnabled(True)
        eta = f"  ~{p.eta_s:.0f}s left" if p.eta_s is not None and p.eta_s >= 1 else ""
        if p.message:
            self.show(f"{job.title}: {p.message}{eta}", 0)

    def _finished(self, job: Job, status: str) -> None:
        self._pace.stop()
        self._pending = None
        if not self.runner.busy and not self.runner.queue:
            self.progress.hide()
            self.cancel_btn.hide()
        self.show(f"{job.title}: {'failed' if status == 'error' else status}", 3000 if status == "done" else 5000)
