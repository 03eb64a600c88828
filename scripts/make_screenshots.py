"""Render the README/docs screenshots offscreen by driving the real window.

    .venv/bin/python scripts/make_screenshots.py [OUT_DIR]   (default: docs/)
    .venv/bin/python scripts/make_screenshots.py docs compress   (only docs/compress.png)
    .venv/bin/python scripts/make_screenshots.py docs classroom  (only docs/lesson-step.png, docs/presentation.png)
    .venv/bin/python scripts/make_screenshots.py docs speed      (only docs/speed-map.png)

Each picture is a state a user reaches by hand: masks of the three granularity families on a conv
layer, a sensitivity scan with its allocation, fine-tuning curves, the latency comparison, and criteria
compared side by side.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def open_window(out: Path):
    """The real window on digits-cnn at 1440x900 (settings kept in ``out``), and ``shot(name)``: wait for its
    jobs, let it paint, save ``out/name.png``."""
    from PySide6.QtCore import QSettings

    from explorer.core.session import Session
    from explorer.gui.window.app import make_app, wait_idle
    from explorer.gui.window.main_window import MainWindow

    app = make_app()
    settings = QSettings(str(out / ".screenshot-settings.ini"), QSettings.IniFormat)
    win = MainWindow(Session.open("digits-cnn"), settings=settings)
    win.ask_before_closing = False
    win.resize(1440, 900)
    win.show()
    wait_idle(app, win)
    win.split_views()

    def shot(name: str) -> None:
        wait_idle(app, win)
        for _ in range(10):
            app.processEvents()
            time.sleep(0.02)
        win.grab().save(str(out / f"{name}.png"))
        print("saved", out / f"{name}.png")

    return app, win, shot


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    out.mkdir(parents=True, exist_ok=True)
    from explorer.gui.window.app import wait_idle

    app, win, shot = open_window(out)
    s = win.session

    layer = "backbone.conv3"
    s.select(layer)
    for gran, sp, name, detail in (("element", 0.7, "mask-element", False), ("channel", 0.5, "mask-channel", False),
                                   ("2:4", 0.5, "mask-2of4", True)):
        s.set_layer(layer, sparsity=sp, granularity=gran)
        win.weight_view.detail_btn.setChecked(detail)
        win.tabs.setCurrentWidget(win.weight_view)
        shot(name)
    win.weight_view.detail_btn.setChecked(False)
    s.set_plan(type(s.plan)())

    # sensitivity scan, then allocate for <= 1 point per layer, then evaluate
    p = win.sensitivity_panel
    win.tabs.setCurrentWidget(p)
    p.start_scan()
    wait_idle(app, win)
    p.alloc.value.setValue(1.0)
    p.alloc.allocate()
    win.measure.evaluate()
    shot("sensitivity")

    # fine-tune the allocation
    f = win.finetune_panel
    win.tabs.setCurrentWidget(f)
    f.epochs.setValue(3)
    f.start()
    wait_idle(app, win)
    shot("finetune")
    # the README's picture: the fine-tuned allocation, its mask on a conv layer
    s.select(layer)
    win.tabs.setCurrentWidget(win.weight_view)
    shot("screenshot")

    # channel pruning: latency of dense vs masked vs compacted
    s.set_uniform(s.layer_names, 0.5, "channel")
    win.latency_panel.batch.setValue(32)
    win.latency_panel.runs.setValue(30)
    win.tabs.setCurrentWidget(win.latency_panel)
    win.measure.measure_latency()
    shot("latency")
    win.measure.evaluate()
    win.tabs.setCurrentWidget(win.history_panel)
    shot("history")

    # the three schedules on one chart: 90 % in every layer from the dense model, 6 epochs each
    f = win.finetune_panel
    f.clear_charts()
    for schedule in ("oneshot", "iterative", "agp"):
        s.reset()
        s.set_uniform(s.layer_names, 0.9)
        f.schedule.setCurrentText(schedule)
        f.steps.setValue(3)
        f.epochs.setValue(2 if schedule == "iterative" else 6)
        win.tabs.setCurrentWidget(f)
        f.start()
        wait_idle(app, win)
    shot("finetune-schedules")
    # criteria compared on the same plan: one-shot dashed, fine-tuned solid
    s.set_plan(type(s.plan)())
    c = win.compare_panel
    for name, box in c.boxes.items():
        box.setChecked(name in ("l1", "taylor", "hessian", "wanda"))
    c.sparsities.setText("0.5,0.7,0.9")
    c.epochs.setValue(2)
    win.tabs.setCurrentWidget(c)
    c.start()
    shot("criteria")
    compress_shot(app, win, shot)
    (out / ".screenshot-settings.ini").unlink(missing_ok=True)
    win.close()
    classroom_shots(out)


def classroom_shots(out: Path) -> None:
    """The classroom at projector resolution (1024x768): a lesson step with its live numbers (lesson-step.png) and
    presentation mode on another lesson's step (presentation.png). Each in a fresh window, as `gui --lesson`
    and `gui --presentation` open them."""
    from PySide6.QtCore import QSettings

    from explorer.core.model.loading import resolve
    from explorer.core.session import Session
    from explorer.gui.window.app import make_app, wait_idle
    from explorer.gui.window.main_window import MainWindow

    app = make_app()
    for name, lesson, step, presentation in (("lesson-step", "magnitude", 3, False),
                                             ("presentation", "granularity", 4, True)):
        settings = QSettings(str(out / ".screenshot-settings.ini"), QSettings.IniFormat)
        s = Session()
        s.apply_load(resolve("digits-cnn", None))
        win = MainWindow(s, settings=settings)
        win.ask_before_closing = False
        win.resize(1024, 768)
        if presentation:
            win.classroom.presentation.set_on(True)
        win.classroom.open(lesson, step - 1)
        win.show()
        panel = win.classroom.panel
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:      # the step's numbers are measured live: wait for them
            wait_idle(app, win)
            if "…" not in panel.text.text():
                break
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        assert win.width() == 1024 and win.height() == 768, win.size()
        win.grab().save(str(out / f"{name}.png"))
        print("saved", out / f"{name}.png")
        win.close()
        (out / ".screenshot-settings.ini").unlink(missing_ok=True)


def compress_shot(app, win, shot) -> None:
    """Deep Compression on digits-mlp (the benchmark's settings with 30 instead of 100 AGP epochs, where training the
    shared values helps): 95 % global + AGP fine-tuning, then 4-bit shared weights (5 for fc1) trained for 10 epochs
    and Huffman-coded."""
    from explorer.gui.window.app import wait_idle

    win.load_model("digits-mlp")
    wait_idle(app, win)
    s = win.session
    s.set_global(s.layer_names, 0.95, max_layer_sparsity=0.99)
    f = win.finetune_panel
    f.optimizer.setCurrentText("adam")
    f.lr.setValue(0.002)
    f.schedule.setCurrentText("agp")
    f.epochs.setValue(30)
    f.start()
    wait_idle(app, win)
    p = win.compress_panel
    win.tabs.setCurrentWidget(p)
    p.linear_bits.setValue(4)
    p.table.cellWidget(0, 2).setValue(5)
    p.epochs.setValue(10)
    p.start()
    wait_idle(app, win)
    s.select("fc1")
    win.main_split.setSizes([520, 920])
    shot("compress")


def compress_only(out: Path) -> None:
    """Only docs/compress.png: ``scripts/make_screenshots.py docs compress``."""
    app, win, shot = open_window(out)
    compress_shot(app, win, shot)
    (out / ".screenshot-settings.ini").unlink(missing_ok=True)
    win.close()


def speed_only(out: Path) -> None:
    """Only docs/speed-map.png: digits-vgg, every layer's speed map at batch 1, backbone.conv5 at 90 % selected."""
    from explorer.gui.window.app import wait_idle

    app, win, shot = open_window(out)
    win.finish_start()
    win.load_model("digits-vgg")
    wait_idle(app, win)
    s = win.session
    win.resize(1800, 950)
    s.set_layer("backbone.conv5", sparsity=0.9)
    s.select("backbone.conv5")
    panel = win.latency_panel
    panel.batch.setValue(1)
    panel.threads.setValue(1)        # one thread: steadier medians on a shared machine
    win.tabs.setCurrentWidget(panel)
    panel.parts.setCurrentWidget(panel.speed_map)
    panel.speed_map.measure(all_layers=True)
    wait_idle(app, win)
    win.main_split.setSizes([1150, 650])
    shot("speed-map")
    (out / ".screenshot-settings.ini").unlink(missing_ok=True)
    win.close()


if __name__ == "__main__":
    if sys.argv[2:] == ["compress"]:
        compress_only(Path(sys.argv[1]))
    elif sys.argv[2:] == ["speed"]:
        speed_only(Path(sys.argv[1]))
    elif sys.argv[2:] == ["classroom"]:
        classroom_shots(Path(sys.argv[1]))
    else:
        main()
