"""GUI-thread cost of a slider drag (issue 20: redraw what changed).

Opens the main window offscreen on digits-cnn with a History of ``--entries`` evaluated states, then drags one
layer's sparsity slider ``--ticks`` times (a tick every ~5 ms, as a mouse drag sends them; the window's throttled
redraw runs in between), once with the History tab shown and once with the Weights tab shown. The GUI thread's
CPU time per tick (``time.thread_time``: sleeping does not count) is compared side by side with the baseline: the
same edits on the session alone (no window listening), in the same run.

    python benchmarks/bench_gui_drag.py [--json] [--ticks 100] [--entries 30] [--quick]

``--quick``: 10 ticks, 5 History entries, one repeat (the test suite runs it).
"""
from __future__ import annotations

import argparse
import os
import time

import _common  # noqa: F401

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def drag(app, slider, values, pause_s: float) -> float:
    """CPU ms of this thread per tick: set the slider, let the event loop run (throttled redraws included)."""
    t0 = time.thread_time()
    for v in values:
        slider.setValue(v)
        app.processEvents()
        time.sleep(pause_s)
        app.processEvents()
    end = time.monotonic() + 0.1          # the last throttled redraw
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.005)
    return (time.thread_time() - t0) * 1000 / len(values)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--ticks", type=int, default=100)
    ap.add_argument("--entries", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code path (the test suite runs this)")
    args = ap.parse_args()
    if args.quick:
        args.ticks, args.entries, args.repeats = 10, 5, 1
    from explorer.core.session import Session
    from explorer.gui.window.app import make_app, wait_idle
    from explorer.gui.window.main_window import MainWindow

    app = make_app()
    s = Session.open(args.model)
    win = MainWindow(s)
    win.resize(1440, 900)
    win.show()
    wait_idle(app, win)
    name = s.layer_names[1]
    for i in range(args.entries):                       # a History worth drawing
        s.set_layer(name, sparsity=i / (args.entries + 10))
        s.results.record(f"state {i}", accuracy=95.0 - i / 10, plan=s.plan)
    wait_idle(app, win)
    slider = win.table.editor(name)[0]
    values = [(7 + 37 * i) % 900 / 10 for i in range(args.ticks)]   # percent
    tabs = {"history": win.history_panel, "weights": win.weight_view}
    ms = {k: [] for k in tabs}
    base = []
    bare = Session.open(args.model)
    for _ in range(args.repeats):                       # interleaved, so drift hits all alike
        for key, page in tabs.items():
            win.tabs.setCurrentWidget(page)
            wait_idle(app, win)
            ms[key].append(drag(app, slider, values, 0.005))
        t0 = time.thread_time()
        for v in values:
            bare.set_layer(name, sparsity=v / 100, coalesce=("bench", name))
        base.append((time.thread_time() - t0) * 1000 / len(values))
    hist, weights, session_ms = min(ms["history"]), min(ms["weights"]), min(base)
    payload = {"model": args.model, "ticks": args.ticks, "history_entries": args.entries,
               "history_tab_ms_per_tick": hist, "weights_tab_ms_per_tick": weights,
               "session_only_ms_per_tick": session_ms, "ratio_history_tab": hist / session_ms,
               "ratio_weights_tab": weights / session_ms, "machine": _common.machine()}
    _common.emit(args, [[args.model, args.ticks, args.entries, f"{hist:.2f}", f"{weights:.2f}", f"{session_ms:.3f}",
                         f"{hist / session_ms:.0f}×"]],
                 ["model", "ticks", "History entries", "History tab ms/tick", "Weights tab ms/tick",
                  "session alone ms/tick", "ratio (History tab)"], payload)
    win.close()


if __name__ == "__main__":
    main()
