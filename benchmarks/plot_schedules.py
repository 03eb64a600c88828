"""Accuracy vs sparsity per schedule (Han et al. 2015, Figure 5 style) from bench_schedules.py --save files.

    python benchmarks/plot_schedules.py OUT.png after.json [before.json ...]

One panel per model; one curve per schedule and file (the first file solid, the others dashed), the dense
model's test accuracy as a grey line. Renders offscreen with pyqtgraph (no extra dependency).
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

from explorer.gui.finetune_chart import SCHEDULE_COLORS  # noqa: E402

STYLES = [Qt.SolidLine, Qt.DashLine, Qt.DotLine]


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, files = sys.argv[1], sys.argv[2:]
    records = [json.load(open(f)) for f in files]
    app = QApplication.instance() or QApplication([])  # noqa: F841
    pg.setConfigOptions(background="w", foreground="k", antialias=True)
    win = pg.GraphicsLayoutWidget()
    win.resize(1200, 520)
    models = list(records[0]["models"])
    for col, model in enumerate(models):
        p = win.addPlot(row=0, col=col, title=f"{model}: test accuracy after pruning + fine-tuning "
                                               f"({records[0]['epochs']} epochs, mean of {records[0]['seeds']} seeds)")
        p.setLabel("bottom", "sparsity (% of weights pruned, every layer)")
        p.setLabel("left", "test accuracy (%)")
        p.showGrid(x=True, y=True, alpha=0.2)
        legend = p.addLegend(offset=(-10, -10), labelTextSize="9pt", brush=pg.mkBrush(255, 255, 255, 220))
        dense = records[0]["models"][model]["dense"]
        p.addItem(pg.InfiniteLine(dense, angle=0, pen=pg.mkPen((120, 120, 120), width=1.5, style=Qt.DashLine),
                                  label=f"dense {dense:.2f}", labelOpts={"position": 0.12, "color": (90, 90, 90)}))
        p.addItem(pg.InfiniteLine(dense - 1, angle=0, pen=pg.mkPen((190, 190, 190), width=1, style=Qt.DotLine),
                                  label="dense − 1 point", labelOpts={"position": 0.12, "color": (150, 150, 150)}))
        lo = dense - 1
        for i, rec in enumerate(records):
            rows = rec["models"][model]["rows"]
            xs = [100 * float(s) for s in rows]
            for schedule, color in SCHEDULE_COLORS.items():
                ys = [rows[s][schedule]["mean"] for s in rows]
                lo = min(lo, min(ys))
                pen = pg.mkPen(color, width=2.5 if i == 0 else 1.6, style=STYLES[i % len(STYLES)])
                p.plot(xs, ys, pen=pen, symbol="o" if i == 0 else "x", symbolSize=8, symbolBrush=color,
                       symbolPen=color, name=f"{schedule} ({rec['variant']})")
        p.setYRange(max(0.0, lo - 1), 100, padding=0.02)
        legend.setParentItem(p.vb)
    app.processEvents()
    ImageExporter(win.scene()).export(out)
    print("saved", out)


if __name__ == "__main__":
    main()
