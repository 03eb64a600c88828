"""Scans that scale out (issue 24, item 4): `sensitivity` and `compare` under torchrun deal their points out over
two CPU processes (gloo); rank 0 writes a JSON identical to one process's, plus "world_size"."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.cli import main

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "S.json": ["sensitivity", "--model", "digits-mlp", "--sparsities", "0.5,0.9"],
    "C.json": ["compare", "--model", "digits-mlp", "--criteria", "l1,random", "--sparsities", "0.5,0.9"],
}


def _torchrun(argv: list[str]) -> subprocess.CompletedProcess:
    exe = BIN / "pruning-explorer"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python",
           *([str(exe)] if exe.exists() else [sys.executable, "-m", "explorer.cli"]), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=str(ROOT))


@pytest.mark.parametrize("name", list(COMMANDS))
def test_two_processes_write_what_one_process_writes(name, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    assert main([*COMMANDS[name], "--out", str(one / name)]) == 0
    r = _torchrun([*COMMANDS[name], "--out", str(two / name)])
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = json.loads((one / name).read_text()), json.loads((two / name).read_text())
    assert "world_size" not in a and b.pop("world_size") == 2
    a.pop("seconds", None), b.pop("seconds", None)
    assert a == b
    assert r.stdout.count('"out"') == 1          # rank 0 alone reports
    assert sorted(p.name for p in two.iterdir()) == [name]
