"""pyqtgraph, imported on first use (it is not needed for the window's first frame) and configured once."""
from __future__ import annotations

import weakref

_configured = False
_TICKS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()    # axis -> the ticks set_ticks gave it


def pyqtgraph():
    """The pyqtgraph module, with the app's plot options set (white background, row-major images)."""
    global _configured
    import pyqtgraph as pg

    if not _configured:
        pg.setConfigOptions(background="w", foreground=(40, 44, 52), antialias=False, imageAxisOrder="row-major")
        _configured = True
    return pg


def headroom(plot_widget, top: int = 9) -> None:
    """Room above the plot for the left axis's top tick label, which pyqtgraph lets stand half above the axis
    (at the widget's edge it was cut in half: the histogram's "1000", the heatmap's "0")."""
    layout = plot_widget.getPlotItem().layout
    left, old_top, right, bottom = layout.getContentsMargins()
    layout.setContentsMargins(left, max(old_top, top), right, bottom)


def set_label(plot_widget, side: str, text: str) -> None:
    """An axis label, set only when its text changes: pyqtgraph's ``setLabel`` throws the axis's cached picture
    away and re-lays the axis out, so setting the same text on every redraw regenerated its tick text (a few ms
    of GUI thread per axis and slider tick)."""
    ax = plot_widget.getAxis(side)
    if ax.labelText != text or not ax.label.isVisible():
        plot_widget.setLabel(side, text)


def set_ticks(axis, ticks: list) -> None:
    """Fixed ticks, set only when they change (``AxisItem.setTicks`` regenerates the axis's picture every time)."""
    if _TICKS.get(axis) != ticks:
        axis.setTicks(ticks)
        _TICKS[axis] = ticks
