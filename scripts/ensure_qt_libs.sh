#!/usr/bin/env bash
# Make sure Qt (PySide6) can start headless. On a bare machine a few system
# libraries Qt links against (EGL/GL, fontconfig, xkbcommon, dbus) may be
# missing; install them with apt-get when we can. Prints what it did.
set -u
PY=${PY:-.venv/bin/python}
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
pkgs="libegl1 libgl1 libglib2.0-0 libfontconfig1 libxkbcommon0 libdbus-1-3 libfreetype6 fonts-dejavu-core"
if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null 2>&1; $SUDO apt-get install -y -qq $pkgs >/dev/null 2>&1
fi
out=$(check)
if echo "$out" | grep -q qt-ok; then echo "Qt OK after installing libraries"; exit 0; fi
echo "Qt still cannot start headless:"; echo "$out"; exit 1
