"""Fresh-subprocess measurements for the start-up and big-model benchmarks (not part of the package)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROBE = HERE / "_probe.py"


def child_env(threads: int | None = None) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONDONTWRITEBYTECODE="1")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_child(cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 900) -> dict:
    """Run ``cmd`` as a fresh process; wall seconds from just before the start to its exit, its own peak RSS
    (``os.wait4``'s ru_maxrss: this child only, not the max over all children), exit status, output tails."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.time()
        p = subprocess.Popen(cmd, cwd=str(cwd), env=env or child_env(), stdout=out, stderr=err, text=True)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            if time.time() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.time() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"wall_s": wall, "peak_rss_mb": ru.ru_maxrss / 1024.0, "rc": p.returncode,
                "stdout": out.read()[-20000:], "stderr": err.read()[-2000:]}


def probe(variant: str, mode: str, repo: Path | None = None, args: list[str] | None = None,
          env: dict | None = None, timeout: float = 900) -> dict:
    """One fresh process through ``_probe.py``: its JSON plus wall time and peak RSS."""
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as f:
        out = f.name
    try:
        t0 = time.time()
        cmd = [sys.executable, str(PROBE), out, repr(t0), mode, variant]
        if variant == "app":
            cmd += [str(repo), *(args or [])]
        r = run_child(cmd, cwd=repo or ROOT, env=env, timeout=timeout)
        try:
            data = json.loads(Path(out).read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            data = {}
    finally:
        Path(out).unlink(missing_ok=True)
    data.update(wall_s=r["wall_s"], peak_rss_mb=r["peak_rss_mb"], rc=r["rc"])
    if r["rc"] != 0 or not data.get("first_frame_s"):
        data["stderr"] = r["stderr"]
    return data


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
