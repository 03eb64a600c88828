"""`make run` / `pruning-explorer gui` where Qt cannot open a window: one sentence and exit 2, never Qt's abort."""
from __future__ import annotations

import pytest

from explorer.gui.window import platform_check as pc


def test_no_display_is_one_sentence_and_exit_2(monkeypatch, capsys):
    from explorer.cli import main

    for var in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    assert main(["gui"]) == 2
    err = capsys.readouterr().err
    assert "no display" in err and "--screenshot" in err and "Traceback" not in err


def test_missing_x11_libraries_are_named_with_the_fix(monkeypatch):
    monkeypatch.setattr(pc, "missing_libraries", lambda plugin: ["libxcb-cursor.so.0"])
    with pytest.raises(pc.NoDisplayError) as ei:
        pc.check_platform({"DISPLAY": ":0"})
    msg = str(ei.value)
    assert "libxcb-cursor.so.0" in msg and "libxcb-cursor0" in msg and "make run" in msg


def test_offscreen_and_a_working_x11_pass(monkeypatch):
    monkeypatch.setattr(pc, "missing_libraries", lambda plugin: [])
    pc.check_platform({"DISPLAY": ":0"})
    pc.check_platform({"QT_QPA_PLATFORM": "offscreen"})
    pc.check_platform({"WAYLAND_DISPLAY": "wayland-0"})


def test_ldd_reads_the_real_plugin():
    """On this machine: a list (maybe empty) of what the real xcb plugin lacks, from ldd itself."""
    out = pc.missing_libraries(pc._plugin("xcb"))
    assert isinstance(out, list) and all(".so" in x for x in out)
