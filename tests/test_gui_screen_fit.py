"""The window's size logic on a fake screen: it opens within the available area (less the frame), remembers the
size and place the user gave it, and an exact size (``--size``, ``--screenshot``) is kept and not remembered."""
from __future__ import annotations

from PySide6.QtCore import QMargins, QPoint, QRect, QSettings, QSize

from explorer.gui.window.screen_fit import DEFAULT, KEY_POS, KEY_SIZE, TYPICAL_FRAME, ScreenFit, fit_rect

from .gui_helpers import open_window

SMALL = QRect(0, 24, 1024, 744)          # a 1024x768 screen less a 24-pixel panel at the top


def test_fit_rect_shrinks_and_moves_the_frame_into_the_area():
    frame = QMargins(2, 28, 2, 3)
    client, outer = fit_rect(QSize(1440, 900), SMALL, frame)
    assert SMALL.contains(outer) and outer == client.marginsAdded(frame)
    assert (client.width(), client.height()) == (1024 - 4, 744 - 31)
    # a size that fits keeps it, centred
    client, outer = fit_rect(QSize(800, 600), SMALL, frame)
    assert client.size() == QSize(800, 600) and outer.center().x() in (511, 512) and SMALL.contains(outer)
    # a remembered place partly off the screen moves in; a place that fits stays
    client, outer = fit_rect(QSize(800, 600), SMALL, frame, QPoint(900, -50))
    assert SMALL.contains(outer) and client.size() == QSize(800, 600)
    assert fit_rect(QSize(800, 600), SMALL, frame, QPoint(10, 40))[1].topLeft() == QPoint(10, 40)
    # never below the window's minimum (only a screen smaller than it lets the window stick out)
    assert fit_rect(QSize(1440, 900), QRect(0, 0, 640, 480), frame, minimum=QSize(700, 300))[0].width() == 700


def _settings(tmp_path, **values) -> QSettings:
    st = QSettings(str(tmp_path / "fit.ini"), QSettings.IniFormat)
    for k, v in values.items():
        st.setValue(k, v)
    return st


def test_first_window_fits_a_small_screen_and_remembers_what_the_user_gives_it(qtbot, tmp_path, cnn):
    st = _settings(tmp_path)
    with open_window(qtbot, tmp_path, cnn, size=None, settings=st) as win:
        fit = ScreenFit(win, st, avail=SMALL)
        fit.place()
        outer = QRect(win.pos(), win.size().grownBy(TYPICAL_FRAME))
        assert SMALL.contains(outer), outer
        assert win.width() == 1024 - 8 and win.height() <= 744 - 34
        # the user's own size and place are written when the window closes
        win.resize(900, 600)
        win.move(30, 60)
        win.close()
    assert st.value(KEY_SIZE) == QSize(900, 600)
    assert isinstance(st.value(KEY_POS), QPoint)


def test_remembered_size_is_restored_and_shrunk_onto_a_smaller_screen(qtbot, tmp_path, cnn):
    st = _settings(tmp_path, **{KEY_SIZE: QSize(900, 600), KEY_POS: QPoint(40, 50)})
    with open_window(qtbot, tmp_path, cnn, size=None, settings=st) as win:
        ScreenFit(win, st, avail=QRect(0, 0, 1920, 1080)).place()
        assert (win.size(), win.pos()) == (QSize(900, 600), QPoint(40, 50))
        st.setValue(KEY_SIZE, QSize(1800, 1000))      # remembered on a big monitor, opened on the projector
        st.setValue(KEY_POS, QPoint(100, 60))
        ScreenFit(win, st, avail=SMALL).place()
        assert SMALL.contains(QRect(win.pos(), win.size().grownBy(TYPICAL_FRAME)))


def test_an_exact_size_is_kept_and_not_remembered(qtbot, tmp_path, cnn):
    st = _settings(tmp_path, **{KEY_SIZE: QSize(900, 600)})
    with open_window(qtbot, tmp_path, cnn, size=None, settings=st) as win:
        fit = ScreenFit(win, st, exact=QSize(DEFAULT), avail=SMALL)
        fit.place()
        assert win.size() == DEFAULT              # --size / --screenshot: as asked, even beyond the screen
        win.resize(700, 500)
        fit.save()
    assert st.value(KEY_SIZE) == QSize(900, 600)
