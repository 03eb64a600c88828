"""The classroom features in the window: lessons, presentation mode, pruning by hand from the heatmap."""
from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")


from explorer.core.lessons import steps, values  # noqa: E402
from explorer.core.lessons.lesson import lesson_names, load_lesson  # noqa: E402
from explorer.core.session import Session  # noqa: E402

from .gui_helpers import open_window, wait_jobs  # noqa: E402


@pytest.fixture
def win(qtbot, tmp_path):
    with open_window(qtbot, tmp_path, Session.open("digits-cnn"), size=(1280, 800)) as w:
        yield w


def test_lesson_walks_forward_and_back_with_live_numbers(win, qtbot):
    panel = win.classroom.panel
    assert win.classroom.open("magnitude")
    assert panel.isVisible() and panel.index == 0
    wait_jobs(qtbot, win)
    panel.next()
    wait_jobs(qtbot, win)
    s = win.session
    assert s.plan.get("backbone.conv3").sparsity == 0.5 and s.selected == "backbone.conv3"
    assert win.tabs.currentWidget() is win.weight_view
    qtbot.waitUntil(lambda: "…" not in panel.text.text(), timeout=30_000)
    text = panel.text.text()
    # the numbers shown are the session's: threshold from the mask, accuracy from the measurement just made
    assert values.formatted(s, "threshold") in text
    assert f"{s.measurements.current.value.accuracy:.2f} %" in text
    assert f"{s.measurements.dense.accuracy:.2f} %" in text
    assert len(win.classroom.panel.highlight.frames) == 0 or all(f.isVisible() for _, f in panel.highlight.frames)
    # the user drags the layer's slider: the text follows without a new step
    s.set_layer("backbone.conv3", 0.8)
    qtbot.waitUntil(lambda: "80.0%" in panel.text.text(), timeout=10_000)
    panel.back()
    assert panel.index == 0 and not s.plan.active()
    # leave and resume at the same step
    panel.next()
    panel.leave()
    assert not panel.isVisible()
    win.classroom.resume()
    assert panel.isVisible() and panel.index == 1
    wait_jobs(qtbot, win)


@pytest.mark.parametrize("name", lesson_names())
def test_every_lesson_opens_every_step_in_the_window(win, qtbot, name, short_tiny_text):
    panel = win.classroom.panel
    lesson = load_lesson(name)
    win.settings.setValue("latency/runs", 3)   # as test_lessons.py measures: 3 timed runs (30 by default) suffice here
    if lesson.model == "tiny-lm":              # as test_lessons.py: 32 calibration blocks of text, not 128
        win.session.set_calibration_samples(32)
    assert win.classroom.open(name)
    for i in range(len(lesson.steps)):
        panel.go(i)
        wait_jobs(qtbot, win, 180_000)
        st = lesson.steps[i]
        assert win.session.model_spec == (st.model or lesson.model)
        if st.tab:
            assert win.tabs.tabText(win.tabs.currentIndex()).lower() == st.tab
        qtbot.waitUntil(lambda: "…" not in panel.text.text(), timeout=60_000)   # measured by the bar itself
        r = steps.render(win.session, st)
        assert not r.pending
        for key, value in r.numbers().items():
            assert f"<b>{value}</b>" in panel.text.text()
    assert win.last_error is None, win.last_error


def test_cli_lesson_and_step_open_in_the_window(tmp_path, capsys):
    from explorer.cli import main

    out = tmp_path / "lesson.png"
    assert main(["gui", "--lesson", "granularity", "--step", "2", "--presentation", "--size", "1024x768",
                 "--screenshot", str(out)]) == 0
    assert out.exists() and out.stat().st_size > 10_000
    assert main(["gui", "--lesson", "granularity", "--step", "9", "--screenshot", str(out)]) == 2
    assert "outside 1-5" in capsys.readouterr().err
    assert main(["gui", "--lesson", "nope", "--screenshot", str(out)]) == 2
    assert "no lesson 'nope'" in capsys.readouterr().err


def test_presentation_mode_scales_hides_and_fits_1024x768(win, qtbot):
    pres = win.classroom.presentation
    base = win.dashboard.cards["accuracy"].value.font().pointSizeF()
    win.act_presentation.trigger()
    assert pres.on and win.act_presentation.isChecked()
    qtbot.wait(50)
    assert win.dashboard.cards["accuracy"].value.font().pointSizeF() >= 1.5 * base - 0.01
    assert win.table.font().pointSizeF() >= 15.0
    assert win.table.isColumnHidden(win.table.column_index("MACs"))
    assert not win.global_panel.box.isVisible()
    win.resize(1024, 768)
    for i in range(win.tabs.count()):
        win.tabs.setCurrentIndex(i)
        qtbot.wait(20)
        hint = win.minimumSizeHint()
        assert hint.width() <= 1024 and hint.height() <= 768, (win.tabs.tabText(i), hint)
        assert win.width() == 1024 and win.height() == 768
    win.tabs.setCurrentWidget(win.weight_view)
    pres.restyle_plots()
    assert win.weight_view.tline_pos.pen.widthF() >= 4
    # the layer table's slider keeps a usable width
    assert win.table.columnWidth(win.table.column_index("Sparsity %")) >= 150
    win.act_presentation.trigger()
    assert not pres.on and not win.table.isColumnHidden(win.table.column_index("MACs"))
    assert win.weight_view.tline_pos.pen.widthF() == 2


def test_click_on_the_heatmap_prunes_and_restores_by_hand(win, qtbot):
    s = win.session
    s.select("backbone.conv2")
    win.weight_view.clicked.emit(7, 0, False)        # a channel row
    lp = s.plan.get("backbone.conv2")
    assert lp.criterion == "manual" and lp.units == (7,) and lp.granularity == "channel"
    qtbot.waitUntil(lambda: win.table.editor("backbone.conv2")[2].currentText() == "manual", timeout=5000)
    win.weight_view.clicked.emit(7, 0, False)        # again: restored
    assert s.plan.get("backbone.conv2").is_dense
    s.undo()
    assert s.plan.get("backbone.conv2").units == (7,)
    win.weight_view.detail_btn.setChecked(True)
    win.weight_view.clicked.emit(3, 10, True)        # a weight: out 3, in 1, kernel (0, 1)
    assert s.plan.get("backbone.conv2").units == ((3, 1, 0, 1),)
    s.set_layer("backbone.conv2", 0.25, "kernel")
    win.weight_view.clicked.emit(0, 0, True)         # kernel granularity: the kernel goes (or comes back)
    lp = s.plan.get("backbone.conv2")
    assert lp.granularity == "kernel" and lp.is_manual
    s.select("classifier")
    win.weight_view.clicked.emit(0, 0, False)        # the output layer's classes stay: one clear dialog
    assert win.last_error is not None and "output layer" in win.last_error[1]
