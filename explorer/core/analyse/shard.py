"""Scans that scale out (issue 24, item 4): ``sensitivity`` and ``compare`` under ``torchrun`` deal their points
out over the processes (the fine-tune's :class:`~explorer.core.train.distributed.Runtime`), every process measures
its share, and the shares are gathered in the one-process order -- so rank 0 writes the JSON one process would
have written (plus ``"world_size"``). One process (``runtime`` None or not distributed) owns every point.
"""
from __future__ import annotations

from ..train.distributed import Runtime


def owner(index: int, runtime: Runtime | None) -> bool:
    """Does this process measure item ``index`` (round robin over the processes)?"""
    return runtime is None or not runtime.distributed or index % runtime.world_size == runtime.rank


def gathered(items: dict, runtime: Runtime | None) -> dict:
    """Every process's ``items`` ({index: value}), merged (on every process); unchanged in one process."""
    if runtime is None or not runtime.distributed:
        return items
    out: dict = {}
    for part in runtime.gather(items):
        out.update(part)
    return out


def world_size(runtime: Runtime | None) -> int:
    return runtime.world_size if runtime is not None else 1
