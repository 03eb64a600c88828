"""Regenerate resources/data/python-docs.txt, the built-in text of ``tiny-lm`` (dataset ``tiny-text``).

The text is Python's own English documentation of its language topics, as the interpreter ships it in
``pydoc_data.topics`` (the pages ``help('TOPIC')`` shows): every topic, in sorted order of its name, joined by a
blank line. The committed file came from Python 3.11.7; another Python version gives a slightly different text,
so the file itself is shipped and results do not depend on the interpreter. Usage:

    python scripts/make_tiny_text.py [OUT]
"""
from __future__ import annotations

import sys
from pathlib import Path
from pydoc_data.topics import topics


def text() -> str:
    return "\n\n".join(topics[k].strip("\n") for k in sorted(topics)) + "\n"


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "resources" / "data" \
        / "python-docs.txt"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text(), encoding="utf-8")
    tmp.replace(out)
    print(f"{out}: {out.stat().st_size:,} bytes from Python {sys.version.split()[0]}")
