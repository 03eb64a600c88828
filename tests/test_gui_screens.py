"""The window at projector size: switching presentation mode keeps 1024x768, a lesson at 1024x768 squeezes nothing
over anything, legends wrap between entries, the status text ends in "…" instead of widening the window."""
from __future__ import annotations

import pytest

from explorer.core.session import Session

from .gui_helpers import open_window


@pytest.fixture
def win(qtbot, tmp_path):
    with open_window(qtbot, tmp_path, Session.open("digits-cnn"), size=(1024, 768)) as w:
        yield w


def _no_overlap(widgets) -> None:
    """Visible sibling widgets stacked in one column do not overlap (each starts below the previous one's end)."""
    rects = sorted((w.geometry() for w in widgets if w.isVisible()), key=lambda r: r.top())
    for a, b in zip(rects, rects[1:]):
        assert b.top() >= a.bottom(), (a, b)


def test_switching_presentation_mode_at_1024x768_keeps_the_window_size(win, qtbot):
    win.act_presentation.trigger()
    qtbot.wait(100)
    assert (win.width(), win.height()) == (1024, 768)
    # the layer table beside the Weights tab keeps its columns (not squeezed to a sliver)
    assert win.main_split.sizes()[0] >= min(win.table.preferred_width(), 500)
    win.act_presentation.trigger()
    qtbot.wait(100)
    assert (win.width(), win.height()) == (1024, 768)


def test_lesson_at_1024x768_fits_and_squeezes_nothing(win, qtbot):
    assert win.classroom.open("magnitude", 1)
    qtbot.wait(100)
    assert win.height() == 768
    pane = win.classroom.left_pane
    # the pane is at least as tall as its contents need: the table, totals and many-layers box stay apart
    _no_overlap([win.table, win.totals_label, win.global_panel])
    assert pane.height() >= pane.minimumSizeHint().height()
    assert win.global_panel.box.height() >= win.global_panel.box.minimumSizeHint().height()


def test_legend_entries_wrap_whole(win, qtbot):
    legend = win.weight_view.heat_legend
    widest = max(lab.sizeHint().width() for lab in legend.labels)
    for width in (2000, widest + 2, 120):
        legend.resize(width, legend.heightForWidth(width))
        legend.layout().setGeometry(legend.rect())
        rects = [lab.geometry() for lab in legend.labels]
        lines = len({r.top() for r in rects})
        assert lines == (1 if width == 2000 else 2 if width == widest + 2 else 3), (width, rects)
        for lab, r in zip(legend.labels, rects):     # whole on its line: full width, or alone and at the left
            assert r.width() >= lab.sizeHint().width() or (r.left() == 0 and r.width() == width)
            assert r.right() < width
        for a in rects:
            assert not any(a != b and a.intersects(b) for b in rects)
        assert legend.layout().minimumSize().height() == legend.heightForWidth(width)


def test_status_text_is_elided_not_widening_the_window(win, qtbot):
    long = "a very long status message " * 20
    win.status(long, 0)
    qtbot.wait(20)
    assert win.width() == 1024
    label = win.job_bar.text
    assert label.text() == long and label.toolTip() == long
    assert "…" in super(type(label), label).text()
