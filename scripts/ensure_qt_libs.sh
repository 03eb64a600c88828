#!/usr/bin/env bash
# Make sure Qt (PySide6) can start headless. On a bare machine a few system
# libraries Qt links against (EGL/GL, fontconfig, xkbcommon, dbus) may be
# missing; install them with apt-get when we can. Prints what it did.
# With --desktop (make run) also the X11 plugin's libraries (libxcb-cursor0 and friends); with --xvfb (make test)
# those and a virtual X screen with a window manager (xvfb, openbox), for the real-window test
# (tests/test_gui_real_screen.py skips without them).
set -u
PY=${PY:-.venv/bin/python}
apt_install() {
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null 2>&1; $SUDO apt-get install -y -qq "$@" >/dev/null 2>&1
  fi
}
if [ "${1:-}" = "--xvfb" ]; then
  if ! command -v Xvfb >/dev/null || ! command -v openbox >/dev/null; then
    echo "installing a virtual X screen for the real-window test (xvfb, openbox)"
    apt_install xvfb openbox
  fi
  set -- --desktop
fi
if [ "${1:-}" = "--desktop" ]; then
  xcb=$("$PY" -c "import PySide6, pathlib; print(pathlib.Path(PySide6.__file__).parent / 'Qt/plugins/platforms/libqxcb.so')")
  if command -v ldd >/dev/null && ldd "$xcb" 2>/dev/null | grep -q "not found"; then
    echo "installing the libraries Qt's X11 plugin needs (libxcb-cursor0 and friends)"
    apt_install libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
      libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libx11-xcb1 libegl1 libgl1 libfontconfig1
  fi
fi
check() {
  QT_QPA_PLATFORM=offscreen "$PY" - <<'PY' 2>&1
from PySide6.QtWidgets import QApplication
app = QApplication([])
import pyqtgraph
print("qt-ok")
PY
}
out=$(check)
if echo "$out" | grep -q qt-ok; then exit 0; fi
echo "Qt could not start headless; installing system libraries:"
echo "$out" | tail -3
apt_install libegl1 libgl1 libglib2.0-0 libfontconfig1 libxkbcommon0 libdbus-1-3 libfreetype6 fonts-dejavu-core
out=$(check)
if echo "$out" | grep -q qt-ok; then echo "Qt OK after installing libraries"; exit 0; fi
echo "Qt still cannot start headless:"; echo "$out"; exit 1
