"""The main window: layer table, weight view, dashboard, menus, jobs."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QComboBox, QLabel, QMainWindow, QMessageBox, QProgressBar, QPushButton,
                               QSplitter, QTabWidget, QToolBar, QVBoxLayout, QWidget)

from explorer import __version__
from explorer.core import session as session_mod
from explorer.core.errors import ExplorerError
from explorer.core.jobs import Progress
from explorer.core.model.metrics import format_bytes, format_count
from explorer.core.prune.recipe import Plan
from explorer.core.model.zoo import BUILTINS
from .dashboard import Dashboard
from .dialogs import OpenModelDialog, ask_folder, ask_model_file, error_text, show_error
from .global_panel import GlobalPanel
from .jobs import Job, JobRunner
from .layer_table import LayerTable
from .weight_view import WeightView

SYNC_BUILD_LIMIT = 2_000_000   # rankings of layers up to this many weights are built on the GUI thread (< ~50 ms)
MAX_RECENT = 8
DATASET_CHOICES = ["digits", "synthetic", "mnist:…", "fashion-mnist:…", "cifar10:…", "cifar100:…", "imagefolder:…"]
POPULAR_TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "vgg16", "vgg11_bn",
                       "efficientnet_b0", "densenet121", "squeezenet1_1", "alexnet", "vit_b_16"]


class MainWindow(QMainWindow):
    def __init__(self, session: session_mod.Session | None = None, settings: QSettings | None = None):
        super().__init__()
        self.session = session or session_mod.Session()
        self.settings = settings or QSettings("PruningExplorer", "pruning-explorer")
        self.runner = JobRunner(self)
        self.runner.error.connect(self._job_error)
        self.runner.job_started.connect(self._job_started)
        self.runner.job_progress.connect(self._job_progress)
        self.runner.job_finished.connect(self._job_finished)
        self.last_error: tuple[str, str] | None = None
        self._closing = False
        self._indexing = False
        self.setWindowTitle("Pruning Explorer")
        self.setAcceptDrops(True)
        self.resize(1440, 900)

        self.table = LayerTable(self.session, self.report_error)
        self.totals_label = QLabel(" ")
        self.totals_label.setObjectName("totalsLabel")
        self.totals_label.setWordWrap(True)
        self.global_panel = GlobalPanel()
        self.global_panel.requested.connect(self._set_many)
        self.weight_view = WeightView()
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
        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(self.tabs)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.main_split = split
        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(2, 2, 2, 2)
        cl.addWidget(self.dashboard)
        cl.addWidget(split, 1)
        self.setCentralWidget(central)

        self._build_actions()
        self._build_status()

        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(15)
        self._redraw_timer.timeout.connect(self._redraw)
        self._changed_rows: set[str] | None = set()

        s = self.session
        s.loaded.connect(self._on_loaded)
        s.plan_changed.connect(self._on_plan_changed)
        s.selection_changed.connect(self._on_selection)
        s.history_changed.connect(self._update_actions)
        s.weights_changed.connect(self._on_weights_changed)
        s.metrics_changed.connect(self._update_results)
        self.extensions: list = []
        self._install_extensions()
        if s.loaded_ok:
            self._on_loaded()
        self._update_actions()

    # ------------------------------------------------------------------ UI construction
    def _act(self, text: str, slot, shortcut=None, tip: str = "", menu=None) -> QAction:
        a = QAction(text, self)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
        if tip:
            a.setToolTip(tip)
            a.setStatusTip(tip)
        a.triggered.connect(slot)
        if menu is not None:
            menu.addAction(a)
        return a

    def _build_actions(self) -> None:
        mb = self.menuBar()
        fm = mb.addMenu("&File")
        self.act_open = self._act("&Open model…", self.open_model_dialog, QKeySequence.Open,
                                  "Open a checkpoint: state_dict, TorchScript, or sparse archive", fm)
        self.recent_menu = fm.addMenu("Open &recent")
        self.act_open_recipe = self._act("Open &recipe…", self.open_recipe_dialog, "Ctrl+Shift+O",
                                         "Apply a recipe.json (per-layer sparsity/granularity/criterion)", fm)
        fm.addSeparator()
        self.export_menu = fm.addMenu("&Export")
        fm.addSeparator()
        self._act("&Quit", self.close, QKeySequence.Quit, "", fm)

        mm = mb.addMenu("&Built-in models")
        for b in BUILTINS.values():
            self._act(b.name, lambda _=False, n=b.name: self.load_model(n), None, b.description, mm)
        tv = mm.addMenu("torchvision (random weights)")
        for a in POPULAR_TORCHVISION:
            self._act(a, lambda _=False, n=a: self.load_model(f"torchvision:{n}"), None,
                      f"torchvision {a} with random weights (synthetic inputs)", tv)
        tv.addSeparator()
        self._act("Other torchvision architecture…", self._ask_torchvision, None, "", tv)

        em = mb.addMenu("&Edit")
        self.act_undo = self._act("&Undo", self.session.undo, QKeySequence.Undo, "Undo the last plan change", em)
        self.act_redo = self._act("&Redo", self.session.redo, QKeySequence.Redo, "Redo", em)
        em.addSeparator()
        self.act_apply = self._act("&Apply plan", self.apply_plan, "Ctrl+Return",
                                   "Write the plan's masks into the model (exact zeros; originals kept)", em)
        self.act_reset = self._act("Reset to &dense", self.reset, "Ctrl+Shift+R",
                                   "Back to the loaded dense weights and an empty plan (undoable)", em)
        self.run_menu = mb.addMenu("&Run")
        self.view_menu = mb.addMenu("&View")
        hm = mb.addMenu("&Help")
        self._act("&Concepts", self._concepts, QKeySequence.HelpContents, "Pruning terms in one sentence each", hm)
        self._act("&Keyboard shortcuts", self._shortcuts, None, "", hm)
        hm.addSeparator()
        self._act("&About", self._about, None, "", hm)

        tb = QToolBar("Main")
        tb.setMovable(False)
        tb.setObjectName("mainToolbar")
        self.addToolBar(tb)
        tb.addAction(self.act_open)
        self.model_label = QLabel("no model")
        self.model_label.setToolTip("The loaded model spec")
        tb.addWidget(QLabel(" Model: "))
        tb.addWidget(self.model_label)
        tb.addWidget(QLabel("   Dataset: "))
        self.dataset_combo = QComboBox()
        self.dataset_combo.addItems(DATASET_CHOICES)
        self.dataset_combo.setToolTip("Dataset for accuracy, fine-tuning and scans; '…' entries ask for a folder")
        self.dataset_combo.activated.connect(self._dataset_chosen)
        tb.addWidget(self.dataset_combo)
        for act, short in ((self.act_open, "Open…"), (self.act_apply, "Apply"), (self.act_reset, "Reset")):
            act.setIconText(short)       # compact toolbar labels; menus keep the full text
        tb.addSeparator()
        tb.addAction(self.act_apply)
        tb.addAction(self.act_undo)
        tb.addAction(self.act_redo)
        tb.addAction(self.act_reset)
        self.toolbar = tb
        self.pending_label = QLabel("")
        self.pending_label.setObjectName("pendingLabel")
        tb.addSeparator()
        tb.addWidget(self.pending_label)
        self._refresh_recent()

    def _build_status(self) -> None:
        sb = self.statusBar()
        self._status_timer = QTimer(self)
        self._status_timer.setSingleShot(True)
        self._status_timer.timeout.connect(lambda: self.status_text.setText(""))
        self.status_text = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(260)
        self.progress.setTextVisible(True)
        self.progress.hide()
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop the running job (Esc); the session stays as it was before it")
        self.cancel_btn.setShortcut(QKeySequence(Qt.Key_Escape))
        self.cancel_btn.clicked.connect(self.runner.cancel)
        self.cancel_btn.hide()
        sb.addWidget(self.status_text, 1)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_btn)

    def _install_extensions(self) -> None:
        """Panels added by later features (jobs, fine-tuning, sensitivity) register here."""
        try:
            from .panels import install_panels
        except ImportError:
            return
        self.extensions = install_panels(self)

    # ------------------------------------------------------------------ errors & status
    def report_error(self, e: Exception, details: str = "") -> None:
        title, msg = error_text(e)
        self.show_error(title, msg, details)

    def show_error(self, title: str, message: str, details: str = "") -> None:
        self.last_error = (title, message)
        self.status(f"{title}: {message}", 8000)
        if not self._closing:
            show_error(self, title, message, details)

    def require_labels(self, what: str) -> bool:
        """True when the dataset has labels; otherwise say why ``what`` cannot run."""
        ds = self.session.dataset
        if ds.has_labels:
            return True
        self.show_error("No labels", f"{what} needs labels; the dataset {ds.spec} has none. Choose a labelled "
                                     "dataset (digits, mnist:…, cifar10:…, imagefolder:…).")
        return False

    def _job_error(self, title: str, message: str, details: str) -> None:
        self.show_error(title, message, details)

    def status(self, text: str, ms: int = 4000) -> None:
        self.status_text.setText(text)
        self._status_timer.stop()
        if ms:
            self._status_timer.start(ms)

    def _job_started(self, job: Job) -> None:
        self.progress.setRange(0, 0)
        self.progress.setFormat(job.title)
        self.progress.show()
        self.cancel_btn.setVisible(job.cancellable)
        self.status(job.title + "…", 0)

    def _job_progress(self, job: Job, p: Progress) -> None:
        if p.fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(p.fraction * 1000))
        eta = f"  ~{p.eta_s:.0f}s left" if p.eta_s is not None and p.eta_s >= 1 else ""
        self.progress.setFormat(f"{job.title} %p%")
        if p.message:
            self.status(p.message + eta, 0)

    def _job_finished(self, job: Job, status: str) -> None:
        if not self.runner.busy and not self.runner.queue:
            self.progress.hide()
            self.cancel_btn.hide()
        if status == "cancelled":
            self.status(f"{job.title}: cancelled", 5000)
        elif status == "done":
            self.status(f"{job.title}: done", 3000)
        else:
            self.status(f"{job.title}: failed", 5000)

    # ------------------------------------------------------------------ loading
    def load_model(self, spec: str, dataset: str | None = None, remember: bool = False, **kw) -> Job:
        """Load in the background; on error the current model stays."""
        def work(progress, cancel):
            progress(Progress(None, f"loading {spec}"))
            return session_mod.resolve(spec, dataset, **kw)

        def done(result):
            self.session.apply_load(result)
            if remember:
                self._remember(spec, kw)
            self.status(f"loaded {result.model.name} ({len(result.profile.layers)} prunable layers)", 5000)

        return self.runner.run(f"Opening {Path(spec).name if '/' in spec else spec}", work, on_done=done,
                               cancellable=False)

    def open_model_dialog(self) -> None:
        path = ask_model_file(self)
        if path:
            self.open_model_file(path)

    def open_model_file(self, path: str, ask: bool = True) -> None:
        kw = {}
        if ask:
            from explorer.core.model.zoo import torchvision_archs
            dlg = OpenModelDialog(path, list(BUILTINS) + [f"torchvision:{a}" for a in torchvision_archs()], self)
            if dlg.exec() != dlg.DialogCode.Accepted:
                return
            v = dlg.values()
            try:
                kw = {"arch": v["arch"], "trust": v["trust"],
                      "input_shape": session_mod.parse_input_shape(v["input_shape"])}
            except ExplorerError as e:
                self.report_error(e)
                return
        self.load_model(path, remember=True, **kw)

    def _ask_torchvision(self) -> None:
        from PySide6.QtWidgets import QInputDialog

        from explorer.core.model.zoo import torchvision_archs
        arch, ok = QInputDialog.getItem(self, "torchvision architecture", "Architecture (random weights):",
                                        torchvision_archs(), 0, False)
        if ok and arch:
            self.load_model(f"torchvision:{arch}")

    def _dataset_chosen(self, index: int) -> None:
        choice = self.dataset_combo.itemText(index)
        if choice.endswith(":…"):
            kind = choice[:-2]
            folder = ask_folder(self, f"Folder of {kind}")
            if not folder:
                self._sync_dataset_combo()
                return
            choice = f"{kind}:{folder}"
        self.set_dataset(choice)

    def set_dataset(self, spec: str) -> None:
        if not self.session.loaded_ok:
            return
        r = self.session.require()

        def work(progress, cancel):
            progress(Progress(None, f"opening dataset {spec}"))
            return session_mod.resolve_dataset_for(r, spec)

        def done(new):
            self.session.apply_dataset(new)
            self.status(f"dataset {new.dataset.spec}: {new.dataset.size('test')} test samples", 5000)

        def failed(e):
            self._sync_dataset_combo()
            self.report_error(e)

        self.runner.run(f"Opening dataset {spec}", work, on_done=done, on_error=failed, cancellable=False)

    def _sync_dataset_combo(self) -> None:
        if not self.session.loaded_ok:
            return
        spec = self.session.dataset.spec
        i = self.dataset_combo.findText(spec)
        if i < 0:
            self.dataset_combo.addItem(spec)
            i = self.dataset_combo.count() - 1
        self.dataset_combo.setCurrentIndex(i)

    # recent files
    def _remember(self, spec: str, kw: dict) -> None:
        items = [x for x in (self.settings.value("recent", []) or []) if x != spec]
        items.insert(0, spec)
        self.settings.setValue("recent", items[:MAX_RECENT])
        if kw.get("arch"):
            self.settings.setValue(f"arch/{spec}", kw["arch"])
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        items = self.settings.value("recent", []) or []
        if isinstance(items, str):
            items = [items]
        for spec in items:
            arch = self.settings.value(f"arch/{spec}", None)
            self._act(spec, lambda _=False, s=spec, a=arch: self.load_model(s, arch=a), None, "", self.recent_menu)
        self.recent_menu.setEnabled(bool(items))

    # drag and drop
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
        self.model_label.setText(f"<b>{r.model.name}</b>")
        self.model_label.setToolTip(f"{r.model.spec}\n" + "\n".join(r.notes))
        self.setWindowTitle(f"Pruning Explorer — {r.model.name}")
        self._sync_dataset_combo()
        self.table.rebuild()
        self._changed_rows = None
        self._show_selected()
        self._redraw()
        self._update_results()
        self._update_actions()
        for n in r.notes:
            if n.startswith("non-finite"):
                self.status(f"warning: {n}", 10000)

    def _on_plan_changed(self, names) -> None:
        if names is None or self._changed_rows is None:
            self._changed_rows = None
        else:
            self._changed_rows |= set(names)
        self._redraw_timer.start()

    def _on_selection(self, name: str) -> None:
        self.table.select_layer(name)
        self._show_selected()

    def _on_weights_changed(self) -> None:
        self._changed_rows = None
        self._redraw_timer.start()
        self._update_results()      # stale markers of measured results follow the weights

    def _redraw(self) -> None:
        """Throttled: rows, weight view, dashboard, bars. Builds missing rankings first (worker if big)."""
        s = self.session
        if not s.loaded_ok:
            return
        missing = s.uncached(extra=[s.selected] if s.selected else None)
        big = [n for n in missing if s.layer(n).params > SYNC_BUILD_LIMIT]
        if big:
            self._index_in_background(big)
        for n in [n for n in missing if n not in big]:
            try:
                s.layer_mask(n, s.plan.get(n))
            except Exception as e:  # e.g. taylor without gradients
                self.report_error(e)
        rows = None if self._changed_rows is None else sorted(self._changed_rows)
        self._changed_rows = set()
        self.table.refresh(rows)
        self._show_selected(redraw_only=True)
        self._update_dashboard()
        self._update_actions()

    def _index_in_background(self, names: list[str]) -> None:
        if self._indexing:
            return
        self._indexing = True
        plan = self.session.plan.copy()

        def work(progress, cancel):
            self.session.build_views(names, plan, progress, cancel)

        def finish(_=None):
            self._indexing = False
            self._changed_rows = None
            self._redraw_timer.start()

        def cancelled():
            self._indexing = False

        def failed(e):
            self._indexing = False
            self.report_error(e)

        self.runner.run("Indexing weights", work, on_done=finish, on_cancel=cancelled, on_error=failed, quiet=True)

    def _show_selected(self, redraw_only: bool = False) -> None:
        s = self.session
        name = s.selected
        if not s.loaded_ok or not name:
            self.weight_view.show_message("No layer selected")
            return
        lp = s.plan.get(name)
        if s.needs_build(name, lp):
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

    def _update_dashboard(self) -> None:
        s = self.session
        if s.uncached():
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
        self.totals_label.setText(
            f"<b>Totals</b>: {len(s.layers)} prunable layers, {t.prunable_params:,} prunable of {t.params:,} params; "
            f"{format_count(t.prunable_nonzero)} nonzero ({t.sparsity:.1%} sparse); MACs {format_count(t.nonzero_macs)}"
            f" / {format_count(t.macs)}; {format_bytes(t.sparse_bytes)} sparse vs {format_bytes(t.dense_bytes)} dense "
            f"= <b>{t.compression_ratio:.2f}×</b>")
        names = s.layer_names
        self.global_panel.show_plan(names, [s.plan.get(n).sparsity for n in names],
                                    [s.plan.get(n) != s.applied_plan.get(n) for n in names], s.selected)
        if getattr(self, "results", None) is not None:
            self.results.update_results()   # only the dashboard cards follow every plan edit (stale marker)

    def _update_results(self) -> None:
        for ext in self.extensions:
            if hasattr(ext, "update_results"):
                ext.update_results()

    def _update_actions(self) -> None:
        s = self.session
        ok = s.loaded_ok
        self.act_undo.setEnabled(ok and s.can_undo)
        self.act_redo.setEnabled(ok and s.can_redo)
        self.act_apply.setEnabled(ok and s.pending)
        self.act_reset.setEnabled(ok)
        if ok:
            flags = []
            if s.pending:
                flags.append("● plan not applied")
            if s.modified:
                flags.append("modified")
            self.pending_label.setText("   ".join(flags))
            title = f"Pruning Explorer — {s.model_name}" + (" *" if s.modified else "")
            self.setWindowTitle(title)

    # ------------------------------------------------------------------ plan actions
    def _set_many(self, mode: str, sparsity: float, granularity: str, criterion: str, scope: str, cap: float) -> None:
        s = self.session
        names = self.table.selected_layers() if mode == "selected" else s.layer_names
        if not names:
            self.status("select some rows in the layer table first", 4000)
            return
        if scope == "global":
            missing = [n for n in names if s.layer(n).params > SYNC_BUILD_LIMIT and
                       not s.engine.is_cached(n, criterion, granularity)]
            if missing:
                from explorer.core.prune.recipe import LayerPlan
                tmp = Plan({n: LayerPlan(0.5, granularity, criterion) for n in missing})

                def work(progress, cancel):
                    s.build_views(missing, tmp, progress, cancel)

                self.runner.run("Indexing weights for global scope", work,
                                on_done=lambda _: self._set_many(mode, sparsity, granularity, criterion, scope, cap))
                return
        try:
            if scope == "global":
                skipped = s.set_global(names, sparsity, granularity, criterion, cap)
            else:
                skipped = s.set_uniform(names, sparsity, granularity, criterion)
        except Exception as e:
            self.report_error(e)
            return
        if skipped:
            self.status(f"{len(skipped)} layer(s) left dense: " + "; ".join(list(skipped.values())[:2]), 10000)

    def apply_plan(self) -> None:
        s = self.session
        if not s.loaded_ok:
            return
        big = sum(s.layer(n).params for n in s.plan.active())
        if big <= SYNC_BUILD_LIMIT * 2:
            try:
                s.apply()
            except Exception as e:
                self.report_error(e)
            return
        plan = s.plan.copy()

        def work(progress, cancel):
            progress(Progress(None, "building masks"))
            return s.masked_state(plan)

        def done(state):
            s.apply_state(plan, state)

        self.runner.run("Applying plan", work, on_done=done)

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
            self.session.set_plan(plan)
            if d.get("model") and d["model"] != self.session.model_spec:
                self.status(f"recipe was written for {d['model']}; applied to {self.session.model_name}", 8000)
            else:
                self.status(f"recipe {Path(path).name}: {len(plan.active())} layer(s) planned", 5000)
        except Exception as e:
            self.report_error(e)

    def _concepts(self) -> None:
        from explorer.core.prune.granularity import get_granularity
        from explorer.core.prune.criteria import CRITERIA
        from .layer_table import GRANULARITY_CHOICES

        rows = [("Sparsity", "the share of a layer's weights set to exactly zero."),
                ("Scope", "local gives every layer its own sparsity; global puts one threshold on comparable "
                          "scores across layers, so robust layers lose more (capped per layer)."),
                ("Compression ratio", "dense fp32 size / size with every pruned weight stored as CSR or bitmask "
                                      "(the smaller)."),
                ("MACs", "multiply-accumulates per sample; 'nonzero MACs' count only those with a nonzero weight, "
                         "which dense hardware still executes."),
                ("Compaction", "physically removing pruned channels (and what depends on them): a smaller dense "
                               "network that is really faster."),
                ("Sensitivity", "the accuracy when one layer alone is pruned: which layers can lose the most."),
                ("Fine-tuning", "training the pruned network with its masks held at zero to recover accuracy.")]
        rows += [(f"Granularity {g}", get_granularity(g).tooltip) for g in GRANULARITY_CHOICES]
        rows += [(f"Criterion {n}", c.tooltip) for n, c in CRITERIA.items()]
        html = "<table cellspacing=6>" + "".join(f"<tr><td><b>{a}</b></td><td>{b}</td></tr>" for a, b in rows) + "</table>"
        box = QMessageBox(self)
        box.setWindowTitle("Pruning concepts")
        box.setText(html)
        box.setStyleSheet("QLabel { min-width: 620px; }")
        box.open()

    def _shortcuts(self) -> None:
        acts = [a for m in self.menuBar().findChildren(type(self.run_menu)) for a in m.actions()
                if not a.shortcut().isEmpty()]
        seen, rows = set(), []
        for a in acts:
            key = a.shortcut().toString(QKeySequence.NativeText)
            if (key, a.text()) not in seen:
                seen.add((key, a.text()))
                rows.append(f"<tr><td><b>{key}</b></td><td>{a.text().replace('&', '')}</td></tr>")
        rows.append("<tr><td><b>Esc</b></td><td>Cancel the running job</td></tr>")
        box = QMessageBox(self)
        box.setWindowTitle("Keyboard shortcuts")
        box.setText("<table cellspacing=4>" + "".join(rows) + "</table>")
        box.open()

    def _about(self) -> None:
        QMessageBox.about(self, "About Pruning Explorer",
                          f"<b>Pruning Explorer {__version__}</b><p>Explore neural-network pruning: granularity, "
                          "criteria, sensitivity, fine-tuning, measured latency.</p><p>Built on the MIT EfficientML "
                          "lecture 'Pruning and Sparsity'.</p>")

    def showEvent(self, e) -> None:
        super().showEvent(e)
        if not getattr(self, "_sized", False):
            self._sized = True
            QTimer.singleShot(0, self._initial_split)

    def _initial_split(self) -> None:
        w = max(self.main_split.width(), 800)
        left = max(int(w * 0.58), min(self.table.preferred_width(), int(w * 0.7)))
        self.main_split.setSizes([left, w - left])

    # ------------------------------------------------------------------ closing
    def closeEvent(self, e) -> None:
        if self.runner.busy:
            job = self.runner.current
            ask = QMessageBox.question(self, "A job is running",
                                       f"'{job.title}' is still running. Stop it and quit?",
                                       QMessageBox.Yes | QMessageBox.No, QMessageBox.No) \
                if not getattr(self, "_force_close", False) else QMessageBox.Yes
            if ask != QMessageBox.Yes:
                e.ignore()
                return
            self._closing = True
            self.runner.cancel()
            if not self.runner.wait(20000):
                self.status("the job did not stop in time", 0)
        self._closing = True
        e.accept()
