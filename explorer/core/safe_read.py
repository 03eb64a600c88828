"""Reading files the user chose, safely: only regular files, only what is needed, bounded sizes.

A device such as /dev/zero, a FIFO or a 3 GiB file picked by mistake must end in a clear refusal, never
in an endless read or an out-of-memory kill. JSON is parsed strictly: NaN and Infinity (which Python's
json module accepts) are refused, as are numbers too large for a float and absurdly deep nesting.
"""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from .errors import ExplorerError, PlanError
from .fileio import expand

JSON_MAX_BYTES = 64 * 2**20


def regular_file(path: str | Path, what: str, error=ExplorerError) -> Path:
    """The path of an existing regular file (not a folder, device, FIFO or socket), else a clear ``error``."""
    p = expand(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise error(f"The {what} file '{p}' does not exist.") from None
    except OSError as e:
        raise error(f"The {what} file '{p}' cannot be read ({e.strerror}).") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"'{p}' is a folder, not a {what} file.")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"'{p}' is not a regular file (a device, pipe or socket), so not a {what} file.",
                    "Choose a file saved on disk.")
    if not os.access(p, os.R_OK):
        raise error(f"The {what} file '{p}' is not readable (permission denied).")
    return p


def read_head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 4   # a multi-byte character cut at the end of the sample


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"the number {text[:20]} is too large")
    return v


def parse_json(text: str):
    """json.loads without NaN/Infinity and with finite floats only (ValueError otherwise)."""
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def read_json(path: str | Path, what: str, hint: str | None = None, max_bytes: int = JSON_MAX_BYTES):
    """Parse a JSON file the user chose; anything wrong is one clear PlanError."""
    p = regular_file(path, what, PlanError)
    size = p.stat().st_size
    if size > max_bytes:
        raise PlanError(f"'{p.name}' is {size / 2**20:.0f} MiB, far too large for a {what} "
                        f"(at most {max_bytes // 2**20} MiB).", hint)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PlanError(f"'{p.name}' is not a UTF-8 text file, so not a {what}.", hint) from None
    try:
        return parse_json(text)
    except RecursionError:
        raise PlanError(f"'{p.name}' nests too deeply to be a {what}.", hint) from None
    except ValueError as e:   # json.JSONDecodeError is a ValueError
        raise PlanError(f"'{p.name}' is not valid JSON, so not a {what} ({e}).", hint) from None


def memory_budget() -> int:
    """Bytes the app may allocate for one file's contents: half of the memory available now."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def npz_headers(path: Path, error=ExplorerError) -> dict[str, tuple[tuple[int, ...], "object"]]:
    """{member: (shape, dtype)} of every .npy in an .npz, read from the headers only (no array is loaded),
    each checked against the member's real size: a header declaring more data than the file holds is damage
    (or a trap to allocate gigabytes), refused before anything is allocated."""
    import zipfile

    import numpy as np

    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise error(f"'{path.name}' holds '{info.filename}', which is not an array.")
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = {(1, 0): np.lib.format.read_array_header_1_0,
                            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read is None:
                        raise error(f"'{path.name}' uses an unknown array format {version}.")
                    shape, fortran, dtype = read(f)
                    header = f.tell()
                if dtype.hasobject:
                    raise error(f"'{path.name}' holds Python objects, not numbers.")
                n = 1
                for d in shape:
                    n *= int(d)
                if n * dtype.itemsize != info.file_size - header:
                    raise error(f"'{path.name}' is damaged: '{info.filename}' declares {n * dtype.itemsize:,} "
                                f"bytes but holds {max(0, info.file_size - header):,}.")
                out[info.filename[:-4]] = (tuple(int(d) for d in shape), dtype)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise error(f"'{path.name}' is not a readable .npz archive ({str(e).splitlines()[0][:200]}).") from None
    return out
