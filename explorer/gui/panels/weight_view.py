"""The selected layer's weights: a heatmap with the mask, and a histogram with the threshold.

Everything drawn comes from the layer's cached :class:`LayerMask`: the
heatmap is its screen-sized sample (rows x columns of the weight viewed as
out-channels x (in*kh*kw)) and the histogram its fixed sample, so a slider
step costs a comparison over at most 2048x2048 pixels and one bincount.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QSplitter, QVBoxLayout, QWidget

from explorer.core.model.metrics import format_count
from explorer.core.prune.masks import LayerMask

from ..plots.legend_row import LegendRow
from ..plots.plots import set_label

PRUNED_RGB = (38, 38, 46)
HEAT_LEGEND = ("<span style='color:#26262e'>■</span> pruned",
               "<span style='color:#2166ac'>■</span> − <span style='color:#b2182b'>■</span> + (scale at right)")
HEAT_HINT = "click a row: prune / restore that channel (Detail: a kernel or a weight)"


def diverging_lut() -> np.ndarray:
    """256 RGBA entries: entry 0 = pruned (near black), 1..255 blue -> white -> red."""
    anchors = np.array([[5, 48, 97], [67, 147, 195], [247, 247, 247], [214, 96, 77], [103, 0, 31]], float)
    pos = np.linspace(0, 1, len(anchors))
    x = np.linspace(0, 1, 255)
    rgb = np.stack([np.interp(x, pos, anchors[:, c]) for c in range(3)], axis=1)
    lut = np.zeros((256, 4), np.uint8)
    lut[0, :3] = PRUNED_RGB
    lut[1:, :3] = rgb.round().astype(np.uint8)
    lut[:, 3] = 255
    return lut


LUT = diverging_lut()


class WeightView(QWidget):
    """Heatmap (top) and histogram (bottom) of one layer, redrawn on demand."""

    hovered = Signal(str)
    clicked = Signal(int, int, bool)   # output row, input·kernel column of the weight, Detail view on

    def __init__(self, parent=None, lazy: bool = False):
        """``lazy``: the plots (pyqtgraph) are built on the first :meth:`set_view` or :meth:`build_plots`; until
        then the view shows its title ("measuring…") over an empty area."""
        super().__init__(parent)
        self.view: LayerMask | None = None
        self.sparsity = 0.0
        self._level = 1.0
        self._rect: tuple[int, int] | None = None     # the heatmap's extent in weights (columns, rows)
        self._heat_axis_text: str | None = None

        self.title = QLabel("No layer selected")
        self.title.setObjectName("viewTitle")
        self.title.setWordWrap(True)
        self.title.setMinimumWidth(120)
        self.hover_label = QLabel(" ")
        self.hover_label.setObjectName("hoverLabel")
        self.hover_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.hover_label.setMinimumWidth(50)

        self.abs_box = QCheckBox("|w|")
        self.abs_box.setToolTip("Histogram of |w| (magnitudes) instead of signed values")
        self.log_box = QCheckBox("log counts")
        self.log_box.setToolTip("Logarithmic count axis: shows the sparse tails")
        self.abs_box.toggled.connect(lambda _: self.redraw_hist())
        self.log_box.toggled.connect(self._set_log)
        self.detail_btn = QPushButton("Detail")
        self.detail_btn.setCheckable(True)
        self.detail_btn.setToolTip("Zoom the heatmap to the top-left 32×64 weights, where single weights, kernel rows "
                                   "and n:m runs are visible (mouse wheel and drag also zoom and pan)")
        self.detail_btn.toggled.connect(self._detail)
        self.hist_info = _WrappedLabel(" ")
        self.hist_info.setObjectName("hoverLabel")
        self.hist_info.setWordWrap(True)

        top = QVBoxLayout()      # the title gets the whole width (two lines at most), the toggles a row below
        top.setSpacing(2)
        top.addWidget(self.title)
        toggles = QHBoxLayout()
        toggles.addWidget(self.detail_btn)
        toggles.addWidget(self.abs_box)
        toggles.addWidget(self.log_box)
        toggles.addStretch(1)
        top.addLayout(toggles)
        self.split = QSplitter(Qt.Vertical)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.split, 1)
        lay.addWidget(self.hover_label)
        self.heat = None
        if not lazy:
            self.build_plots()

    @property
    def plots_built(self) -> bool:
        return self.heat is not None

    def build_plots(self) -> None:
        """Create the heatmap and histogram plots (imports pyqtgraph); once."""
        if self.heat is not None:
            return
        from ..plots.plots import headroom, pyqtgraph
        pg = pyqtgraph()
        self.heat = pg.PlotWidget()
        self.heat.setMenuEnabled(False)
        self.heat.invertY(True)
        self.heat.setAspectLocked(False)
        self.heat.setLabel("left", "output channel")
        self.heat.setLabel("bottom", "input × kernel position")
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setAutoDownsample(True)
        self.image.setLookupTable(LUT)
        self.heat.addItem(self.image)
        self.heat.scene().sigMouseMoved.connect(self._mouse_moved)
        self.heat.scene().sigMouseClicked.connect(self._mouse_clicked)
        self.colorbar = pg.ColorBarItem(values=(-1, 1), colorMap=pg.ColorMap(np.linspace(0, 1, 255), LUT[1:, :3]),
                                        interactive=False, width=12, label="w")
        self.heat.getPlotItem().layout.addItem(self.colorbar, 2, 5)
        # one row, wrapping between entries (never inside one): pruned | − + scale | the click hint
        self.heat_legend = LegendRow([*HEAT_LEGEND, HEAT_HINT])
        self.heat_hint = self.heat_legend.labels[-1]
        self.heat.setToolTip("Weights of the selected layer as out-channels × (in·kh·kw). Blue negative, red "
                            "positive; dark cells are pruned. Large layers are shown as a screen-sized sample.")

        self.hist = pg.PlotWidget()
        self.hist.setMenuEnabled(False)
        self.hist.setLabel("bottom", "weight value")
        self.hist.setLabel("left", "count")
        self.hist.getAxis("bottom").enableAutoSIPrefix(False)
        self.kept_curve = pg.PlotDataItem(stepMode="center", fillLevel=0, brush=(66, 133, 244, 170),
                                          pen=pg.mkPen((40, 90, 180), width=1), name="kept")
        self.pruned_curve = pg.PlotDataItem(stepMode="center", fillLevel=0, brush=(80, 80, 90, 200),
                                            pen=pg.mkPen((60, 60, 70), width=1), name="pruned")
        self.hist.addItem(self.pruned_curve)
        self.hist.addItem(self.kept_curve)
        pen = pg.mkPen((220, 50, 47), width=2, style=Qt.DashLine)
        self.tline_pos = pg.InfiniteLine(angle=90, pen=pen, movable=False,
                                         label="+t", labelOpts={"position": 0.92, "color": (220, 50, 47)})
        self.tline_neg = pg.InfiniteLine(angle=90, pen=pen, movable=False,
                                         label="−t", labelOpts={"position": 0.92, "color": (220, 50, 47)})
        self.hist.addItem(self.tline_pos)
        self.hist.addItem(self.tline_neg)
        self.hist_legend = LegendRow(["<span style='color:#4285f4'>■</span> kept",
                                      "<span style='color:#50505a'>■</span> pruned (on top)",
                                      "<span style='color:#dc322f'>- -</span> ±t"])
        self.hist.setToolTip("Histogram of the layer's weights (like the lab's weight-distribution plot): blue kept, "
                             "grey pruned; dashed lines at ±t when the threshold is on |w|.")

        heatbox = QWidget()
        hv = QVBoxLayout(heatbox)
        hv.setContentsMargins(0, 0, 0, 0)
        hv.setSpacing(0)
        hv.addWidget(self.heat, 1)
        hv.addWidget(self.heat_legend)
        self.split.addWidget(heatbox)
        hbox = QWidget()
        hl = QVBoxLayout(hbox)
        hl.setContentsMargins(0, 0, 0, 0)
        hl.setSpacing(0)
        hl.addWidget(self.hist_info)
        hl.addWidget(self.hist, 1)
        hl.addWidget(self.hist_legend)
        self.hist.setMinimumHeight(90)
        self.heat.setMinimumHeight(120)
        headroom(self.heat)
        headroom(self.hist)
        self.split.addWidget(hbox)
        self.split.setSizes([620, 300])
        self.split.setChildrenCollapsible(False)

    def _set_heat_axis(self, text: str) -> None:
        """The heatmap's x label; where the plot is too narrow for it (2:4 at 1.5x: "kernel pos × input (4-input
        runs side by side)"), the part in brackets moves to the axis's tooltip instead of being cut."""
        self._heat_axis_text = text
        ax = self.heat.getAxis("bottom")
        short = text.split(" (")[0]
        width = self.heat.width() - 80
        fits = QFontMetrics(ax.label.font()).horizontalAdvance(text) <= width
        set_label(self.heat, "bottom", text if fits or short == text else short)
        if ax.toolTip() != text:
            ax.setToolTip(text)

    def resizeEvent(self, e) -> None:      # noqa: N802 (Qt's name)
        super().resizeEvent(e)
        if self.heat is not None and self._heat_axis_text:
            self._set_heat_axis(self._heat_axis_text)

    # ------------------------------------------------------------------ drawing
    def show_message(self, text: str) -> None:
        self.view = None
        self.title.setText(text)
        if self.heat is None:
            return
        self.image.clear()
        self.kept_curve.setData([], [])
        self.pruned_curve.setData([], [])
        self.tline_pos.hide()
        self.tline_neg.hide()
        self.hist_info.setText("")

    def set_view(self, view: LayerMask, sparsity: float) -> None:
        self.build_plots()
        new_layer = self.view is None or self.view.layer.name != view.layer.name
        self.view = view
        self.sparsity = sparsity
        finite = view.sample.display_values[np.isfinite(view.sample.display_values)]
        self._level = float(np.percentile(np.abs(finite), 99.5)) if finite.size else 1.0
        self._level = self._level if self._level > 0 else 1.0
        self.colorbar.setLevels((-self._level, self._level))
        self.redraw(auto_range=new_layer)

    def set_sparsity(self, sparsity: float) -> None:
        self.sparsity = sparsity
        self.redraw()

    def redraw(self, auto_range: bool = False) -> None:
        v = self.view
        if v is None:
            return
        L = v.layer
        pruned = v.units_for(self.sparsity)
        sampled = "" if v.sample.display_values.size == L.params else \
            f"  (showing {len(v.sample.rows)}×{len(v.sample.cols)} sample)"
        self.title.setText(f"<b>{L.name}</b>  {L.kind} {'×'.join(map(str, L.weight_shape))}  —  "
                           f"{v.granularity.name}/{v.criterion}: {pruned:,} of {v.units:,} "
                           f"{'weights' if v.unit_size == 1 else 'groups'} pruned ({self.sparsity:.1%}){sampled}")
        lvl = self._level
        img = v.display_image(self.sparsity, lvl)
        self.image.setImage(img, levels=(-lvl - 2 * lvl / 254, lvl), autoLevels=False)
        rect = (L.matrix_shape[1], L.matrix_shape[0])
        if auto_range or self._rect != rect:
            self.image.setRect(0, 0, *rect)
            self._rect = rect
        if self._heat_axis_text != v.display_axis_label:
            self._set_heat_axis(v.display_axis_label)
        if auto_range:
            self._detail(self.detail_btn.isChecked())
        self.redraw_hist()

    def redraw_hist(self) -> None:
        v = self.view
        if v is None or self.heat is None:
            return
        absolute = self.abs_box.isChecked()
        edges, kept, pruned = v.histogram(self.sparsity, absolute)
        log = self.log_box.isChecked()
        if log:
            kept, pruned = np.log10(kept + 1), np.log10(kept + pruned + 1)
        else:
            pruned = kept + pruned  # stacked: the grey area on top of the blue one is what goes
        self.pruned_curve.setData(edges, pruned)
        self.kept_curve.setData(edges, kept)
        set_label(self.hist, "bottom", "|weight|" if absolute else "weight value")
        set_label(self.hist, "left", "log10(count+1)" if log else "count")
        t = v.threshold(self.sparsity) if v.magnitude_threshold else None
        if t is not None and np.isfinite(t):
            self.tline_pos.setValue(t)
            self.tline_pos.show()
            self.tline_neg.setValue(-t)
            self.tline_neg.setVisible(not absolute)
            info = f"t = {t:.4g}"
        else:
            self.tline_pos.hide()
            self.tline_neg.hide()
            thr = None if v.per_row else v.threshold(self.sparsity)
            info = f"threshold on group {v.criterion} score: {thr:.4g}" if thr is not None else \
                (f"{v.criterion}: each output row loses its own lowest scores" if v.per_row else "")
        c = v.counts(self.sparsity)
        zeros = f"   ({v.zero_share:.0%} already exactly zero, not drawn)" if v.zero_share >= 0.005 else ""
        if t is not None and t == 0 and v.zero_share > 0:
            info = "t = 0: the pruned weights are already zero"
        self.hist_info.setText(f"zero: {1 - c.nonzero / max(1, c.params):.1%} of {format_count(c.params)} weights"
                               f"   {info}{zeros}")
        self.hist.enableAutoRange()

    def _detail(self, on: bool) -> None:
        v = self.view
        if v is None or self.heat is None:
            return
        R, C = v.layer.matrix_shape
        if on:
            self.heat.setRange(xRange=(0, min(C, 64)), yRange=(0, min(R, 32)), padding=0)
        else:
            self.heat.setRange(xRange=(0, C), yRange=(0, R), padding=0)

    def _set_log(self, _):
        self.redraw_hist()

    # ------------------------------------------------------------------ hover and click
    def _cell_at(self, pos):
        """(sample row, sample column, weight row, weight column) under a scene position, or None."""
        v = self.view
        if v is None or not self.heat.sceneBoundingRect().contains(pos):
            return None
        p = self.heat.getViewBox().mapSceneToView(pos)
        R, C = v.layer.matrix_shape
        row, col = int(np.floor(p.y())), int(np.floor(p.x()))
        if not (0 <= row < R and 0 <= col < C):
            return None
        ri = int(np.clip(np.searchsorted(v.sample.rows, row, side="right") - 1, 0, len(v.sample.rows) - 1))
        ci = int(np.clip(np.searchsorted(v.sample.pos, col, side="right") - 1, 0, len(v.sample.pos) - 1))
        return ri, ci, int(v.sample.rows[ri]), int(v.sample.cols[ci])

    def _mouse_clicked(self, ev) -> None:
        if ev.button() != Qt.LeftButton or ev.double():
            return
        cell = self._cell_at(ev.scenePos())
        if cell is not None:
            ev.accept()
            self.clicked.emit(cell[2], cell[3], self.detail_btn.isChecked())

    def _mouse_moved(self, pos) -> None:
        v = self.view
        cell = self._cell_at(pos)
        if cell is None:
            if v is not None:
                self.hover_label.setText(" ")
            return
        ri, ci, r, c = cell
        value = float(v.sample.display_values[ri, ci])
        kept = bool(v.display_keep(self.sparsity)[ri, ci])
        shape = v.layer.weight_shape
        if len(shape) > 2:
            k = int(np.prod(shape[2:]))
            idx = np.unravel_index(c, shape[1:])
            where = f"out {r}, in {idx[0]}, kernel {tuple(int(i) for i in idx[1:])}" if k > 1 else f"out {r}, in {idx[0]}"
        else:
            where = f"out {r}, in {c}"
        text = f"{v.layer.name}[{where}] = {value:.5g}  ({'kept' if kept else 'pruned'})"
        self.hover_label.setText(text)
        self.hovered.emit(text)


class _WrappedLabel(QLabel):
    """A word-wrapped label whose minimum height is the lines it needs at its width: a splitter (which knows nothing
    of height-for-width) then squeezes the plot under it, never draws the plot over it."""

    def _fit(self) -> None:
        h = self.heightForWidth(self.width())
        if h > 0 and h != self.minimumHeight():
            self.setMinimumHeight(h)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        super().setText(text)
        self._fit()

    def resizeEvent(self, e) -> None:      # noqa: N802
        super().resizeEvent(e)
        self._fit()
