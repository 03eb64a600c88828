"""Architecture rule 1: ``explorer.core`` works without a display or any Qt binding.

A fresh interpreter blocks PySide6 / PyQt / pyqtgraph / superqt at the import
machinery, imports every module under ``explorer/core`` and opens a tiny
session. The test also checks that the blocker really works (importing
PySide6 fails in the child) and that core never even *tries* a Qt import
(a ``try: import PySide6`` fallback would hide a soft dependency).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(r"""
    import importlib, importlib.abc, json, pkgutil, sys

    BLOCKED = ("PySide6", "PySide2", "PyQt5", "PyQt6", "pyqtgraph", "superqt", "qtpy", "shiboken6")
    attempts = []

    class QtBlocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempts.append(name)
                raise ImportError(f"Qt is blocked in this test: {name}")
            return None

    sys.meta_path.insert(0, QtBlocker())

    # the blocker works
    try:
        import PySide6  # noqa: F401
    except ImportError:
        blocker_ok = True
    else:
        blocker_ok = False
    attempts.clear()

    import explorer.core
    modules = sorted(m.name for m in pkgutil.walk_packages(explorer.core.__path__, "explorer.core."))
    for name in modules:
        importlib.import_module(name)

    from explorer.core.session import Session
    s = Session.open("digits-mlp")
    x, y = next(s.dataset.batches("test", batch_size=8))
    out = s.module(x)

    print(json.dumps({
        "blocker_ok": blocker_ok,
        "modules": modules,
        "attempts": attempts,
        "qt_loaded": sorted(k for k in sys.modules if k.split(".")[0] in BLOCKED),
        "layers": [l.name for l in s.layers],
        "out_shape": list(out.shape),
    }))
""")


def test_core_imports_and_runs_without_qt():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("QT_QPA_PLATFORM", None)
    env.pop("DISPLAY", None)
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["blocker_ok"], "the Qt import blocker did not work, so the test proves nothing"
    core = ROOT / "explorer" / "core"
    expected = sorted("explorer.core." + ".".join(p.relative_to(core).with_suffix("").parts)
                      for p in core.rglob("*.py") if p.stem != "__init__")
    assert set(expected) <= set(report["modules"]), "pkgutil did not find every core module"
    for must in ("explorer.core.model.zoo", "explorer.core.model.data", "explorer.core.model.layers",
                 "explorer.core.model.metrics", "explorer.core.session"):
        assert must in report["modules"]
    assert report["attempts"] == [], f"core tried to import Qt: {report['attempts']}"
    assert report["qt_loaded"] == []
    assert report["layers"] == ["fc1", "fc2", "fc3"]
    assert report["out_shape"] == [8, 10]
