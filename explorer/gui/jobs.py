"""Run core jobs in a worker thread, one at a time, and report back on the main thread.

A job is a plain core function ``fn(progress, cancel) -> result``. The
runner executes it in a QThread, forwards rate-limited progress records
(records that carry data -- a curve point, a finished step -- always get
through), and calls ``on_done``/``on_error`` on the main thread. Cancel is
cooperative: the job raises :class:`Cancelled` at its next check.
"""
from __future__ import annotations

import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal

from explorer.core.errors import Cancelled, ExplorerError
from explorer.core.jobs import CancelToken, Progress

PROGRESS_INTERVAL_S = 0.05


@dataclass
class Job:
    title: str
    fn: Callable[[Callable[[Progress], None], CancelToken], Any]
    on_done: Callable[[Any], None] | None = None
    on_error: Callable[[Exception], None] | None = None
    on_progress: Callable[[Progress], None] | None = None
    on_cancel: Callable[[], None] | None = None
    cancellable: bool = True
    quiet: bool = False            # background chores (indexing) do not pop dialogs
    token: CancelToken = field(default_factory=CancelToken)


class _Thread(QThread):
    progressed = Signal(object)
    succeeded = Signal(object)
    errored = Signal(object, str)
    was_cancelled = Signal()

    def __init__(self, job: Job):
        super().__init__()
        self.job = job
        self._last = 0.0

    def _progress(self, p: Progress) -> None:
        now = time.monotonic()
        if p.data is not None or now - self._last >= PROGRESS_INTERVAL_S or (p.fraction or 0) >= 1.0:
            self._last = now
            self.progressed.emit(p)

    def run(self) -> None:
        try:
            result = self.job.fn(self._progress, self.job.token)
        except Cancelled:
            self.was_cancelled.emit()
            return
        except Exception as e:  # delivered to the main thread, shown in a dialog
            self.errored.emit(e, traceback.format_exc())
            return
        self.succeeded.emit(result)


class JobRunner(QObject):
    """FIFO of jobs, one running at a time."""

    job_started = Signal(object)      # Job
    job_progress = Signal(object, object)  # Job, Progress
    job_finished = Signal(object, str)     # Job, "done" | "error" | "cancelled"
    busy_changed = Signal(bool)
    error = Signal(str, str, str)     # title, message, details

    def __init__(self, parent=None):
        super().__init__(parent)
        self.queue: deque[Job] = deque()
        self.current: Job | None = None
        self._thread: _Thread | None = None

    @property
    def busy(self) -> bool:
        return self.current is not None

    def submit(self, job: Job) -> Job:
        self.queue.append(job)
        self._next()
        return job

    def run(self, title: str, fn, **kw) -> Job:
        return self.submit(Job(title, fn, **kw))

    def cancel(self) -> None:
        """Cancel the running job and drop queued ones."""
        for j in self.queue:
            if j.on_cancel:
                j.on_cancel()
        self.queue.clear()
        if self.current is not None and self.current.cancellable:
            self.current.token.cancel()

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the running job's thread ends (for closing the window)."""
        t = self._thread
        return t.wait(timeout_ms) if t is not None else True

    def _next(self) -> None:
        if self.current is not None:
            return
        if not self.queue:
            self.busy_changed.emit(False)
            return
        job = self.queue.popleft()
        self.current = job
        th = _Thread(job)
        self._thread = th
        th.progressed.connect(lambda p, j=job: self._on_progress(j, p))
        th.succeeded.connect(lambda r, j=job: self._finish(j, "done", r))
        th.errored.connect(lambda e, tb, j=job: self._finish(j, "error", (e, tb)))
        th.was_cancelled.connect(lambda j=job: self._finish(j, "cancelled", None))
        th.finished.connect(th.deleteLater)
        self.busy_changed.emit(True)
        self.job_started.emit(job)
        th.start()

    def _on_progress(self, job: Job, p: Progress) -> None:
        if job.on_progress:
            job.on_progress(p)
        self.job_progress.emit(job, p)

    def _finish(self, job: Job, status: str, payload) -> None:
        if self._thread is not None:
            self._thread.wait(5000)
        self._thread = None
        self.current = None
        try:
            if status == "done" and job.on_done:
                job.on_done(payload)
            elif status == "cancelled" and job.on_cancel:
                job.on_cancel()
            elif status == "error":
                e, tb = payload
                if job.on_error:
                    job.on_error(e)
                elif not job.quiet or not isinstance(e, ExplorerError):
                    if isinstance(e, ExplorerError):
                        self.error.emit(getattr(e, "title", job.title), str(e), "")
                    else:
                        self.error.emit(f"{job.title} failed", f"{type(e).__name__}: {e}", tb)
        except Exception as e:  # a bug in a completion handler must not kill the queue
            self.error.emit(f"{job.title}: could not show the result", f"{type(e).__name__}: {e}",
                            traceback.format_exc())
        self.job_finished.emit(job, status)
        if self.current is None:      # a completion handler may already have started the next job
            self._next()
