"""The main window: assembly of the views and panels, menus, the job status bar, and the plan actions.

Panels get an :class:`AppContext` (session, job runner, settings, status and error reporting), never the
window; they subscribe to the events of the session part they show (``session.editor``, ``session.weight_state``,
``session.results``, ``session.measurements``) themselves. The window redraws the layer table, weight view,
dashboard and bars on plan/weight changes, throttled so a slider drag never queues up.
"""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QMessageBox, QSplitter, QTabWidget, QToolBar, QVBoxLayout, QWidget
from superqt.utils import qthrottled

from explorer.core.jobs import Progress
from explorer.core.session import Session

from ..actions.cluster_actions import ClusterActions
from ..actions.deploy_exports import DeployExports
from ..actions.export_actions import ExportActions
from ..actions.global_edit import GlobalEdit
from ..actions.measure import MeasureActions
from ..actions.model_actions import ModelActions
from ..actions.reconstruct_action import ReconstructOption
from ..actions.source_actions import SourceActions
from ..classroom.classroom import Classroom
from ..panels.dashboard import Dashboard, totals_text
from ..panels.global_panel import GlobalPanel
from ..panels.layer_table import LayerTable
from ..panels.weight_view import WeightView
from . import gc_guard, startup
from . import help as help_dialogs
from .context import AppContext
from .device_box import DeviceBox
from .dialogs import error_text, show_error
from .job_bar import JobBar
from .jobs import JobRunner

SYNC_BUILD_LIMIT = 2_000_000   # rankings of layers up to this many weights are built on the GUI thread (< ~50 ms)
BUILD_BUDGET_S = 0.008         # rankings built in one event-loop turn before the rest wait for the next turns
REDRAW_MS = 15


