"""Automatic allocation from a sensitivity scan: per-layer drop or a target (sparsity, size, MACs), and Search;
without a scan, OWL or heavy-tail alpha sparsities around a target (``core/analyse/owl.py``), and Diagnose (the
layer table's Outliers and Alpha columns)."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
)

from explorer.core.analyse.allocate import allocate_by_drop, allocate_to_target
from explorer.core.train.metric import metric_of

from ..window.context import AppContext

ALLOC_MODES = [("per-layer drop ≤ (points)", "drop"), ("overall sparsity ≥ (%)", "sparsity"),
               ("sparse size ≤ (KiB)", "size"), ("MACs ≤ (millions)", "macs"),
               ("OWL at sparsity (%)", "owl"), ("alpha at sparsity (%)", "alpha")]
NO_SCAN = ("owl", "alpha")       # modes that need no sensitivity scan


class AllocationBox(QGroupBox):
    """Emits ``drop_changed(points)`` when the allowed per-layer drop changes (the scan plot's red line follows).
    ``finetune_config()`` gives the Fine-tune tab's settings, which Search uses."""

    drop_changed = Signal(float)

    def __init__(self, ctx: AppContext, finetune_config):
        super().__init__("Automatic allocation")
        self.ctx = ctx
        self.session = ctx.session
        self.finetune_config = finetune_config
        self.result = None
        self.predicted: float | None = None
        self.predicted_plan = None
        self.mode = QComboBox()
        for label, key in ALLOC_MODES:
            self.mode.addItem(label, key)
        self.mode.setSizeAdjustPolicy(QComboBox.AdjustToContents)   # never "per-layer drop ≤ (p…" (any font)
        self.mode.setToolTip("Per-layer: each layer gets the highest measured sparsity within the drop. Targets: "
                             "greedy, raising the layer that buys the most per point of predicted accuracy lost. "
                             "OWL / alpha (no scan needed): each block's sparsity within ±8 points of the target, "
                             "less where more Wanda scores are outliers (OWL, M = 5) or the weight spectrum is more "
                             "heavy-tailed (alpha); overall the target, by weight count")
        self.value = QDoubleSpinBox()
        self.value.setDecimals(2)
        self.value.setRange(0, 1e9)
        self.value.setValue(1.0)
        self.value.setMinimumWidth(90)     # its range (up to 1e9) would otherwise ask for 13 digits of width
        self.value.valueChanged.connect(self._value_changed)
        self.mode.currentIndexChanged.connect(self._mode_changed)
        self.cap = QDoubleSpinBox()
        self.cap.setRange(0, 100)
        self.cap.setValue(95)
        self.cap.setSuffix(" %")
        self.cap.setMinimumWidth(90)
        self.cap.setToolTip("No layer above this sparsity")
        self.balance = QSlider(Qt.Horizontal)
        self.balance.setRange(0, 100)
        self.balance.setToolTip("Trade accuracy/size against measured latency (needs a scan with latency)")
        self.balance.setEnabled(False)
        self.alloc_btn = QPushButton("Allocate")
        self.alloc_btn.setToolTip("Write the allocation into the plan (undoable); then Apply, Evaluate, Fine-tune")
        self.alloc_btn.clicked.connect(self.allocate)
        self.search_btn = QPushButton("Search…")
        self.search_btn.setToolTip("Sparsest greedy allocation whose accuracy after fine-tuning (the Fine-tune tab's "
                                   "settings) stays within the allowed drop on the validation split: tries overall "
                                   "targets from 95 % down and keeps the first that passes")
        self.search_btn.clicked.connect(self.search)
        self.diag_btn = QPushButton("Diagnose")
        self.diag_btn.setToolTip("Fill the layer table's Outliers (OWL's outlier ratio, with calibration data) and "
                                 "Alpha (heavy-tail exponent of the weight spectrum) columns, in the background")
        self.diag_btn.clicked.connect(self.diagnose)
        self.blocks_btn = QPushButton("Blocks…")
        self.blocks_btn.setToolTip("Measure each block's influence and metric when skipped (what the block "
                                   "granularity drops first), in the background")
        self.blocks_btn.clicked.connect(self.show_blocks)
        self.blocks_dialog = None
        self.alloc_info = QLabel("Scan first.")
        self.alloc_info.setWordWrap(True)
        # two rows of their own (a grid would add the rows' widths): the mode box and the slider's label keep their
        # text in a half-width pane
        ag = QVBoxLayout(self)
        ag.setContentsMargins(6, 4, 6, 4)
        row0, row1 = QHBoxLayout(), QHBoxLayout()
        row0.addWidget(self.mode)
        row0.addWidget(self.value, 1)
        row0.addWidget(QLabel("cap"))
        row0.addWidget(self.cap, 1)
        row1.addWidget(QLabel("accuracy ↔ latency"))
        row1.addWidget(self.balance, 1)
        row1.addWidget(self.alloc_btn)
        row1.addWidget(self.search_btn)
        row1.addWidget(self.diag_btn)
        row1.addWidget(self.blocks_btn)
        ag.addLayout(row0)
        ag.addLayout(row1)
        ag.addWidget(self.alloc_info)
        self.session.measurements.changed.connect(self._measured)

    @property
    def mode_key(self) -> str:
        return self.mode.currentData()

    def set_scan(self, result) -> None:
        """A new scan: the default drop follows the lab's reference line, 100 - (100 - dense) * 1.5."""
        self.result = result
        d, m = result.dense_accuracy, result.measure
        self.mode.setItemText(0, f"max {m.drop_label}")
        if m.higher_is_better:
            ref = 100 - (100 - d) * 1.5
            if self.mode_key == "drop" and self.value.value() == 1.0 and d - ref > 1:
                self.value.setValue(round(d - ref, 2))
        self.balance.setEnabled(all(l.get("latency_ms") for l in result.layers))
        self.alloc_info.setText(f"{len(result.layers)} layers scanned ({result.method}, {result.seconds:.1f}s); "
                                f"dense {m.format(d)}." + (f" Not scannable: {', '.join(result.skipped)}"
                                                           if result.skipped else ""))

    def allowed_drop(self) -> float | None:
        return self.value.value() if self.mode_key == "drop" else None

    def set_drop(self, drop: float) -> None:
        """The red line was dragged: switch to per-layer drop at that value."""
        if self.mode_key != "drop":
            self.mode.setCurrentIndex(0)
        self.value.setValue(max(0.0, round(drop, 2)))

    def _value_changed(self, v: float) -> None:
        if self.mode_key == "drop":
            self.drop_changed.emit(v)

    def _mode_changed(self, _i: int) -> None:
        key = self.mode.currentData()
        defaults = {"drop": 1.0, "sparsity": 70.0, "size": 100.0, "macs": 1.0, "owl": 70.0, "alpha": 70.0}
        s = self.session
        if s.loaded_ok and key == "size":
            defaults["size"] = round(s.totals().dense_bytes / 1024 / 4, 1)
        if s.loaded_ok and key == "macs":
            defaults["macs"] = round(s.profile.total_macs / 1e6 / 2, 3)
        self.value.setValue(defaults[key])

    def allocate(self) -> None:
        s, ctx = self.session, self.ctx
        if self.mode.currentData() in NO_SCAN:
            self._allocate_around(self.mode.currentData(), self.value.value() / 100)
            return
        if self.result is None:
            ctx.status("run or open a scan first", 4000)
            return
        key = self.mode.currentData()
        v = self.value.value()
        cap = self.cap.value() / 100
        try:
            if key == "drop":
                a = allocate_by_drop(s, self.result, v, cap)
            elif key == "sparsity":
                a = allocate_to_target(s, self.result, v / 100, "sparsity", cap, self.balance.value() / 100)
            elif key == "size":
                a = allocate_to_target(s, self.result, v * 1024, "size", cap, self.balance.value() / 100)
            else:
                a = allocate_to_target(s, self.result, v * 1e6, "macs", cap, self.balance.value() / 100)
            s.set_plan(a.plan)
        except Exception as e:
            ctx.report_error(e)
            return
        self.predicted = a.predicted_accuracy
        self.predicted_plan = s.plan
        m = self.result.measure
        self.alloc_info.setText(f"Planned {a.sparsity:.1%} overall; predicted {m.name} {m.format(a.predicted_accuracy)} "
                                f"(adds the per-layer drops; layers interact, so measure it: F5, then fine-tune).")

    def _allocate_around(self, method: str, target: float) -> None:
        """OWL / alpha at ``target`` (a job on a snapshot: OWL reads calibration data); the plan is set when it is
        done (undoable). Each layer keeps its granularity and criterion when the plan gives all layers the same
        ones, else element and wanda (OWL) or l1 (alpha)."""
        from explorer.core.analyse.owl import allocate, fitting_layers

        s, ctx = self.session, self.ctx
        if not s.loaded_ok:
            return
        kinds = {(lp.granularity.name, lp.criterion.name) for lp in s.plan.active().values()}
        gran, crit = kinds.pop() if len(kinds) == 1 else ("element", "wanda" if method == "owl" else "l1")
        if crit == "manual":
            gran, crit = "element", "l1"
        snap = s.snapshot()
        key = self.ctx.layer_stats.key_of(s)

        def work(progress, cancel):
            names, _skipped = fitting_layers(snap, snap.layer_names, target, gran, crit)
            return allocate(snap, method, target, names, gran, crit, progress=progress, cancel=cancel)

        def done(a):
            try:
                s.set_plan(a.plan)
            except Exception as e:
                ctx.report_error(e)
                return
            per_layer = {n: v for n, v in a.statistic.items() if v is not None}
            if per_layer and a.record()["level"] == "layer":
                self.ctx.layer_stats.put(key, **({"outliers": per_layer, "m": a.settings.get("m")}
                                                 if method == "owl" else {"alpha": per_layer}))
            lo, hi = min(a.sparsities.values()), max(a.sparsities.values())
            self.alloc_info.setText(f"{method.upper() if method == 'owl' else 'Alpha'} ({a.record()['level']} level, "
                                    f"{gran}, {crit}): layers from {lo:.1%} to {hi:.1%}, overall "
                                    f"{s.totals().sparsity:.1%}. Undo restores the plan; Diagnose shows each "
                                    "layer's statistic.")

        ctx.start_job(f"{method} allocation", work, on_done=done)

    def diagnose(self) -> None:
        """Background job: each layer's outlier ratio (with calibration data) and alpha, into the layer table."""
        from explorer.core.analyse.owl import diagnose

        s, ctx = self.session, self.ctx
        if not s.loaded_ok:
            return
        snap = s.snapshot()
        key = ctx.layer_stats.key_of(s)

        def done(d):
            ctx.layer_stats.put(key, outliers=d.outliers, alpha=d.alpha, m=d.m)
            self.alloc_info.setText("Outliers and Alpha are in the layer table" + ("" if d.outliers is not None else
                                    " (Outliers needs training samples for calibration)") + ".")

        ctx.start_job("Outliers and alpha", lambda p, c: diagnose(snap, progress=p, cancel=c), on_done=done)

    def show_blocks(self) -> None:
        """Background job: block influence and the metric with each block skipped; then a dialog lists them."""
        from explorer.core.analyse.depth import analyse_blocks

        from .blocks_dialog import BlocksDialog

        s, ctx = self.session, self.ctx
        if not s.loaded_ok:
            return
        snap = s.snapshot()

        def done(a):
            self.blocks_dialog = BlocksDialog(a, self)
            self.blocks_dialog.show()

        ctx.start_job("Block importance", lambda p, c: analyse_blocks(snap, progress=p, cancel=c), on_done=done)

    def search(self) -> None:
        """Background job: grid of targets, fine-tune each, keep the sparsest within the drop (on val)."""
        from explorer.core.analyse.search import search_allocation

        s, ctx = self.session, self.ctx
        if self.result is None:
            ctx.status("run or open a scan first", 4000)
            return
        drop = self.value.value() if self.mode.currentData() == "drop" else 1.0
        try:
            cfg = self.finetune_config().validated()
        except Exception as e:
            ctx.report_error(e)
            return
        result, cap = self.result, self.cap.value() / 100
        m = result.measure
        unit = "points" if m.higher_is_better else "% perplexity"

        snap = s.snapshot()

        def work(progress, cancel):
            return search_allocation(snap, result, drop, cfg, cap=cap, progress=progress, cancel=cancel,
                                     device=snap.device)

        def on_progress(p):
            if p.data is not None and hasattr(p.data, "target"):
                t = p.data
                self.alloc_info.setText(f"tried {t.sparsity:.1%}: val {m.format(t.val_accuracy)} "
                                        f"({'within' if t.ok else 'beyond'} {drop:g} {unit}) …")

        def done(r):
            s.results.adopt_search(r, f"search ≤{drop:g} {'pt' if m.higher_is_better else '%'}: {r.sparsity:.0%}")
            self.alloc_info.setText(f"Sparsest within {drop:g} {unit} after fine-tuning: {r.sparsity:.1%} "
                                    f"(val {m.format(r.val_accuracy)} vs dense {m.format(r.dense_val_accuracy)}; test "
                                    f"{m.format(r.test_accuracy)}), after {len(r.trials)} trial(s). Applied; undo "
                                    "restores the plan, History returns to earlier weights.")

        ctx.start_job("Searching allocation", work, on_done=done, on_progress=on_progress)

    def _measured(self) -> None:
        s = self.session
        if self.predicted is None or not s.loaded_ok:
            return
        cur = s.measurements.current
        if cur and cur.plan == self.predicted_plan and s.is_fresh(cur):
            m = self.result.measure if self.result is not None else metric_of(s.dataset)
            self.alloc_info.setText(f"Predicted {m.format(self.predicted)} → measured {m.format(m.value(cur.value))} at "
                                    f"{s.totals().sparsity:.1%} sparsity ({s.base_label}). Pruning all layers at "
                                    "once compounds their drops; fine-tuning recovers most of it.")
