"""Soak the real window: a seeded driver performs thousands of mixed actions, as a user would, and watches
for exceptions, unexpected dialogs and the growth of widgets, QObjects, Python objects, threads, file
descriptors and RSS (issue 16: the window died after ~340 actions on a Qt binding that leaked references).

    .venv/bin/python scripts/soak.py [--minutes 10 | --actions N] [--seed 0] [--json OUT.json]

Prints a table of each resource's growth per 100 actions (least-squares slope after a warm-up) and exits
non-zero when a slope exceeds its limit. ``tests/test_soak.py`` runs a short version in ``make test``.
Actions never block: jobs are waited for by polling the event loop, dialogs are answered like a user.
"""
from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# growth per 100 actions above which a resource counts as leaking. One leaked error dialog per action is
# +600 widgets, +1,800 QObjects and ~45 MB of RSS per 100 actions; a normal run stays near zero.
LIMITS = {"widgets": 5.0, "qobjects": 20.0, "pyobjects": 1500.0, "threads": 0.5, "fds": 0.5, "rss_mb": 3.0,
          "none_refs": -50.0}
# None's refcount may rise (PySide6 6.11.3 adds 8 references per pyqtgraph repaint and never drops them: no
# memory, None is never freed) but must never fall: a falling count is the 6.12.0 bug that aborts the process.
# A short run (the test's 360 actions) is still inside the warm-up of bounded caches (the History's 4 MiB of
# states before it spills to disk, glibc arenas, pyqtgraph's pixmaps): +6 MB per 100 actions at 360 actions
# that levels off (2,500 actions: -0.5 MB per 100). Short runs judge RSS loosely (a leaked model copy per
# action, +45 MB per 100 for a leaked error dialog, still fails); widgets and QObjects are judged tightly at every
# length. The same seeded 360 actions read +3.3 to +26.1 MB per 100 by least squares in fresh processes on one day
# (allocator steps; 16.1 and 26.1 beside the other test worker), and +9.3 / +12.8 by the median pairwise slope used
# now: a short run cannot tell a slow leak (a model copy per action, +27) from that spread -- the long soak
# (1,000+ actions, limit +3) does.
SHORT_RUN_ACTIONS = 1000
SHORT_RUN_RSS_MB = 30.0
# Python objects level off later still (pyqtgraph's item caches, the History's entries, torch's dispatcher
# caches): 360 actions measured up to +1,561 per 100 on the CI machine, 2,500 actions +78. Leaked widgets and
# QObjects are still judged tightly in short runs.
SHORT_RUN_PYOBJECTS = 4000.0
WARMUP = 0.25          # share of the run before slopes are measured (after every action ran once: caches fill)
JOB_TIMEOUT_S = 120


