"""The window on its screen: it opens within the *available* geometry of the screen it is on (the screen less
its panels and docks, less the window manager's frame), and remembers the size and place the user gave it.

- No remembered geometry: 1440×900, or less where the screen's available area (less the frame) is smaller,
  centred on the screen under the mouse pointer.
- Remembered (``window/size``, ``window/pos``, ``window/maximized`` in the settings, written when the window
  closes): that size and place, shrunk and moved onto the screen where it no longer fits (a laptop that was on
  a larger monitor, a projector).
- ``gui --size WxH`` and ``--screenshot`` are exact: no remembered size overrides them, and such a run does
  not write one either (scripts do not change the user's next window).

The frame's size is known only once the window manager has framed the window, so the placement is made twice:
before the window is shown (with a typical frame) and right after (with the real one). A window moved to
another screen that is too small for it is fitted to that screen as well.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QMargins, QObject, QPoint, QRect, QSize, Qt, QTimer
from PySide6.QtGui import QCursor, QGuiApplication

DEFAULT = QSize(1440, 900)
TYPICAL_FRAME = QMargins(4, 30, 4, 4)      # before the window manager says (title bar, borders)
KEY_SIZE, KEY_POS, KEY_MAX = "window/size", "window/pos", "window/maximized"


def fit_rect(size: QSize, avail: QRect, frame: QMargins = QMargins(), pos: QPoint | None = None,
             minimum: QSize = QSize(0, 0)) -> tuple[QRect, QRect]:
    """Where a window of client ``size`` (frame corner at ``pos``; centred when None) goes so that its frame lies
    within ``avail``: ``(client rect, frame rect)``. The size shrinks to fit (never below ``minimum``, which only
    a screen smaller than the window's minimum can make stick out), the frame moves inside the area."""
    fw, fh = frame.left() + frame.right(), frame.top() + frame.bottom()
    w = max(min(size.width(), avail.width() - fw), minimum.width())
    h = max(min(size.height(), avail.height() - fh), minimum.height())
    outer = QSize(w + fw, h + fh)
    if pos is None:
        x = avail.x() + (avail.width() - outer.width()) // 2
        y = avail.y() + (avail.height() - outer.height()) // 2
    else:
        x, y = pos.x(), pos.y()
    x = max(avail.x(), min(x, avail.x() + avail.width() - outer.width()))
    y = max(avail.y(), min(y, avail.y() + avail.height() - outer.height()))
    frame_rect = QRect(QPoint(x, y), outer)
    return frame_rect.marginsRemoved(frame), frame_rect


def _screen_for(pos: QPoint | None):
    """The screen at ``pos`` (None when no screen is there any more), or the one under the pointer."""
    if pos is not None:
        return QGuiApplication.screenAt(pos)
    return QGuiApplication.screenAt(QCursor.pos()) or QGuiApplication.primaryScreen()


class ScreenFit(QObject):
    """Places ``win`` on its screen and remembers its geometry in ``settings`` (see the module's docstring).

    ``exact``: a size the command line asked for (``--size``, ``--screenshot``): used as it is, nothing read or
    written. ``avail``: a fixed available geometry instead of the screen's (tests)."""

    def __init__(self, win, settings, exact: QSize | None = None, avail: QRect | None = None):
        super().__init__(win)
        self.win, self.settings, self.exact, self._avail = win, settings, exact, avail
        self.wanted = QSize(DEFAULT)
        self.pos: QPoint | None = None
        self.maximized = False
        self._shown = False
        self._placed: QSize | None = None      # the size place() gave (with a typical frame)
        win.installEventFilter(self)

    # ------------------------------------------------------------------ placing
    def place(self) -> None:
        """Before the window shows: its size and place (with a typical frame; corrected once it is framed)."""
        win = self.win
        if self.exact is not None:
            win.resize(self.exact)
            return
        self._read()
        self._placed = self._apply(TYPICAL_FRAME)
        if self.maximized:
            win.setWindowState(win.windowState() | Qt.WindowMaximized)

    def available(self) -> QRect:
        if self._avail is not None:
            return QRect(self._avail)
        centre = None if self.pos is None else self.pos + QPoint(self.wanted.width() // 2, self.wanted.height() // 2)
        screen = self.win.screen() if self._shown else _screen_for(centre)
        if screen is None:          # the remembered place's screen is gone: the pointer's screen, centred
            self.pos = None
            screen = _screen_for(None)
        return screen.availableGeometry()

    def frame(self) -> QMargins:
        """The window manager's frame around the window (the typical one until it is known)."""
        handle = self.win.windowHandle()
        m = handle.frameMargins() if handle is not None and self._shown else QMargins()
        return m if (m.top() or m.left()) else TYPICAL_FRAME

    def _apply(self, frame: QMargins) -> QSize:
        win = self.win
        win.ensurePolished()
        client, outer = fit_rect(self.wanted, self.available(), frame, self.pos, win.minimumSizeHint())
        win.resize(client.size())
        win.move(outer.topLeft())           # a top-level's pos() is its frame's corner
        return client.size()

    def _framed(self) -> None:
        """Once the frame is known: the size placed with a typical frame, placed again with the real one (unless
        someone resized the window since); then whatever still sticks out is fitted."""
        win = self.win
        if self._placed is not None and win.isVisible() and not (win.isMaximized() or win.isFullScreen()):
            handle = win.windowHandle()
            m = handle.frameMargins() if handle is not None else QMargins()
            if (m.top() or m.left()) and m != TYPICAL_FRAME and win.size() == self._placed:
                self._placed = None
                self._apply(m)
        self.refit()

    def refit(self) -> None:
        """Shrink and move the framed window into its screen's available area (nothing to do when it fits)."""
        win = self.win
        if self.exact is not None or win.isMaximized() or win.isFullScreen() or not win.isVisible():
            return
        avail = self.available()
        if avail.contains(win.frameGeometry()):
            return
        self.wanted, self.pos = win.size(), win.frameGeometry().topLeft()
        self._apply(self.frame())

    # ------------------------------------------------------------------ remembering
    def _read(self) -> None:
        st = self.settings
        size, pos = st.value(KEY_SIZE), st.value(KEY_POS)
        if isinstance(size, QSize) and size.isValid() and size.width() > 0 and size.height() > 0:
            self.wanted = QSize(size)
            self.pos = QPoint(pos) if isinstance(pos, QPoint) else None
        self.maximized = str(st.value(KEY_MAX, "false")).lower() == "true"

    def save(self) -> None:
        if self.exact is not None:
            return
        win, st = self.win, self.settings
        st.setValue(KEY_MAX, "true" if win.isMaximized() else "false")
        if not (win.isMaximized() or win.isFullScreen()):
            st.setValue(KEY_SIZE, win.size())
            st.setValue(KEY_POS, win.frameGeometry().topLeft())

    # ------------------------------------------------------------------ events
    def eventFilter(self, obj, e) -> bool:   # noqa: N802 (Qt's name)
        if obj is self.win:
            t = e.type()
            if t == QEvent.Show and not self._shown:
                self._shown = True
                handle = self.win.windowHandle()
                if handle is not None:
                    handle.screenChanged.connect(lambda _s: QTimer.singleShot(0, self, self.refit))
                # the frame is known once the window manager framed the window: fit again then
                for ms in (0, 150, 600, 1500, 3000):
                    QTimer.singleShot(ms, self, self._framed)
            elif t == QEvent.Close:
                self.save()
        return False
