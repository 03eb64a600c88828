"""Accuracy vs sparsity per schedule (Han et al. 2015, Figure 5 style) from bench_schedules.py --save files.

    python benchmarks/plot_schedules.py OUT.png after.json [before.json ...]

One row per file (e.g. after, before), one column per model; one curve per schedule; the dense model's test
accuracy and "dense - 1 point" as grey lines. Renders offscreen with pyqtgraph (no extra dependency).
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import _common  # noqa: F401,E402
import pyqtgraph as pg  # noqa: E402
from pyqtgraph.exporters import ImageExporter  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from explorer.gui.plots.finetune_chart import SCHEDULE_COLORS  # noqa: E402

STYLES = [Qt.SolidLine, Qt.DashLine, Qt.DotLine]


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, files = sys.argv[1], sys.argv[2:]
    records = [json.load(open(f)) for f in files]
    app = QApplication.instance() or QApplication([])
    pg.setConfigOptions(background="w", foreground="k", antialias=True)
    win = pg.GraphicsLayoutWidget()
    models = list(records[0]["models"])
    win.resize(600 * len(models), 360 * len(records) + 40)
    first = records[0]
    win.addLabel(f"Test accuracy after pruning + fine-tuning: {first['epochs']} epochs for every schedule, mean of "
                 f"{first['seeds']} seeds, best epoch on validation (benchmarks/bench_schedules.py)",
                 row=0, col=0, colspan=len(models), size="11pt")
    for row, rec in enumerate(records, start=1):
        for col, model in enumerate(models):
            p = win.addPlot(row=row, col=col, title=f"{model} — {rec['variant']}")
            p.setLabel("bottom", "sparsity (% of weights pruned, every layer)")
            p.setLabel("left", "test accuracy (%)")
            p.showGrid(x=True, y=True, alpha=0.2)
            p.addLegend(offset=(10, -10), labelTextSize="9pt", brush=pg.mkBrush(255, 255, 255, 220))
            dense = rec["models"][model]["dense"]
            p.addItem(pg.InfiniteLine(dense, angle=0, pen=pg.mkPen((120, 120, 120), width=1.5, style=Qt.DashLine),
                                      label=f"dense {dense:.2f}", labelOpts={"position": 0.1, "color": (90, 90, 90)}))
            p.addItem(pg.InfiniteLine(dense - 1, angle=0, pen=pg.mkPen((170, 170, 170), width=1, style=Qt.DotLine),
                                      label="dense − 1 point", labelOpts={"position": 0.45, "color": (140, 140, 140)}))
            rows = rec["models"][model]["rows"]
            xs = [100 * float(s) for s in rows]
            lo = dense - 1
            for schedule, color in SCHEDULE_COLORS.items():
                ys = [rows[s][schedule]["mean"] for s in rows]
                lo = min(lo, min(ys))
                p.plot(xs, ys, pen=pg.mkPen(color, width=2.5, style=STYLES[(row - 1) % len(STYLES)]), symbol="o",
                       symbolSize=8, symbolBrush=color, symbolPen=color, name=schedule)
            p.setYRange(lo - 0.3, dense + 0.3, padding=0.02)
    win.show()
    for _ in range(5):
        app.processEvents()
    exporter = ImageExporter(win.scene())
    exporter.parameters()["width"] = win.width()
    exporter.export(out)
    print("saved", out)


if __name__ == "__main__":
    main()