@dataclass
class Report:
    actions: int = 0
    seconds: float = 0.0
    counts: dict = field(default_factory=dict)          # action name -> times performed
    samples: list = field(default_factory=list)         # (action index, {resource: value})
    qobjects: list = field(default_factory=list)        # (action index, QObjects) after the warm-up and at the end
    exceptions: list = field(default_factory=list)
    unexpected_dialogs: list = field(default_factory=list)
    expected_errors: int = 0

    def slopes(self) -> dict[str, float]:
        """Growth per 100 actions after the warm-up: least squares (RSS: the median pairwise slope)."""
        pts = [s for s in self.samples if s[0] >= WARMUP * self.actions]
        out = {}
        if len(pts) < 3:
            return out
        xs = [p[0] for p in pts]
        mx = sum(xs) / len(xs)
        var = sum((x - mx) ** 2 for x in xs) or 1.0
        for k in pts[0][1]:
            ys = [p[1][k] for p in pts]
            my = sum(ys) / len(ys)
            out[k] = 100.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var
        if "rss_mb" in pts[0][1]:
            # RSS moves in steps (an allocator arena, a cache growing once): the median of the pairwise slopes
            # (Theil-Sen) reads a step as a step, and a leak that grows with every action as its slope
            ys = [p[1]["rss_mb"] for p in pts]
            pair = sorted((ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs))
                          if xs[j] > xs[i])
            out["rss_mb"] = 100.0 * pair[len(pair) // 2]
        if len(self.qobjects) == 2 and self.qobjects[1][0] > self.qobjects[0][0]:
            (i0, q0), (i1, q1) = self.qobjects
            out["qobjects"] = 100.0 * (q1 - q0) / (i1 - i0)
        return out

    def limits(self) -> dict[str, float]:
        if self.actions < SHORT_RUN_ACTIONS:
            return {**LIMITS, "rss_mb": SHORT_RUN_RSS_MB, "pyobjects": SHORT_RUN_PYOBJECTS}
        return dict(LIMITS)

    def failures(self) -> list[str]:
        lim = self.limits()
        bad = [f"{k}: {v:+.2f} per 100 actions (limit {lim[k]:+})" for k, v in self.slopes().items()
               if (v < lim[k] if lim[k] < 0 else v > lim[k])]
        bad += [f"exception: {e}" for e in self.exceptions]
        bad += [f"unexpected dialog: {d}" for d in self.unexpected_dialogs]
        return bad

    def as_dict(self) -> dict:
        first, last = (self.samples[0][1], self.samples[-1][1]) if self.samples else ({}, {})
        return {"actions": self.actions, "seconds": round(self.seconds, 1), "counts": self.counts,
                "per_100_actions": {k: round(v, 3) for k, v in self.slopes().items()},
                "first": first, "last": last, "qobjects": self.qobjects, "exceptions": self.exceptions,
                "unexpected_dialogs": self.unexpected_dialogs, "expected_errors": self.expected_errors,
                "failures": self.failures()}


def flush_deletes(app) -> None:
    """Run the deleteLater()s that a real event loop would have run by now (processEvents() alone does not)."""
    from PySide6.QtCore import QEvent

    app.sendPostedEvents(None, QEvent.DeferredDelete)


def count_qobjects(app) -> int:
    """QObjects in every top-level window's tree. Counting makes Python wrappers for all of them, which stay
    attached to their window's wrapper after the objects die: so it is done only twice per run (after the
    warm-up and at the end), or it would itself look like a Python-object leak."""
    from PySide6.QtCore import QObject

    flush_deletes(app)
    tops = app.topLevelWidgets()
    return len(tops) + sum(len(w.findChildren(QObject)) for w in tops)


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so RSS shows what is held, not allocator slack."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def resources(app, win) -> dict[str, float]:
    flush_deletes(app)
    gc.collect()
    _trim_heap()
    statm = Path("/proc/self/statm")
    rss = int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20 if statm.exists() else 0.0
    fd_dir = Path("/proc/self/fd")
    tasks = Path("/proc/self/task")
    return {"widgets": len(app.allWidgets()), "pyobjects": len(gc.get_objects()),
            "threads": len(list(tasks.iterdir())) if tasks.exists() else threading.active_count(),
            "fds": len(list(fd_dir.iterdir())) if fd_dir.exists() else 0, "rss_mb": rss,
            "none_refs": sys.getrefcount(None)}


class Driver:
    """Performs one random action at a time on a MainWindow."""

    def __init__(self, app, win, seed: int, folder: Path):
        self.app, self.win, self.rng, self.folder = app, win, random.Random(seed), folder
        self.tab_rng = random.Random(seed + 1)   # tabs drawn apart: adding a tab does not reshuffle every action
        self.report = Report()
        self.expect_error = False
        self.actions = [  # (weight, name, method)
            (18, "drag", self.drag), (6, "granularity", self.granularity), (5, "criterion", self.criterion),
            (6, "apply", self.apply), (6, "undo", self.undo), (4, "redo", self.redo), (2, "reset", self.reset),
            (4, "many", self.many), (5, "select", self.select), (6, "tab", self.tab), (3, "view", self.view_toggle),
            (5, "evaluate", self.evaluate), (2, "latency", self.latency), (3, "finetune", self.finetune),
            (2, "cancel", self.cancel_finetune), (2, "scan", self.scan), (2, "export", self.export),
            (2, "history", self.history), (3, "error", self.error), (1, "model", self.switch_model),
            (1, "help", self.help), (1, "reconstruct", self.reconstruct), (1, "compare", self.compare),
        ]
        self._weights = [a[0] for a in self.actions]

    # ------------------------------------------------------------------ helpers
    def pump(self, ms: int = 0) -> None:
        end = time.monotonic() + ms / 1000
        while True:
            self.app.processEvents()
            if time.monotonic() >= end:
                break
            time.sleep(0.002)

    def wait_jobs(self) -> None:
        end = time.monotonic() + JOB_TIMEOUT_S
        while (self.win.runner.busy or self.win.runner.queue) and time.monotonic() < end:
            self.app.processEvents()
            time.sleep(0.003)
        if self.win.runner.busy:
            self.report.exceptions.append(f"a job ran longer than {JOB_TIMEOUT_S} s")
            self.win.runner.cancel()
        self.pump(5)

    def answer_dialogs(self, what: str) -> None:
        from PySide6.QtWidgets import QMessageBox

        for box in [b for b in self.win.findChildren(QMessageBox) if b.isVisible()]:
            text = f"{box.windowTitle()}: {box.informativeText() or box.text()}"[:200]
            if self.expect_error:
                self.report.expected_errors += 1
            else:
                self.report.unexpected_dialogs.append(f"after {what}: {text}")
            ok = box.button(QMessageBox.Ok) or box.defaultButton()
            (ok.click() if ok is not None else box.done(0))
        self.expect_error = False
        self.pump(1)

    @property
    def session(self):
        return self.win.session

    def layer(self) -> str:
        return self.rng.choice(self.session.layer_names)

    # ------------------------------------------------------------------ actions
    def drag(self):
        ed = self.win.table.editor(self.layer())[0]
        ed.setSliderDown(True)
        for _ in range(self.rng.randint(2, 6)):
            ed.setValue(self.rng.uniform(0, 95))
            self.pump(1)
        ed.setSliderDown(False)
        ed.sliderReleased.emit()

    def granularity(self):
        name = self.layer()
        combo = self.win.table.editor(name)[1]
        model = combo.model()
        allowed = [i for i in range(combo.count()) if model.item(i).isEnabled()]
        combo.setCurrentIndex(self.rng.choice(allowed))

    def criterion(self):
        editors = self.win.table.editor(self.layer())
        combo = editors[2]
        model = combo.model()
        allowed = [i for i in range(combo.count()) if model.item(i).isEnabled()]
        # KNOWN (issue 24 note): a channel row's criterion combo can still offer sparsegpt (its check waits for the
        # channel groups and is not always redone after them); picking it gets the app's one-sentence refusal,
        # which a user answers like any other -- counted as expected until the combo greys it out
        self.expect_error = editors[1].currentText() == "channel"
        combo.setCurrentIndex(self.rng.choice(allowed))
        self.wait_jobs()             # data criteria rank in a worker the first time

    def reconstruct(self):
        box = self.win.reconstruct.box
        box.setChecked(True)
        self.apply()
        box.setChecked(False)

    def compare(self):
        p = self.win.compare_panel
        for name, b in p.boxes.items():
            b.setChecked(name in ("l1", "wanda"))
        p.sparsities.setText(self.rng.choice(["0.5", "0.8"]))
        p.epochs.setValue(0)
        p.reconstruct.setChecked(self.rng.random() < 0.3)
        p.start()
        if self.rng.random() < 0.3:
            self.pump(self.rng.randint(5, 60))
            self.win.runner.cancel()
        self.wait_jobs()

    def apply(self):
        if self.win.act_apply.isEnabled():
            self.win.act_apply.trigger()
            self.wait_jobs()

    def undo(self):
        self.win.act_undo.trigger()

    def redo(self):
        self.win.act_redo.trigger()

    def reset(self):
        self.win.act_reset.trigger()

    def many(self):
        gp = self.win.global_panel
        gp.editor.set_sparsity(round(self.rng.uniform(0.1, 0.9), 2))
        gp.scope.setCurrentText(self.rng.choice(["local", "global"]))
        gp.gran.setCurrentText(self.rng.choice(["element", "vector", "channel"]))
        gp.set_btn.click()

    def select(self):
        self.session.select(self.layer())

    def tab(self):
        self.win.tabs.setCurrentIndex(self.tab_rng.randrange(self.win.tabs.count()))

    def view_toggle(self):
        wv = self.win.weight_view
        self.rng.choice([wv.abs_box, wv.log_box, wv.detail_btn]).toggle()

    def evaluate(self):
        self.win.measure.evaluate()
        self.wait_jobs()

    def latency(self):
        self.win.settings.setValue("latency/runs", 3)
        self.win.measure.measure_latency()
        self.wait_jobs()

    def _start_finetune(self):
        p = self.win.finetune_panel
        p.epochs.setValue(1)
        p.schedule.setCurrentText(self.rng.choice(["oneshot", "iterative", "agp"]))
        p.steps.setValue(2)
        p.start()

    def finetune(self):
        self._start_finetune()
        self.wait_jobs()

    def cancel_finetune(self):
        self._start_finetune()
        self.pump(self.rng.randint(5, 120))
        self.win.runner.cancel()
        self.wait_jobs()
        keep = self.win.finetune_panel.keep_btn
        if keep.isVisible() and self.rng.random() < 0.5:
            keep.click()
            self.wait_jobs()

    def scan(self):
        p = self.win.sensitivity_panel
        p.sparsities.setText("0.5,0.9")
        p.only_selected.setChecked(True)
        self.win.table.select_layer(self.layer())
        self.win.table.selectRow(self.win.table.currentRow())
        p.start_scan()
        self.wait_jobs()
        if p.result is not None and self.rng.random() < 0.5:
            p.alloc.allocate()

    def export(self, kind: str | None = None):
        kind = kind or self.rng.choice(["checkpoint", "recipe", "everything"])
        if kind == "checkpoint":
            self.win.exports.checkpoint(str(self.folder / "model.pt"))
        elif kind == "recipe":
            self.win.exports.recipe(str(self.folder / "recipe.json"))
        else:
            self.win.exports.everything(str(self.folder / "bundle"))
        self.wait_jobs()

    def history(self):
        n = len(self.session.history)
        if n:
            self.win.history_panel.restore_row(self.rng.randrange(n))
            self.wait_jobs()

    def error(self):
        """Mistakes a user makes: each must be one clear dialog, answered with OK, and leave nothing behind."""
        self.expect_error = True
        choice = self.rng.choice(["recipe", "granularity", "file"])
        if choice == "recipe":
            bad = self.folder / "bad.json"
            bad.write_text("{not json")
            self.win.open_recipe(str(bad))
        elif choice == "granularity":
            linear = [l.name for l in self.session.layers if not l.is_conv] or self.session.layer_names
            self.win.table._granularity_edited(self.rng.choice(linear), "kernel")
        else:
            self.win.open_model_file(str(self.folder / "missing.pt"), ask=False)
            self.wait_jobs()

    def switch_model(self):
        self.win.load_model(self.rng.choice(["digits-cnn", "digits-mlp"]))
        self.wait_jobs()

    def help(self):
        from explorer.gui.window import help as help_dialogs

        box = self.rng.choice([help_dialogs.show_concepts, help_dialogs.show_about])(self.win)
        self.pump(1)
        box.done(0)

    # ------------------------------------------------------------------ the run
    def warm_up(self) -> None:
        """Every action once (every export kind too), before anything is measured: the first use of a feature
        imports modules and fills caches once, which is not growth. Exceptions here count like any other."""
        steps = [(name, fn) for _, name, fn in self.actions if name != "export"]
        steps += [(f"export {k}", lambda k=k: self.export(k)) for k in ("checkpoint", "recipe", "everything")]
        for name, fn in steps:
            arm_watchdog()
            try:
                fn()
                self.pump(1)
            except Exception as e:
                self.report.exceptions.append(f"warm-up {name}: {type(e).__name__}: {e}")
            self.answer_dialogs(f"warm-up {name}")
            self.wait_jobs()

    def run(self, actions: int | None = None, seconds: float | None = None, sample_every: int = 25,
            progress=None) -> Report:
        self.warm_up()
        t0 = time.monotonic()
        r = self.report
        i = 0
        r.samples.append((0, resources(self.app, self.win)))
        while (actions is None or i < actions) and (seconds is None or time.monotonic() - t0 < seconds):
            w, name, fn = self.rng.choices(self.actions, weights=self._weights)[0]
            arm_watchdog()
            try:
                fn()
                self.pump(1)
            except Exception as e:  # an action that raises is a failure of the app, not of the driver
                r.exceptions.append(f"{name}: {type(e).__name__}: {e}")
            self.answer_dialogs(name)
            i += 1
            r.counts[name] = r.counts.get(name, 0) + 1
            if i % sample_every == 0:
                self.wait_jobs()
                r.samples.append((i, resources(self.app, self.win)))
                if progress:
                    progress(i, r.samples[-1][1])
                if not r.qobjects and (i >= WARMUP * (actions or 0) if actions else
                                       time.monotonic() - t0 >= WARMUP * (seconds or 0)):
                    r.qobjects.append((i, count_qobjects(self.app)))
        self.wait_jobs()
        faulthandler.cancel_dump_traceback_later()
        if r.qobjects:
            r.qobjects.append((i, count_qobjects(self.app)))
        r.actions = i
        r.seconds = time.monotonic() - t0
        return r


HANG_S = 180     # no action (with the jobs it starts) takes this long; one that does is a hang


def arm_watchdog() -> None:
    """(Re-)arm the hang watchdog for the next action: past HANG_S, every thread's stack goes to stderr and the
    process exits 1. A deadlock is a failure with the stacks that show it, not a soak that never ends (a
    lock-order deadlock between a ranking worker and the GUI thread hung seed 23 once)."""
    faulthandler.dump_traceback_later(HANG_S, exit=True)


def install_exception_hook(report: Report):
    """Exceptions raised in Qt slots and psygnal callbacks reach sys.excepthook: record them."""
    previous = sys.excepthook

    def hook(tp, value, tb):
        report.exceptions.append(f"{tp.__name__}: {value}")
        previous(tp, value, tb)
    sys.excepthook = hook
    return previous


def soak(actions: int | None = None, seconds: float | None = None, seed: int = 0, progress=None) -> Report:
    import torch
    from PySide6.QtCore import QSettings

    from explorer.core.session import Session
    from explorer.gui.window.app import make_app
    from explorer.gui.window.main_window import MainWindow

    torch.set_num_threads(1)
    app = make_app()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        folder = Path(tmp)
        win = MainWindow(Session.open("digits-cnn"), settings=QSettings(str(folder / "s.ini"), QSettings.IniFormat))
        win.ask_before_closing = False
        win.resize(1280, 800)
        win.show()
        driver = Driver(app, win, seed, folder)
        previous = install_exception_hook(driver.report)
        try:
            return driver.run(actions=actions, seconds=seconds, progress=progress)
        finally:
            sys.excepthook = previous
            win.runner.cancel()
            win.close()
            win.deleteLater()
            app.processEvents()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--actions", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, metavar="OUT.json", help="also write the report as JSON")
    args = ap.parse_args()
    seconds = args.minutes * 60 if args.minutes else None
    actions = args.actions if args.actions or seconds else 2000

    def progress(i, res):
        print(f"{i:6d} actions  " + "  ".join(f"{k} {v:.0f}" for k, v in res.items()), file=sys.stderr, flush=True)

    r = soak(actions=actions, seconds=seconds, seed=args.seed, progress=progress)
    d = r.as_dict()
    print(f"{d['actions']} actions in {d['seconds']} s; {d['expected_errors']} expected error dialogs answered")
    print(f"{'resource':10s} {'first':>10s} {'last':>10s} {'per 100 actions':>16s} {'limit':>8s}")
    first, last = dict(d["first"]), dict(d["last"])
    if d["qobjects"]:
        first["qobjects"], last["qobjects"] = d["qobjects"][0][1], d["qobjects"][-1][1]
    for k, v in d["per_100_actions"].items():
        print(f"{k:10s} {first[k]:10.1f} {last[k]:10.1f} {v:16.3f} {r.limits()[k]:8.1f}")
    for f in d["failures"]:
        print("FAIL", f)
    if args.json:
        Path(args.json).write_text(json.dumps(d, indent=2) + "\n")
    return 1 if d["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
