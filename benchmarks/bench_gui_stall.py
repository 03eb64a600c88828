"""Longest event-loop stall of the window while a job runs (issue 24: goal <= 30 ms).

Opens the main window offscreen on digits-cnn, plans 80% sparsity, starts a job (``--job``: fine-tune, the
default; a sensitivity scan; or Deep Compression of the applied plan), and while the job runs a 5 ms QTimer
records the gaps between its ticks; meanwhile the script drags a layer's sparsity slider every 50 ms, as a user
would (``--tabs``: and switches tabs every 0.5 s). The loop goes on for ``SETTLE_S`` after the job queue empties,
so the end of the job (adopting its result, the redraws it causes) is counted. Prints the largest gap
(``max_stall_ms``) and, since gaps on a shared machine include time the GUI thread waited for a core, the GUI
thread's own CPU time per event-loop step (``max_gui_cpu_ms``, ``p99_gui_cpu_ms``: what a fix can remove).

``--profile N``: every event-loop step runs under cProfile (the GUI thread only) and the N steps with the most
GUI-thread CPU are printed to stderr (when in the run, which tab showed, which job ran, the top functions).

    python benchmarks/bench_gui_stall.py [--json] [--epochs 3] [--job finetune|scan|compress] [--tabs]
                                         [--profile N] [--quick]

``--quick``: one epoch (the test suite runs it).
"""
from __future__ import annotations

import argparse
import heapq
import io
import os
import statistics
import sys
import time

import _common  # noqa: F401

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SETTLE_S = 0.5     # the loop goes on this long after the job queue empties (end-of-job work is counted)


def start_job(win, s, job: str, epochs: int) -> None:
    if job == "finetune":
        win.finetune_panel.epochs.setValue(epochs)
        win.finetune_panel.start()
    elif job == "scan":
        win.sensitivity_panel.start_scan()
    elif job == "compress":
        s.apply()
        win.compress_panel.start()
    else:
        raise SystemExit(f"--job {job}: use finetune, scan or compress")
    if not (win.runner.busy or win.runner.queue):
        raise SystemExit(f"the {job} job did not start: {win.last_error}")


def top_functions(prof, n: int = int(os.environ.get("STALL_PROFILE_LINES", 14))) -> str:
    import pstats
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(n)
    lines = out.getvalue().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip().startswith("ncalls")), 0)
    return "\n".join(lines[start:start + n + 1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default="digits-cnn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--job", default="finetune", choices=("finetune", "scan", "compress"))
    ap.add_argument("--tabs", action="store_true", help="also switch tabs every 0.5 s")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="cProfile the GUI thread; print the N costliest event-loop steps to stderr")
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
    win = MainWindow(s, deferred=True)     # as ``pruning-explorer gui`` starts it (gui/window/startup.py)
    win.ask_before_closing = False
    win.resize(1440, 900)
    win.show()
    for _ in range(20):
        app.processEvents()
    win.finish_start()
    while win.runner.busy or win.runner.queue:     # the channel-group analysis the start queues
        app.processEvents()
        time.sleep(0.005)
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
    start_job(win, s, args.job, args.epochs)
    timer.start()
    last[0] = time.perf_counter()
    t0 = time.perf_counter()
    name = s.layer_names[1]
    slider = win.table._editors[name][0]
    v = 0
    next_drag = next_tab = t0
    cpu = []                             # the GUI thread's CPU time per step of this loop
    worst: list = []                     # (cpu ms, seq, description, profile) of the costliest steps
    idle_since = None
    while True:
        busy = win.runner.busy or bool(win.runner.queue)
        if busy:
            idle_since = None
        elif idle_since is None:
            idle_since = time.perf_counter()
        elif time.perf_counter() - idle_since >= SETTLE_S:
            break
        what = (f"t={time.perf_counter() - t0:.2f}s tab={win.tabs.tabText(win.tabs.currentIndex())} "
                f"job={win.runner.current.title if win.runner.current else '-'}")
        prof = None
        if args.profile:
            import cProfile
            prof = cProfile.Profile(time.thread_time)
        c = time.thread_time()
        if prof:
            prof.enable()
        app.processEvents()
        if time.perf_counter() >= next_drag:
            v = (v + 37) % 1000
            slider.setValue(v / 10)      # percent; the user keeps exploring while the job runs
            next_drag = time.perf_counter() + 0.05
        if args.tabs and time.perf_counter() >= next_tab:
            win.tabs.setCurrentIndex((win.tabs.currentIndex() + 1) % win.tabs.count())
            next_tab = time.perf_counter() + 0.5
        if prof:
            prof.disable()
        ms = (time.thread_time() - c) * 1000
        cpu.append(ms)
        if prof:
            item = (ms, len(cpu), what, prof)
            if len(worst) < args.profile:
                heapq.heappush(worst, item)
            elif ms > worst[0][0]:
                heapq.heapreplace(worst, item)
        time.sleep(0.001)
    timer.stop()
    elapsed = time.perf_counter() - t0
    gaps = gaps[1:] or [0.0]
    payload = {"max_stall_ms": max(gaps), "p99_gap_ms": sorted(gaps)[int(0.99 * (len(gaps) - 1))],
               "median_gap_ms": statistics.median(gaps), "ticks": len(gaps), "job_s": elapsed,
               "job": args.job, "epochs": args.epochs, "tabs": args.tabs, "max_gui_cpu_ms": max(cpu or [0.0]),
               "p99_gui_cpu_ms": sorted(cpu or [0.0])[int(0.99 * (len(cpu or [0.0]) - 1))],
               "steps_over_25ms": sum(1 for c in cpu if c > 25), "machine": _common.machine()}
    for ms, _, what, prof in sorted(worst, reverse=True):
        print(f"\n=== GUI step {ms:.1f} ms cpu, {what}\n{top_functions(prof)}", file=sys.stderr)
    _common.emit(args, [[args.model, args.job, args.epochs, f"{elapsed:.1f}", len(gaps),
                         f"{payload['median_gap_ms']:.1f}", f"{payload['p99_gap_ms']:.1f}",
                         f"{payload['max_stall_ms']:.1f}", f"{payload['p99_gui_cpu_ms']:.1f}",
                         f"{payload['max_gui_cpu_ms']:.1f}"]],
                 ["model", "job", "epochs", "job s", "ticks", "median gap ms", "p99 gap ms", "max stall ms",
                  "p99 GUI cpu ms", "max GUI cpu ms"], payload)
    win.close()


if __name__ == "__main__":
    main()
