"""pyqtgraph, imported on first use (it is not needed for the window's first frame) and configured once."""
from __future__ import annotations

_configured = False


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
