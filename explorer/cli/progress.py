"""What the CLI prints while it works: notes on stderr and a tqdm progress bar (quiet when not a terminal)."""
from __future__ import annotations

import sys

from explorer.core.jobs import Progress


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tqdm_progress(desc: str):
    """A Progress callback drawing a tqdm bar on stderr; call ``.close()`` when done."""
    from tqdm import tqdm

    bar = tqdm(total=1000, desc=desc, leave=False, disable=not sys.stderr.isatty(), file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def cb(p: Progress) -> None:
        if p.fraction is not None:
            bar.n = int(p.fraction * 1000)
        if p.message:
            bar.set_postfix_str(p.message[:60], refresh=False)
        bar.refresh()
    cb.close = bar.close  # type: ignore[attr-defined]
    return cb