class MainWindow(QMainWindow):
    def __init__(self, session: Session | None = None, settings: QSettings | None = None, deferred: bool = False):
        """``deferred``: show the first frame before the plots, panels, first ranking and channel groups
        (``startup.py``); it fills itself in after its first paint (or on :meth:`finish_start`)."""
        super().__init__()
        self.started = not deferred
        self.session = session or Session()
        self.settings = settings or QSettings("PruningExplorer", "pruning-explorer")
        self.runner = JobRunner(self)
        self.runner.error.connect(self.show_error)
        self.job_bar = JobBar(self.statusBar(), self.runner)
        self.last_error: tuple[str, str] | None = None
        self._closing = False
        self._indexing = False
        self.ask_before_closing = True     # False: close without asking about a running job (CLI errors, tests)
        self.ctx = AppContext(session=self.session, runner=self.runner, settings=self.settings, status=self.status,
                              report_error=self.report_error, show_error=self.show_error,
                              selected_layers=lambda: self.table.selected_layers(),
                              is_closing=lambda: self._closing, action_parent=self)
        self.setWindowTitle("Pruning Explorer")
        self.setAcceptDrops(True)
        self.resize(1440, 900)
        self._build_views()
        self._build_menus()
        self._build_panels()

        self._redraw_soon = qthrottled(self._redraw, REDRAW_MS, leading=False, parent=self)
        self._changed_rows: set[str] | None = set()
        s = self.session
        s.loaded.connect(self._on_loaded)
        s.selection_changed.connect(self._on_selection)
        s.editor.changed.connect(self._on_plan_changed)          # rows, weight view, dashboard (throttled)
        s.editor.undo_changed.connect(self._update_actions)      # undo/redo, apply, the 'modified' marker
        s.editor.saved_changed.connect(self._update_actions)
        s.weight_state.changed.connect(self._on_weights_changed)
        s.measurements.changed.connect(self._on_measured)       # the measurement cards
        if s.loaded_ok:
            self._on_loaded()
        self._update_actions()

    # ------------------------------------------------------------------ UI construction
    def _build_views(self) -> None:
        self.table = LayerTable(self.session, self.report_error, status=self.status, speed=self.ctx.speed_results,
                                stats=self.ctx.layer_stats)
        self.totals_label = QLabel(" ")
        self.totals_label.setObjectName("totalsLabel")
        self.totals_label.setWordWrap(True)
        self.global_panel = GlobalPanel(lazy=not self.started)
        self.global_edit = GlobalEdit(self.ctx)     # global scope on big models runs as a job
        self.global_panel.requested.connect(self.global_edit.request)
        self.weight_view = WeightView(lazy=not self.started)
        self.dashboard = Dashboard()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.weight_view, "Weights")
        self.tabs.setMinimumWidth(360)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(4, 4, 4, 4)
        ll.addWidget(self.table, 3)
        ll.addWidget(self.totals_label)
        ll.addWidget(self.global_panel, 2)
        self.main_split = QSplitter(Qt.Horizontal)
        self.main_split.addWidget(left)
        self.main_split.addWidget(self.tabs)
        self.main_split.setStretchFactor(0, 3)
        self.main_split.setStretchFactor(1, 2)
        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(2, 2, 2, 2)
        cl.addWidget(self.dashboard)
        cl.addWidget(self.main_split, 1)
        self.setCentralWidget(central)

    def _build_menus(self) -> None:
        act = self.ctx.action
        mb = self.menuBar()
        fm = self.file_menu = mb.addMenu("&File")
        self.act_open = act("&Open model…", lambda: self.models.open_dialog(), QKeySequence.Open,
                            "Open a checkpoint: state_dict, TorchScript, or sparse archive", fm)
        recent = fm.addMenu("Open &recent")
        self.act_open_recipe = act("Open &recipe…", self.open_recipe_dialog, "Ctrl+Shift+O",
                                   "Apply a recipe.json (per-layer sparsity/granularity/criterion)", fm)
        fm.addSeparator()
        self.export_menu = fm.addMenu("&Export")
        fm.addSeparator()
        act("&Quit", self.close, QKeySequence.Quit, "", fm)
        models_menu = mb.addMenu("&Built-in models")
        self.models = ModelActions(self.ctx, self, recent, models_menu)
        self.sources = SourceActions(self.ctx, self, models_menu, self.models.load_model)
        self.dataset_combo = self.models.dataset_combo

        em = self.edit_menu = mb.addMenu("&Edit")
        self.act_undo = act("&Undo", self.session.undo, QKeySequence.Undo, "Undo the last plan change", em)
        self.act_redo = act("&Redo", self.session.redo, QKeySequence.Redo, "Redo", em)
        em.addSeparator()
        self.act_apply = act("&Apply plan", self.apply_plan, "Ctrl+Return",
                             "Write the plan's masks into the model (exact zeros; originals kept)", em)
        self.act_reset = act("Reset to &dense", self.reset, "Ctrl+Shift+R",
                             "Back to the loaded dense weights and an empty plan (undoable)", em)
        self.run_menu = mb.addMenu("&Run")
        self.view_menu = mb.addMenu("&View")
        hm = mb.addMenu("&Help")
        act("&Concepts", lambda: help_dialogs.show_concepts(self), QKeySequence.HelpContents,
            "Pruning terms in one sentence each", hm)
        act("&Keyboard shortcuts", lambda: help_dialogs.show_shortcuts(self, self.menuBar().findChildren(type(hm))),
            None, "", hm)
        hm.addSeparator()
        act("&About", lambda: help_dialogs.show_about(self), None, "", hm)

        tb = QToolBar("Main")
        tb.setMovable(False)
        tb.setObjectName("mainToolbar")
        self.addToolBar(tb)
        tb.addAction(self.act_open)
        self.model_label = QLabel("no model")
        self.model_label.setToolTip("The loaded model spec")
        self.model_label.setObjectName("modelLabel")
        tb.addWidget(QLabel(" "))
        tb.addWidget(self.model_label)
        self.dataset_label = QLabel("   Dataset: ")
        tb.addWidget(self.dataset_label)
        tb.addWidget(self.dataset_combo)
        for a, short in ((self.act_open, "Open…"), (self.act_apply, "Apply"), (self.act_reset, "Reset")):
            a.setIconText(short)       # compact toolbar labels; menus keep the full text
        tb.addSeparator()
        for a in (self.act_apply, self.act_undo, self.act_redo, self.act_reset):
            tb.addAction(a)
        self.toolbar = tb
        self.pending_label = QLabel("")
        self.pending_label.setObjectName("pendingLabel")
        self.pending_label.setToolTip(
            "● plan not applied: the table's plan differs from the weights the model holds (Apply, Ctrl+Enter, "
            "writes it; fine-tuning with iterative/AGP starts from what is applied).\n"
            "modified: the plan or the kept weights (after fine-tuning) changed since the model was loaded or "
            "last exported.")
        tb.addSeparator()
        tb.addWidget(self.pending_label)

    def _build_panels(self) -> None:
        ctx = self.ctx
        self.measure = MeasureActions(ctx, self.run_menu, self.toolbar)
        self.reconstruct = ReconstructOption(ctx, self.edit_menu, self.toolbar, self.act_undo, self.measure.evaluate)
        self.exports = ExportActions(ctx, self.export_menu, self)
        self.deploy_exports = DeployExports(ctx, self.export_menu, self)
        self.device_box = DeviceBox(ctx, self.statusBar())
        self.cluster = ClusterActions(ctx, self, self._finetune_config)
        self.export_menu.addSeparator()
        self.export_menu.addAction(self.cluster.act_job)
        self.file_menu.insertAction(self.export_menu.menuAction(), self.cluster.act_import)
        self.tabs.setTabToolTip(0, "The selected layer's weights and mask")
        startup.add_tabs(self, placeholders=not self.started)   # the panels (deferred: after the first frame)
        ctx.action("&Fine-tune", lambda: self._start_on_tab("finetune_panel", "start"),
                   QKeySequence("F7"), "Fine-tune the pruned model with masks enforced", self.run_menu)
        ctx.action("&Sensitivity scan", lambda: self._start_on_tab("sensitivity_panel", "start_scan"),
                   QKeySequence("F8"), "Prune each layer alone at several sparsities and measure accuracy",
                   self.run_menu)
        ctx.action("&Compress (Deep Compression)", lambda: self._start_on_tab("compress_panel", "start"),
                   QKeySequence("F9"), "Share weights by k-means, train the shared values and Huffman-code the "
                   "applied model", self.run_menu)
        ctx.action("&Compare criteria", lambda: self._start_on_tab("compare_panel", "start"),
                   QKeySequence("Shift+F9"), "Accuracy vs sparsity of several criteria on the same plan", self.run_menu)
        m = self.view_menu
        for i in range(self.tabs.count()):
            ctx.action(self.tabs.tabText(i), lambda _=False, i=i: self.tabs.setCurrentIndex(i),
                       QKeySequence(f"Ctrl+{i + 1}"), self.tabs.tabToolTip(i), m)
        m.addSeparator()
        self.classroom = Classroom(self)     # lessons, presentation mode, pruning by hand
        self.act_presentation = self.classroom.act_presentation
        wv = self.weight_view
        for box, text, key in ((wv.abs_box, "Histogram of |w|", "Ctrl+Shift+A"),
                               (wv.log_box, "Log counts", "Ctrl+Shift+L"),
                               (wv.detail_btn, "Detail zoom", "Ctrl+Shift+D")):
            a = ctx.action(text, lambda checked, b=box: b.setChecked(checked), QKeySequence(key), box.toolTip(), m)
            a.setCheckable(True)
            box.toggled.connect(a.setChecked)

    def _start_on_tab(self, attr: str, start: str) -> None:
        self.finish_start()
        panel = getattr(self, attr)
        self.tabs.setCurrentWidget(panel)
        getattr(panel, start)()

    def _finetune_config(self):
        self.finish_start()          # the Fine-tune panel holds the settings (built after the first frame)
        return self.finetune_panel.config()

    def finish_start(self) -> None:
        """Fill a deferred window in now (plots, panels, first ranking; channel groups in the background)."""
        if not self.started:
            self.started = True
            startup.finish(self)

    def set_panel(self, attr: str, panel: QWidget) -> None:
        """Where startup.py's panels live: ``finetune_panel``, ``history_panel``, ... (see ``startup.TABS``)."""
        assert attr in {a for a, _, _ in startup.TABS}, attr
        setattr(self, attr, panel)

    def close_now(self) -> None:
        """Close without asking about a running job (it is cancelled)."""
        self.ask_before_closing = False
        self.close()

    # ------------------------------------------------------------------ errors & status
    def report_error(self, e: Exception, details: str = "") -> None:
        title, msg = error_text(e)
        self.show_error(title, msg, details)

    def show_error(self, title: str, message: str, details: str = "") -> None:
        self.last_error = (title, message)
        self.status(f"{title}: {message}", 8000)
        if not self._closing:
            show_error(self, title, message, details)

    def status(self, text: str, ms: int = 4000) -> None:
        self.job_bar.show(text, ms)

    # ------------------------------------------------------------------ public entry points (tests, scripts, CLI)
    def load_model(self, spec: str, dataset: str | None = None, remember: bool = False, **kw):
        return self.models.load_model(spec, dataset, remember, **kw)

    def open_model_file(self, path: str, ask: bool = True) -> None:
        self.models.open_file(path, ask)

    def set_dataset(self, spec: str) -> None:
        self.models.set_dataset(spec)

    def dragEnterEvent(self, e) -> None:
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:
        for url in e.mimeData().urls():
            path = url.toLocalFile()
            if path.endswith(".json"):
                self.open_recipe(path)
            elif path:
                self.open_model_file(path)
            break

    # ------------------------------------------------------------------ session events
    def _on_loaded(self) -> None:
        s = self.session
        r = s.require()
        gc_guard.collect_frozen()      # a model opened after the start: the previous one's cycles go (gc_guard)
        self.model_label.setText(f"<b>{r.model.name}</b>")
        self.model_label.setToolTip(f"{r.model.spec}\n" + "\n".join(r.notes))
        self.models.sync_dataset_combo()
        self.table.rebuild()
        self.redraw_all(now=True)
        for n in r.notes:
            if n.startswith("non-finite"):
                self.status(f"warning: {n}", 10000)
        self.measure.evaluate_dense_on_open()   # the baseline, at once, when that takes about a second or less

    def _on_plan_changed(self, names) -> None:
        if names is None or self._changed_rows is None:
            self._changed_rows = None
        else:
            self._changed_rows |= set(names)
        self._redraw_soon()

    def _on_selection(self, name: str) -> None:
        self.table.select_layer(name)
        self._show_selected()

    def _on_weights_changed(self) -> None:
        self.redraw_all()
        self._on_measured()      # stale markers of measured results follow the weights

    def _on_measured(self) -> None:
        if self.session.loaded_ok:
            self.dashboard.show_measurements(self.session)

    def redraw_all(self, now: bool = False) -> None:
        """Redraw every row, not only the edited ones: at once, or with the next throttled redraw."""
        self._changed_rows = None
        self._redraw(now=True) if now else self._redraw_soon()

    def _redraw(self, now: bool = False) -> None:
        """Rows, weight view, dashboard, bars. Builds missing rankings first (in a worker if big). Asks the
        session once per layer whether its ranking is cached, and hands the answer (``pending``) along.

        Unless ``now``, a redraw of everything is spread over event-loop turns (issue 24): the missing rankings
        a few per turn (``BUILD_BUDGET_S``), then the rows and cards, then the weight view."""
        s = self.session
        if not s.loaded_ok:
            return
        if not self.started:    # first frame: no ranking yet (see startup.py)
            self.table.refresh(None)
            self.weight_view.show_message(f"{s.selected or ''}: {startup.MEASURING}")
            self._update_dashboard()
            self._update_actions()
            return
        sel = s.selected if s.selected and s.plan.get(s.selected).is_dense else None   # (active: asked anyway)
        missing = s.masks.uncached(s.plan, [sel] if sel else None)   # the redraw's one cache check
        big = [n for n in missing if s.layer(n).params > SYNC_BUILD_LIMIT or s.calibration.needs(s.plan.get(n))]
        if big:
            self._index_in_background(big)
        pending = set(big)      # still uncached after this: the big ones (a worker builds them) and failures
        t0 = time.perf_counter()
        for i, n in enumerate(n for n in missing if n not in big):
            if i and not now and time.perf_counter() - t0 > BUILD_BUDGET_S:
                # new weights (a job's end) make every ranking stale: they are built a few per event-loop turn,
                # and the views keep their picture until all are there (no GUI-thread stall, issue 24)
                QTimer.singleShot(0, self, self._redraw)
                return
            try:
                s.layer_mask(n, s.plan.get(n))
            except Exception as e:  # e.g. taylor without gradients
                pending.add(n)
                self.report_error(e)
        whole = self._changed_rows is None
        rows = None if whole else sorted(self._changed_rows)
        self._changed_rows = set()
        self.table.refresh(rows, pending)
        self._update_dashboard(pending)
        self._update_actions()
        if whole and not now:   # every row redrawn (new weights): the weight view in the next turn, its own paint
            plan = s.plan       # (a newer plan brings its own redraw, which shows the layer)
            QTimer.singleShot(0, self, lambda: self.session.plan is plan and self._show_selected(pending))
        else:
            self._show_selected(pending)

    def _index_in_background(self, names: list[str]) -> None:
        if self._indexing:
            return
        self._indexing = True
        plan, loaded = self.session.plan, self.session.result

        def finish(_=None):
            self._indexing = False
            self.redraw_all()

        def stop(e=None):
            self._indexing = False
            if e is not None:
                self.report_error(e)

        self.runner.run("Indexing weights", lambda p, c: self.session.build_views(names, plan, p, c, loaded),
                        on_done=finish, on_cancel=stop, on_error=stop, quiet=True)

    def _show_selected(self, pending: set[str] | None = None) -> None:
        """``pending``: the layers known to be uncached (None: ask the session)."""
        s = self.session
        name = s.selected
        if not s.loaded_ok or not name:
            self.weight_view.show_message("No layer selected")
            return
        lp = s.plan.get(name)
        if name in pending if pending is not None else s.needs_build(name, lp):
            self.weight_view.show_message(f"Indexing {name} ({s.layer(name).params:,} weights)…")
            return
        try:
            view = s.layer_mask(name, lp)
        except Exception as e:
            self.weight_view.show_message(str(e))
            return
        if self.weight_view.view is view:
            self.weight_view.set_sparsity(lp.sparsity)
        else:
            self.weight_view.set_view(view, lp.sparsity)

    def _update_dashboard(self, pending: set[str] | None = None) -> None:
        s = self.session
        if (s.masks.uncached(s.plan) if pending is None else pending & s.plan.active().keys()):
            self.dashboard.show_totals(None)
            self.totals_label.setText("indexing weights…")
            return
        try:
            t = s.totals()
        except Exception as e:
            self.totals_label.setText(str(e))
            return
        grans = {lp.granularity for lp in s.plan.active().values()}
        if grans == {"channel"}:
            note = "real once compacted"
        elif "channel" in grans:
            note = "channel part real once compacted, the rest needs sparse hardware"
        else:
            note = "saving needs sparse hardware" if grans else ""
        self.dashboard.show_totals(t, s.pending, note)
        self.totals_label.setText(totals_text(t, len(s.layers)))
        names = s.layer_names
        self.global_panel.show_plan(names, [s.plan.get(n).sparsity for n in names],
                                    [s.plan.get(n) != s.applied_plan.get(n) for n in names], s.selected)
        self.dashboard.show_measurements(s)   # only the cards' stale markers follow every plan edit

    def _update_actions(self) -> None:
        s = self.session
        ok = s.loaded_ok
        self.act_undo.setEnabled(ok and s.editor.can_undo)
        self.act_redo.setEnabled(ok and s.editor.can_redo)
        self.act_apply.setEnabled(ok and s.pending)
        self.act_reset.setEnabled(ok)
        if ok:
            flags = []
            if s.pending:
                flags.append("● plan not applied")
            if s.modified:
                flags.append("modified")
            self.pending_label.setText("   ".join(flags))
            self.setWindowTitle(f"Pruning Explorer — {s.model_name}" + (" *" if s.modified else ""))

    # ------------------------------------------------------------------ plan actions
    def apply_plan(self) -> None:
        s = self.session
        if not s.loaded_ok:
            return
        if self.reconstruct.checked or self.reconstruct.sweeps(s.plan):   # sparsegpt: its sweep, in a job
            self.reconstruct.run()
            return
        if sum(s.layer(n).params for n in s.plan.active()) <= SYNC_BUILD_LIMIT * 2:
            try:
                s.apply()
            except Exception as e:
                self.report_error(e)
            return
        plan = s.plan

        def work(progress, cancel):
            progress(Progress(None, "building masks"))
            return s.masked_state(plan)

        self.runner.run("Applying plan", work, on_done=lambda state: s.apply_state(plan, state))

    def reset(self) -> None:
        try:
            self.session.reset()
        except Exception as e:
            self.report_error(e)

    def open_recipe_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog
        path, _ = QFileDialog.getOpenFileName(self, "Open recipe", "", "Recipes (*.json);;All files (*)")
        if path:
            self.open_recipe(path)

    def open_recipe(self, path: str) -> None:
        from explorer.core.prune.recipe import read_recipe
        try:
            plan, d = read_recipe(path)
            cal = d.get("calibration")
            if isinstance(cal, dict) and "samples" in cal:
                self.session.set_calibration_samples(cal["samples"])   # data criteria replay on the same samples
            self.session.set_plan(plan)
            self.reconstruct.box.setChecked(bool(d.get("reconstruct")))
            if d.get("model") and d["model"] != self.session.model_spec:
                self.status(f"recipe was written for {d['model']}; applied to {self.session.model_name}", 8000)
            else:
                self.status(f"recipe {Path(path).name}: {len(plan.active())} layer(s) planned", 5000)
        except Exception as e:
            self.report_error(e)

    # ------------------------------------------------------------------ showing and closing
    def paintEvent(self, e) -> None:
        super().paintEvent(e)
        if not self.started and not getattr(self, "_start_queued", False):
            self._start_queued = True
            QTimer.singleShot(0, self.finish_start)   # after this first paint pass: fill the window in

    def showEvent(self, e) -> None:
        super().showEvent(e)
        if not getattr(self, "_sized", False):
            self._sized = True
            QTimer.singleShot(0, self.split_views)

    def split_views(self) -> None:
        """Share the width between the layer table and the views (as when the window first shows)."""
        w = max(self.main_split.width(), 800)
        left = max(int(w * 0.58), min(self.table.preferred_width(), int(w * 0.7)))
        left = min(left, w - 540)      # the views keep room for their plots (the table scrolls sideways instead)
        self.main_split.setSizes([left, w - left])

    def closeEvent(self, e) -> None:
        if self.runner.busy:
            job = self.runner.current
            ask = QMessageBox.question(self, "A job is running",
                                       f"'{job.title}' is still running. Stop it and quit?",
                                       QMessageBox.Yes | QMessageBox.No, QMessageBox.No) \
                if self.ask_before_closing else QMessageBox.Yes
            if ask != QMessageBox.Yes:
                e.ignore()
                return
        self._closing = True
        # the running job is cancelled and waited for; nothing starts after this (a lesson's timer firing while
        # the window closes would start an Evaluate whose signals outlive the window)
        if not self.runner.shut_down(20000):
            self.status("the job did not stop in time", 0)
        e.accept()
