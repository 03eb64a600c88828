"""Longest event-loop stall of the window while a fine-tune runs (goal <= 100 ms).

Opens the main window offscreen on digits-cnn, plans 80% sparsity, starts fine-tuning, and while the
job runs a 5 ms QTimer records the gaps between its ticks; meanwhile the script drags a layer's
sparsity slider every 50 ms, as a user would (``--tabs``: and switches tabs every 0.5 s). Prints the largest
gap (``max_stall_ms``) and, since gaps on a shared machine include time the GUI thread waited for a core, the
GUI thread's own CPU time per event-loop step (``max_gui_cpu_ms``, ``p99_gui_cpu_ms``: what a fix can remove).

    python benchmarks/bench_gui_stall.py [--json] [--epochs 3] [--tabs] [--quick]

``--quick``: one epoch (the test suite runs it).
"""
from __future__ import annotations

import argparse
import os
import time

import _common  # noqa: F401

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--tabs", action="store_true", help="also switch tabs every 0.5 s")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code path (the test suite runs this)")
    args = ap.parse_args()
    if args.quick:
        args.epochs = 1
    from PySide6.QtCore import QTimer

    from explorer.core.session import Session
    from explorer.gui.window.app import make_app
    from explorer.gui.window.main_window import MainWindow

    app = make_app()
    s = Session.open(args.model)
    win = MainWindow(s)
    win.ask_before_closing = False
    win.resize(1440, 900)
    win.show()
    for _ in range(20):
        app.processEvents()
    s.set_uniform(s.layer_names, 0.8)
    for _ in range(20):
        app.processEvents()
    gaps = []
    last = [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append((now - last[0]) * 1000)
        last[0] = now
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    win.finetune_panel.epochs.setValue(args.epochs)
    win.finetune_panel.start()
    timer.start()
    last[0] = time.perf_counter()
    t0 = time.perf_counter()
    name = s.layer_names[1]
    slider = win.table._editors[name][0]
    v = 0
    next_drag = next_tab = t0
    cpu = []                             # the GUI thread's CPU time per step of this loop
    while win.runner.busy or win.runner.queue:
        c = time.thread_time()
        app.processEvents()
        if time.perf_counter() >= next_drag:
            v = (v + 37) % 1000
            slider.setValue(v / 10)      # percent; the user keeps exploring while the job runs
            next_drag = time.perf_counter() + 0.05
        if args.tabs and time.perf_counter() >= next_tab:
            win.tabs.setCurrentIndex((win.tabs.currentIndex() + 1) % win.tabs.count())
            next_tab = time.perf_counter() + 0.5
        cpu.append((time.thread_time() - c) * 1000)
        time.sleep(0.001)
    timer.stop()
    elapsed = time.perf_counter() - t0
    gaps = gaps[1:] or [0.0]
    import statistics
    payload = {"max_stall_ms": max(gaps), "p99_gap_ms": sorted(gaps)[int(0.99 * (len(gaps) - 1))],
               "median_gap_ms": statistics.median(gaps), "ticks": len(gaps), "job_s": elapsed,
               "epochs": args.epochs, "tabs": args.tabs, "max_gui_cpu_ms": max(cpu or [0.0]),
               "p99_gui_cpu_ms": sorted(cpu or [0.0])[int(0.99 * (len(cpu or [0.0]) - 1))],
               "machine": _common.machine()}
    _common.emit(args, [[args.model, args.epochs, f"{elapsed:.1f}", len(gaps), f"{payload['median_gap_ms']:.1f}",
                         f"{payload['p99_gap_ms']:.1f}", f"{payload['max_stall_ms']:.1f}",
                         f"{payload['p99_gui_cpu_ms']:.1f}", f"{payload['max_gui_cpu_ms']:.1f}"]],
                 ["model", "epochs", "job s", "ticks", "median gap ms", "p99 gap ms", "max stall ms",
                  "p99 GUI cpu ms", "max GUI cpu ms"], payload)
    win.close()


if __name__ == "__main__":
    main()
