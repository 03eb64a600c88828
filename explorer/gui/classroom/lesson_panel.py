"""The lesson bar: a guided walk-through of the lecture, one step per idea (lessons are data files, see
``explorer/core/lessons``). Each step sets the app up through the session's public methods, points at what to
look at, and fills its numbers in live from the session; Back / Next walk the steps, Leave closes the bar and the
Lessons menu resumes where the class stopped.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from explorer.core.flows.measure import measure_latency
from explorer.core.lessons import steps as lesson_steps
from explorer.core.lessons.lesson import Lesson, load_lesson

from ..window.context import AppContext

AUTO_MEASURE_MS = 700   # after an edit, the step's numbers are measured again once things settle


@dataclass
class LessonHooks:
    """What a step may do beyond the session: the window's views and the other panels' jobs."""

    show_tab: Callable[[str], None]
    set_detail: Callable[[bool], None]
    targets: Callable[[str], QWidget | None]      # a highlight name -> the widget to frame
    evaluate: Callable[[], None]
    scan: Callable[[], None]
    compress: Callable[[], None]


class Highlight(QObject):
    """An orange frame drawn over a widget (a child that follows its size; clicks go through)."""

    def __init__(self):
        super().__init__()
        self.frames: list[tuple[QWidget, QFrame]] = []

    def show(self, widgets: list[QWidget]) -> None:
        self.clear()
        for w in widgets:
            f = QFrame(w)
            f.setObjectName("lessonHighlight")
            f.setAttribute(Qt.WA_TransparentForMouseEvents)
            f.setStyleSheet("QFrame#lessonHighlight { border: 3px solid #f29900; border-radius: 6px; "
                            "background: transparent; }")
            f.setGeometry(w.rect())
            f.show()
            f.raise_()
            w.installEventFilter(self)
            self.frames.append((w, f))

    def clear(self) -> None:
        for w, f in self.frames:
            w.removeEventFilter(self)
            f.hide()
            f.deleteLater()
        self.frames = []

    def eventFilter(self, obj, ev) -> bool:
        if ev.type() == QEvent.Resize:
            for w, f in self.frames:
                if w is obj:
                    f.setGeometry(w.rect())
                    f.raise_()
        return False


class LessonPanel(QFrame):
    """The bar under the window's views while a lesson is open."""

    def __init__(self, ctx: AppContext, hooks: LessonHooks):
        super().__init__()
        self.ctx = ctx
        self.session = ctx.session
        self.hooks = hooks
        self.lesson: Lesson | None = None
        self.index = 0
        self._tried: set = set()
        self._entry_due = False     # a step's entry measurement waits for the job queue
        self.visibility_changed: Callable[[], None] = lambda: None   # the window places the bar    # (kind, state) measured automatically once: a failure is not retried in a loop
        self.highlight = Highlight()
        self._auto = QTimer(self)
        self._auto.setSingleShot(True)
        self._auto.setInterval(AUTO_MEASURE_MS)
        self._auto.timeout.connect(lambda: self._measure(entry=False))
        self._redraw = QTimer(self)
        self._redraw.setSingleShot(True)
        self._redraw.setInterval(50)
        self._redraw.timeout.connect(self.refresh)
        self.setObjectName("lessonPanel")
        self.setFrameShape(QFrame.StyledPanel)
        self.header = QLabel("")
        self.header.setObjectName("lessonHeader")
        self.header.setWordWrap(True)
        self.text = QLabel("")
        self.text.setObjectName("lessonText")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.RichText)
        self.text.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.back_btn = QPushButton("◀ Back")
        self.back_btn.setToolTip("The previous step (Alt+Left)")
        self.back_btn.clicked.connect(self.back)
        self.next_btn = QPushButton("Next ▶")
        self.next_btn.setObjectName("primary")
        self.next_btn.setToolTip("The next step (Alt+Right)")
        self.next_btn.clicked.connect(self.next)
        self.leave_btn = QPushButton("Leave")
        self.leave_btn.setToolTip("Close the lesson; Lessons ▸ Resume comes back to this step")
        self.leave_btn.clicked.connect(self.leave)
        buttons = QVBoxLayout()
        buttons.addWidget(self.next_btn)
        buttons.addWidget(self.back_btn)
        buttons.addWidget(self.leave_btn)
        buttons.addStretch(1)
        body = QVBoxLayout()
        body.addWidget(self.header)
        body.addWidget(self.text, 1)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 8, 4)
        lay.addLayout(body, 1)
        lay.addLayout(buttons)
        s = self.session
        for sig in (s.editor.changed, s.weight_state.changed, s.selection_changed, s.measurements.changed, s.loaded):
            sig.connect(self._changed)
        # a step's number left pending while another job ran (the rankings a sweep's weights need) is measured
        # once the queue is idle
        ctx.runner.busy_changed.connect(lambda busy: None if busy else self._changed())
        self.hide()

    # ------------------------------------------------------------------ opening and walking
    def open(self, name_or_path: str, step: int = 0) -> bool:
        """Open a lesson (a built-in name or a file) at ``step`` (0-based); errors are a dialog."""
        try:
            lesson = load_lesson(name_or_path)
        except Exception as e:
            self.ctx.report_error(e)
            return False
        self.lesson = lesson
        self.show()
        self.visibility_changed()
        self.go(max(0, min(step, len(lesson.steps) - 1)))
        return True

    @property
    def step(self):
        return None if self.lesson is None else self.lesson.steps[self.index]

    def go(self, index: int) -> None:
        if self.lesson is None:
            return
        self.index = max(0, min(index, len(self.lesson.steps) - 1))
        st = self.step
        self.ctx.settings.setValue("lesson/path", str(self.lesson.path))
        self.ctx.settings.setValue("lesson/step", self.index)
        try:
            lesson_steps.setup(self.session, self.lesson, st)
        except Exception as e:
            self.ctx.report_error(e)
        if st.tab:
            self.hooks.show_tab(st.tab)
        self.hooks.set_detail(st.detail)
        QTimer.singleShot(0, lambda: self.highlight.show(
            [w for w in (self.hooks.targets(h) for h in st.highlight) if w is not None]))
        self.refresh()
        self._measure(entry=True)

    def next(self) -> None:
        if self.lesson is not None and self.index < len(self.lesson.steps) - 1:
            self.go(self.index + 1)

    def back(self) -> None:
        if self.lesson is not None and self.index > 0:
            self.go(self.index - 1)

    def leave(self) -> None:
        """Close the bar; the place is kept in the settings for Lessons ▸ Resume."""
        self.highlight.clear()
        self._auto.stop()
        self.lesson = None
        self.hide()
        self.visibility_changed()

    # ------------------------------------------------------------------ drawing
    def _changed(self, *_) -> None:
        if self.lesson is not None:
            self._redraw.start()

    def rendered(self):
        return lesson_steps.render(self.session, self.step)

    def refresh(self) -> None:
        st = self.step
        if st is None or not self.session.loaded_ok:
            return
        n = len(self.lesson.steps)
        self.header.setText(f"<b>{html.escape(self.lesson.title)}</b> — step {self.index + 1} of {n}: "
                            f"<b>{html.escape(st.title)}</b>")
        try:
            r = self.rendered()
        except Exception as e:   # a value that cannot be read for this model: the text says so, no dialog
            self.text.setText(html.escape(f"{st.text}  ({e})"))
            return
        out = []
        for p in r.parts:
            if isinstance(p, str):
                out.append(html.escape(p))
            elif p[1] is None:
                out.append("<span style='color:#8a8f98'>…</span>")
            else:
                out.append(f"<b>{html.escape(p[1])}</b>")
        busy = " <span style='color:#8a8f98'>(measuring…)</span>" if r.pending and self.ctx.runner.busy else ""
        self.text.setText("".join(out) + busy)
        self.back_btn.setEnabled(self.index > 0)
        self.next_btn.setEnabled(self.index < n - 1)
        if r.pending and not self.ctx.runner.busy:
            self._auto.start()

    # ------------------------------------------------------------------ measuring what the step shows
    def _measure(self, entry: bool) -> None:
        st = self.step
        if st is None or not self.session.loaded_ok or self.ctx.runner.busy:
            self._entry_due = self._entry_due or entry     # the step opened behind a job: measure all when idle
            return
        entry, self._entry_due = entry or self._entry_due, False
        missing = lesson_steps.missing_measures(self.session, st)
        if not entry:   # after an edit only the quick ones come back by themselves
            missing = [k for k in missing if k in ("accuracy", "latency")]
        state = (self.session.base_id, repr(sorted(self.session.plan.active().items())))
        missing = [k for k in missing if entry or (k, state) not in self._tried]
        self._tried = {t for t in self._tried if t[1] == state} | {(k, state) for k in missing}
        for kind in missing:
            if kind == "sweep":           # these change the state: what they make stale is measured after them
                self._sweep()
                return
            if kind == "owl":
                self._allocate(st)
                return
            if kind == "accuracy":
                if not lesson_steps.use_measured(self.session):    # the same weights and plan evaluated before
                    self.hooks.evaluate()
            elif kind == "blocks":
                self._blocks()
            elif kind == "latency":
                self._latency(st.latency_batch or int(self.ctx.settings.value("latency/batch", 1)))
            elif kind == "scan":
                self.hooks.scan()
            elif kind == "compression":
                self.hooks.compress()
            elif kind == "speed":
                self._speed(st.latency_batch or 1)

    def _sweep(self) -> None:
        """SparseGPT's sweep of the step's plan (the slider only previewed its mask); the session adopts its masks
        and updated weights, as Apply does (``actions/reconstruct_action.py``)."""
        from explorer.core.prune.sparsegpt import one_shot

        s = self.session
        snap = s.snapshot()
        plan = snap.plan
        self.ctx.runner.run("SparseGPT sweep", lambda p, c: one_shot(snap, plan, progress=p, cancel=c),
                            on_done=lambda r: s.results.adopt_sweep(r, plan))

    def _allocate(self, st) -> None:
        """The step's OWL / alpha allocation (and the uniform plan's perplexity, unless measured): then the plan."""
        s = self.session
        snap = s.snapshot()
        uniform = lesson_steps.step_plan(s, st)
        need = s.measurements.evaluation(snap.base_id, uniform) is None
        self.ctx.runner.run(f"{st.allocation} allocation",
                            lambda p, c: lesson_steps.allocate_step(snap, st, uniform, need, p, c),
                            on_done=lambda r: lesson_steps.record_allocation(s, r[0], uniform, r[1], snap.base_id))

    def _blocks(self) -> None:
        """Block influence of every block and the metric with the weakest one skipped (``analyse.depth``)."""
        from explorer.core.analyse.depth import weakest_block

        s = self.session
        snap = s.snapshot()
        self.ctx.runner.run("Block influence", lambda p, c: weakest_block(snap, progress=p, cancel=c),
                            on_done=lambda r: s.results.record_blocks(r, snap.plan, snap.base_id))

    def _speed(self, batch: int) -> None:
        """Where the sparse kernel starts to win (issue 22): the speed map of the model's largest layer."""
        from explorer.core.analyse.speed import lesson_speed_map

        s = self.session
        key = self.ctx.speed_results.key_of(s)

        def done(r):
            s.measurements.record_speed(r)
            if self.ctx.speed_results.key_of(s) == key:      # the Latency tab's plot and the Break-even column too
                self.ctx.speed_results.put(key, r.batch, r.layers)

        self.ctx.runner.run("Measuring where sparse kernels win", lambda p, c: lesson_speed_map(s, batch, p, c),
                            on_done=done)

    def _latency(self, batch: int) -> None:
        s = self.session
        snap, runs = s.snapshot(), int(self.ctx.settings.value("latency/runs", 30))
        self.ctx.runner.run("Measuring latency", lambda p, c: measure_latency(snap, batch, runs, progress=p, cancel=c),
                            on_done=lambda r: s.results.record_latency(snap.plan, snap.base_id, r))
