"""The window in a real X window on a 1024x768 screen (Xvfb, with openbox framing it where installed): its frame
lies within the screen's available area, and the lesson bar's Next button and the dashboard are wholly visible --
in normal mode, presentation mode and in lessons. Skips where Xvfb is not installed (``make test`` installs it
with apt-get where it can: scripts/ensure_qt_libs.sh)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODES = {"normal": [], "presentation": ["--presentation"],
         "lesson": ["--lesson", "speedup", "--step", "2"],
         "lesson, presentation": ["--lesson", "granularity", "--step", "4", "--presentation"]}


def _qt_xcb_ok() -> str | None:
    """Why Qt's X11 plugin cannot start here (None when it can)."""
    import PySide6
    plugin = Path(PySide6.__file__).parent / "Qt/plugins/platforms/libqxcb.so"
    if not plugin.exists():
        return "PySide6 has no X11 platform plugin"
    if shutil.which("ldd"):
        out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True).stdout
        missing = [ln.split()[0] for ln in out.splitlines() if "not found" in ln]
        if missing:
            return f"Qt's X11 plugin misses {', '.join(missing)} (scripts/ensure_qt_libs.sh --xvfb installs them)"
    return None


@pytest.fixture(scope="module")
def x_screen(tmp_path_factory):
    """A 1024x768 X screen (Xvfb) with a window manager where one is installed; yields its DISPLAY."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (apt-get install xvfb; `make test` does it where it can)")
    why = _qt_xcb_ok()
    if why:
        pytest.skip(why)
    r, w = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r) as f:
        number = f.readline().strip()
    if not number:
        xvfb.kill()
        pytest.skip("Xvfb did not start")
    display = f":{number}"
    env = {**os.environ, "DISPLAY": display}
    wm = None
    if shutil.which("openbox"):
        wm = subprocess.Popen(["openbox"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    try:
        yield display
    finally:
        for p in (wm, xvfb):
            if p is not None:
                p.terminate()
                p.wait(10)


def test_window_fits_a_1024x768_screen_in_every_mode(x_screen, tmp_path):
    env = {**os.environ, "DISPLAY": x_screen, "QT_QPA_PLATFORM": "xcb", "PYTHONPATH": str(ROOT),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "HOME": str(tmp_path)}   # no remembered size
    conf = tmp_path / "config" / "PruningExplorer" / "pruning-explorer.conf"     # the app's settings
    conf.parent.mkdir(parents=True)
    conf.write_text("[latency]\nruns=3\n")        # the lesson's latency step: 3 timed runs are enough here
    lines = "\n".join(json.dumps(args) for args in MODES.values())
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "real_window_probe.py"), lines], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    reports = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(reports) == len(MODES), proc.stdout + proc.stderr[-3000:]

    def within(outer, inner) -> bool:
        ox, oy, ow, oh = outer
        x, y, w, h = inner
        return ox <= x and oy <= y and x + w <= ox + ow and y + h <= oy + oh

    for mode, rep in zip(MODES, reports):
        avail = rep["available"]
        assert avail[2] <= 1024 and avail[3] <= 768, (mode, rep)
        assert within(avail, rep["frame"]), (mode, rep)
        # the window uses the screen: not a small window in a corner
        assert rep["frame"][2] >= avail[2] - 16 and rep["frame"][3] >= avail[3] - 16, (mode, rep)
        for part in ("dashboard", "page") + (("next",) if mode.startswith("lesson") else ()):
            shown = rep[part]
            assert shown is not None, (mode, part, rep)
            assert within(avail, shown["rect"]) and within(rep["frame"], shown["rect"]), (mode, part, rep)
        assert rep["dashboard"]["whole"] and (not mode.startswith("lesson") or rep["next"]["whole"]), (mode, rep)
