"""Shared helpers for the benchmark scripts (not part of the package)."""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine()}


def emit(args, table_rows: list[list], header: list[str], payload: dict) -> None:
    """Print a table, or with --json one JSON object."""
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2))
        return
    widths = [max(len(str(r[i])) for r in table_rows + [header]) for i in range(len(header))]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    for r in table_rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
