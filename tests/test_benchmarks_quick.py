"""Every benchmark runs (issue 24, item 5): each ``benchmarks/bench_*.py`` in its ``--quick`` mode (tiny sizes, the
same code path), one subprocess per script, must exit 0 and print one JSON object with ``--json`` that has the keys
the issues made contracts. A new benchmark is covered as soon as its file exists."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "benchmarks").glob("bench_*.py"))
TIMEOUT_S = 240          # per benchmark; the quick modes take a few seconds of CPU each on a quiet machine
WORKERS = 2              # quick modes run two at a time (most are single-threaded): about half the wall time

# JSON keys that are contracts (issue 24's "done means", plus the keys the README tables are made from)
KEYS = {
    "bench_slider.py": ("cache_build_s", "before_cache_build_s", "step_ms_median", "ratio"),
    "bench_gui_stall.py": ("max_stall_ms",),
    "bench_finetune.py": ("overhead", "models"),
    "bench_speedup.py": ("rows",),
    "bench_startup.py": ("variants",),
    "bench_big_models.py": ("summary",),
    "bench_llm_scale.py": ("runs", "peak_rss_bytes", "peak_over_model"),
    "bench_llm.py": ("dense_perplexity", "rows", "depth_curve"),
    "bench_model_open.py": ("ratio", "median_cpu_s", "timm_imported"),
}
ROW_KEYS = {"bench_sensitivity.py": ("ratio", "same_allocation")}


def test_benchmarks_found():
    assert len(SCRIPTS) >= 10, SCRIPTS


def _run(script: Path) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    try:
        r = subprocess.run([sys.executable, str(script), "--quick", "--json"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        return {"timeout": True, "stderr": str(e.stderr or "")[-2000:]}
    return {"timeout": False, "rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}


@pytest.fixture(scope="module")
def runs(request):
    """In one process: the selected quick modes, started at once on a small pool; each test waits for its own.
    Under pytest-xdist (``make test``): None, each test runs its own script, and the workers are the parallelism
    (each worker collects every test, so a pool over the selection ran every script once per worker)."""
    if hasattr(request.config, "workerinput"):
        yield None
        return
    wanted = {item.callspec.params["script"].name for item in request.session.items
              if hasattr(item, "callspec") and "script" in item.callspec.params}
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {p.name: pool.submit(_run, p) for p in SCRIPTS if p.name in wanted}
        yield futures
        for f in futures.values():
            f.cancel()


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_quick_mode_runs(script: Path, runs):
    r = _run(script) if runs is None else runs[script.name].result()
    if r["timeout"]:
        pytest.fail(f"{script.name} --quick ran over {TIMEOUT_S} s: {r['stderr']}")
    assert r["rc"] == 0, f"{script.name} --quick exited {r['rc']}:\n{r['stderr'][-3000:]}"
    try:
        payload = json.loads(r["stdout"])
    except json.JSONDecodeError as e:
        pytest.fail(f"{script.name} --quick --json printed no JSON object ({e}): {r['stdout'][-1500:]!r}")
    assert isinstance(payload, dict) and payload
    for key in KEYS.get(script.name, ()):
        assert key in payload, f"{script.name}: no {key!r} in {sorted(payload)}"
    if script.name in ROW_KEYS:
        assert payload["rows"], payload
        for row in payload["rows"]:
            for key in ROW_KEYS[script.name]:
                assert key in row, f"{script.name}: a row without {key!r}: {row}"
