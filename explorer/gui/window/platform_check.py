"""Can Qt open a window here? Checked before QApplication exists, because when no platform plugin loads
Qt prints a cryptic line and aborts the process (a core dump). Instead: one sentence and exit status 2."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from explorer.core.errors import ExplorerError

XCB_PACKAGES = ("libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 "
                "libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libx11-xcb1")


class NoDisplayError(ExplorerError):
    title = "Cannot open a window"


def missing_libraries(plugin: Path) -> list[str]:
    """Shared libraries a Qt plugin needs that this system lacks (empty where ldd is unavailable)."""
    ldd = shutil.which("ldd")
    if ldd is None or not plugin.exists():
        return []
    try:
        out = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line})


def _plugin(name: str) -> Path:
    import PySide6
    return Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / f"libq{name}.so"


def check_platform(env=os.environ) -> None:
    """Raise NoDisplayError with what to do when Qt could not open a window in this environment."""
    if not sys.platform.startswith("linux"):
        return
    chosen = env.get("QT_QPA_PLATFORM", "")
    if chosen and not chosen.startswith(("xcb", "wayland")):
        return                                   # offscreen, vnc, eglfs...: the user knows what they asked for
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        raise NoDisplayError("There is no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is "
                             "set).", "Run it in a desktop session, or render the window to a file instead: "
                             "pruning-explorer gui --screenshot shot.png.")
    if env.get("WAYLAND_DISPLAY") and not chosen.startswith("xcb"):
        return                                   # Qt tries Wayland first there
    missing = missing_libraries(_plugin("xcb"))
    if missing:
        raise NoDisplayError(f"Qt's X11 plugin cannot load: this system lacks {', '.join(missing)}.",
                             f"Install them (Debian/Ubuntu: sudo apt-get install {XCB_PACKAGES}) -- `make run` "
                             "does it for you -- or render a screenshot with --screenshot FILE.png.")
