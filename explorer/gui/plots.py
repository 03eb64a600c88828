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
