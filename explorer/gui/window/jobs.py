"""Run core jobs in a worker thread, one at a time, and report back on the main thread.

A job is a plain core function ``fn(progress, cancel) -> result``. The runner executes it on superqt's
thread worker, forwards rate-limited progress records (records that carry data -- a curve point, a
finished step -- always get through), and calls the job's named handlers on the main thread:
``on_done(result)``, ``on_progress(record)``, ``on_error(exception)``, ``on_cancel()``. Cancel is
cooperative: the job raises :class:`Cancelled` at its next check.

Closing the window calls :meth:`JobRunner.shut_down`: the running job is cancelled and waited for until its worker
has sent its last signal, and no job starts after that (a timer that fires while the window closes -- a lesson's
measurement -- would otherwise start one whose signals outlive the window: "Signal source has been deleted").
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QObject, QThreadPool, Signal
from superqt.utils import WorkerBase

from explorer.core.errors import Cancelled, ExplorerError
from explorer.core.jobs import CancelToken, Progress

from . import gc_guard

PROGRESS_INTERVAL_S = 0.05
_OUTLIVING: set = set()     # workers still running when their window closed (their signals must stay alive)


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


class _JobSignals(QObject):
    """superqt's worker signals (started, finished, returned, errored, warned) plus progress records."""

    started = Signal()
    finished = Signal()
    _finished = Signal(object)
    returned = Signal(object)
    errored = Signal(object)
    warned = Signal(tuple)
    progressed = Signal(object)


class _JobWorker(WorkerBase):
    """superqt's worker for one job; progress records are rate-limited here, in the worker thread."""

    def __init__(self, job: Job):
        super().__init__(SignalsClass=_JobSignals)
        self.job = job
        self.ended = threading.Event()     # the job's function returned (or raised)
        self.done = threading.Event()      # ... and the worker sent its last signal
        self._last = 0.0

    def _progress(self, p: Progress) -> None:
        now = time.monotonic()
        if p.data is not None or now - self._last >= PROGRESS_INTERVAL_S or (p.fraction or 0) >= 1.0:
            self._last = now
            self.signals.progressed.emit(p)

    def work(self):
        try:
            return self.job.fn(self._progress, self.job.token)
        finally:
            self.ended.set()

    def run(self) -> None:      # Qt's name (QRunnable.run): superqt's run emits the result signals after work()
        try:
            super().run()
        finally:
            self.done.set()
            _OUTLIVING.discard(self)


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
        self._worker: _JobWorker | None = None
        self._outcome: tuple[str, Any] | None = None
        self.closed = False      # shut_down() was called: no job starts any more

    @property
    def busy(self) -> bool:
        return self.current is not None

    @property
    def working(self) -> bool:
        """The current job's function is still executing in its thread."""
        w = self._worker
        return w is not None and not w.ended.is_set()

    def submit(self, job: Job) -> Job:
        if self.closed:          # the window is closing or closed: nothing starts (its handlers are not called)
            job.token.cancel()
            return job
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
        """Block until the running job's worker has finished: its function ended and its last signal was sent."""
        w = self._worker
        return w.done.wait(timeout_ms / 1000) if w is not None else True

    def shut_down(self, timeout_ms: int = 20000) -> bool:
        """For closing the window: cancel the running job, drop the queued ones, start none from now on, and wait
        for the running worker to finish. False if it did not within ``timeout_ms``; it is then kept alive (its
        signals with it) until it ends, so it never emits from a deleted object."""
        self.closed = True
        self.cancel()
        w = self._worker
        if w is None or self.wait(timeout_ms):
            return True
        _OUTLIVING.add(w)
        if w.done.is_set():        # it ended between the wait and the add
            _OUTLIVING.discard(w)
            return True
        return False

    def _next(self) -> None:
        if self.current is not None:
            return
        if not self.queue:
            self.busy_changed.emit(False)
            return
        job = self.queue.popleft()
        self.current = job
        self._outcome = None
        w = _JobWorker(job)
        self._worker = w
        w.signals.progressed.connect(self._on_progress)
        w.signals.returned.connect(self._on_returned)
        w.signals.errored.connect(self._on_errored)
        w.signals.finished.connect(self._on_finished)
        self.busy_changed.emit(True)
        self.job_started.emit(job)
        # the runner keeps the worker alive until it finishes; superqt's own start() would also register it in
        # a class-level set through a classmethod slot, which leaves two small objects behind per job
        gc_guard.job_started()      # no cyclic GC in the worker thread (it could destroy Qt widgets there)
        QThreadPool.globalInstance().start(w)

    def _on_progress(self, p: Progress) -> None:
        job = self.current
        if job is None:
            return
        if job.on_progress:
            job.on_progress(p)
        self.job_progress.emit(job, p)

    def _on_returned(self, result) -> None:
        self._outcome = ("done", result)

    def _on_errored(self, e: Exception) -> None:
        if isinstance(e, Cancelled):
            self._outcome = ("cancelled", None)
        else:
            self._outcome = ("error", (e, "".join(traceback.format_exception(e))))

    def _on_finished(self) -> None:
        job, (status, payload) = self.current, self._outcome or ("cancelled", None)
        self._worker, self.current, self._outcome = None, None, None
        gc_guard.job_ended()
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
