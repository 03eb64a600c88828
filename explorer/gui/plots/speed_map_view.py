"""Latency tab ▸ Speed map: the selected layer's speedup vs sparsity, one line per kernel (CSR, 2:4 on CUDA, fewer
channels), the 1× line and the layer's current sparsity marked; measured by a background job
(``core/analyse/speed.session_speed_map``) whose results go to the AppContext's ``speed_results``."""
from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from explorer.core.analyse.speed import DEFAULT_SPARSITIES, session_speed_map

from ..window.context import AppContext

SPEED_RUNS = 10
KERNEL_PENS = {"csr": (66, 133, 244), "2:4": (219, 68, 55), "channel": (15, 157, 88)}
KERNEL_LABELS = {"csr": "CSR (sparse)", "2:4": "2:4 (GPU)", "channel": "fewer channels (dense)"}


class SpeedMapView(QWidget):
    """``settings()`` gives (batch, threads) from the Latency tab's controls."""

    def __init__(self, ctx: AppContext, settings):
        super().__init__()
        self.ctx = ctx
        self.session = ctx.session
        self.results = ctx.speed_results
        self.settings = settings
        self.title = QLabel("Speed map")
        self.title.setObjectName("viewTitle")
        self.title.setWordWrap(True)
        self.btn = QPushButton("Measure layer")
        self.btn.setToolTip("Time the selected layer dense vs CSR (and 2:4 on a CUDA GPU) vs fewer channels at "
                            + ", ".join(f"{s:.0%}" for s in DEFAULT_SPARSITIES) + " sparsity, at the batch above")
        self.btn.clicked.connect(lambda: self.measure(all_layers=False))
        self.btn_all = QPushButton("All layers")
        self.btn_all.setToolTip("Measure every layer's speed map (fills the layer table's Break-even column)")
        self.btn_all.clicked.connect(lambda: self.measure(all_layers=True))
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(False, False)
        self.plot.setLogMode(x=False, y=True)
        self.plot.setLabel("left", "speedup vs dense (×, log)")
        self.plot.setLabel("bottom", "sparsity (%)")
        self.plot.showGrid(x=True, y=True, alpha=0.2)
        self.plot.setXRange(45, 100, padding=0)
        self.plot.setMinimumHeight(150)
        self.legend = self.plot.addLegend(offset=(10, 10))
        self.one = self.plot.plot([45, 100], [1, 1], pen=pg.mkPen((90, 90, 90), style=Qt.DashLine))
        self.curves = {k: self.plot.plot([], [], pen=pg.mkPen(c, width=2), symbol="o", symbolSize=6, symbolBrush=c)
                       for k, c in KERNEL_PENS.items()}
        self.now = pg.InfiniteLine(angle=90, pen=pg.mkPen((170, 90, 0), width=2, style=Qt.DotLine), label="current",
                                   labelOpts={"position": 0.92, "color": (170, 90, 0)})
        self.plot.addItem(self.now)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.btn, 0, Qt.AlignBottom)
        head.addWidget(self.btn_all, 0, Qt.AlignBottom)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 6, 0, 0)
        lay.addLayout(head)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.note)
        self.results.changed.connect(lambda _names: self.redraw())
        # a slider drag changes the plan many times a second: while the page is hidden it only marks itself stale
        # and redraws when shown (11 ms a tick on the GUI thread otherwise, issue 24)
        self._stale = False
        self.session.selection_changed.connect(lambda _n: self._changed())
        self.session.editor.changed.connect(self._plan_changed)
        self.session.loaded.connect(self.results.clear)
        self.redraw()

    def measure(self, all_layers: bool = False) -> bool:
        s = self.session
        if not s.loaded_ok:
            return False
        names = list(s.layer_names) if all_layers else ([s.selected] if s.selected else [])
        if not names:
            self.ctx.status("select a layer in the table first", 4000)
            return False
        batch, threads = self.settings()
        key = self.results.key_of(s)

        def work(progress, cancel):
            skipped: dict[str, str] = {}
            return session_speed_map(s, names, batch, runs=SPEED_RUNS, threads=threads, progress=progress,
                                     cancel=cancel, skipped=skipped), skipped

        def done(r):
            result, skipped = r
            if self.results.key_of(s) != key:
                return                      # another model opened meanwhile: its layers are not these
            self.results.put(key, batch, result.layers)
            if skipped:
                self.ctx.status(f"{len(skipped)} layer(s) without a sparse kernel: "
                                + "; ".join(f"{n}: {w}" for n, w in list(skipped.items())[:2]), 10000)

        return self.ctx.start_job("Measuring the speed map" + ("" if all_layers else f" of {names[0]}"), work,
                                  on_done=done)

    def _plan_changed(self, names) -> None:
        """Only the selected layer's plan is drawn (the 'now' marker): other layers' edits leave it alone."""
        if names is None or self.session.selected in names:
            self._changed()

    def _changed(self) -> None:
        if self.isVisible():
            self.redraw()
        else:
            self._stale = True

    def showEvent(self, e) -> None:                # noqa: N802 (Qt's name)
        if self._stale:
            self.redraw()
        super().showEvent(e)

    def redraw(self) -> None:
        self._stale = False
        s = self.session
        name = s.selected if s.loaded_ok else None
        got = self.results.get(name) if name else None
        sparsity = s.plan.get(name).sparsity if name else 0.0
        self.now.setValue(sparsity * 100)
        self.now.setVisible(bool(name))
        self.legend.clear()                  # only what is drawn: no 2:4 entry where it was not measured
        self.legend.addItem(self.one, "1× (dense)")
        for k, c in self.curves.items():
            kc = got.kernel(k) if got is not None else None
            if kc is None:
                c.setData([], [])
            else:
                c.setData([x * 100 for x in kc.sparsities], [max(v, 1e-4) for v in kc.speedup])
                self.legend.addItem(c, KERNEL_LABELS[k])
        if not name:
            self.title.setText("Speed map: select a layer")
            self.note.setText("")
            return
        if got is None:
            self.title.setText(f"Speed map of {name}: not measured")
            self.note.setText("Measure it to see from which sparsity a sparse kernel beats the dense layer on this "
                              "machine (its own forward pass, at the batch above, runs interleaved).")
            return
        kernel, be = self.results.best_sparse(name)
        batch = self.results.batch(name)
        self.title.setText(f"Speed map of {name} (batch {batch})")
        csr = got.kernel("csr")
        at = csr.speedup_at(sparsity) if csr is not None else None
        now = (f" At its current {sparsity:.1%} sparsity CSR runs {at:.2f}× the dense speed."
               if at is not None and sparsity >= csr.sparsities[0] else "")
        if kernel is None:
            top = max(max(k.sparsities) for k in got.kernels)
            self.note.setText(f"No break-even up to {top:.0%}: no sparse kernel is faster than the dense layer from "
                              "some measured sparsity on, so on this machine unstructured pruning gives this layer no "
                              "dependable speedup (a zigzag means busy-machine noise: measure again)." + now)
        else:
            self.note.setText(f"Sparse wins above {be * 100:.0f} % ({kernel}); below that, the zeros cost more than "
                              "they save." + now)
