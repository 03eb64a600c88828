"""Files the app reads and writes: atomic writes (temp file + rename), JSON the user chose, bit equality.

Every write goes to a temp file beside its destination, is checked (``verify``) and only then renamed
over the destination, so a failed write or check leaves the previous file untouched. Both ``recipe``
and ``deploy.export`` build on this module; it imports nothing else of the app but the errors.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .errors import PlanError


def atomic_write(path: str | Path, write, verify=None) -> Path:
    """``write(tmp)`` to a temp file in the destination's folder, ``verify(tmp)`` (may raise), rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        write(tmp)
        if verify is not None:
            verify(tmp)
        os.chmod(tmp, file_mode(path))   # mkstemp makes 0600 files; exports get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def file_mode(path: Path) -> int:
    """The destination's current mode if it exists, else 0666 minus the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def atomic_torch_save(obj, path: str | Path, verify=None) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), verify)


def atomic_write_json(path: str | Path, obj, verify=None) -> Path:
    text = json.dumps(obj, indent=2) + "\n"

    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, w, verify)


def read_json(path: str | Path, what: str, hint: str | None = None):
    """Parse a JSON file the user chose; missing or malformed files are a clear PlanError."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanError(f"The {what} file '{path}' does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError) as e:
        raise PlanError(f"'{path.name}' is not valid JSON, so not a {what} ({e}).", hint) from None


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bits (so -0.0 != +0.0 and NaN payloads count)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point() and a.element_size() in (2, 4, 8):
        view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return torch.equal(a.contiguous().view(view), b.contiguous().view(view))
    return torch.equal(a, b)


# ---------------------------------------------------------------- whole folders

FOREIGN_LIMIT = 2000      # files of the user's own that a results folder may hold and carry over


def _rename_exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0


def _stale_siblings(out_dir: Path, kind: str) -> list[Path]:
    return sorted(out_dir.parent.glob(f".{out_dir.name}.{kind}-*"))


def recover_folder(out_dir: Path) -> None:
    """Tidy what a killed run left beside ``out_dir``: half-built folders go; if the run died between
    moving the previous folder aside and moving the new one in, the previous one comes back."""
    import shutil

    for p in _stale_siblings(out_dir, "partial"):
        shutil.rmtree(p, ignore_errors=True)
    old = _stale_siblings(out_dir, "old")
    if old and not out_dir.exists():
        os.rename(old.pop(), out_dir)
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    if out_dir.is_dir():
        for p in out_dir.glob(".*.tmp"):      # temp files of single-file writes killed part-way
            try:
                p.unlink()
            except OSError:
                pass


def _carry_over(src_dir: Path, stage: Path) -> None:
    """Hard-link (or copy) what ``src_dir`` holds and the new run does not write into ``stage``."""
    import shutil

    entries = [p for p in src_dir.iterdir() if not (stage / p.name).exists()]
    count = sum(1 for p in entries for _ in (p.rglob("*") if p.is_dir() and not p.is_symlink() else [p]))
    if count > FOREIGN_LIMIT:
        from .errors import ExplorerError
        raise ExplorerError(f"The output folder {src_dir} holds {count:,} other files.",
                            "Write results to a new or empty folder (e.g. --out results/run1).")

    def link(a, b):
        try:
            os.link(a, b, follow_symlinks=False)
        except OSError:
            shutil.copy2(a, b, follow_symlinks=False)
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.copytree(p, stage / p.name, symlinks=True, copy_function=link)
        else:
            link(p, stage / p.name)


class StagedFolder:
    """Build a results folder beside its destination and swap it in as a whole.

        with StagedFolder(out) as stage:
            write files into stage ...
        # now ``out`` holds exactly this run's files (plus files of the user's own that were there)

    A run killed at any moment leaves ``out`` as the previous run or as this one, never a mix;
    leftovers are tidied by the next run (:func:`recover_folder`).
    """

    def __init__(self, out_dir: str | Path):
        self.out = Path(out_dir).expanduser().absolute()
        self.stage: Path | None = None

    def __enter__(self) -> Path:
        from .errors import ExplorerError

        out = self.out
        if out.exists() and not out.is_dir():
            raise ExplorerError(f"--out {out} is a file, not a folder.", "Give a folder for the results.")
        try:
            cwd = Path.cwd().resolve()
        except OSError:
            cwd = None
        if out.exists() and cwd is not None and (cwd == out.resolve() or out.resolve() in cwd.parents):
            raise ExplorerError(f"The output folder {out} is the current folder (or holds it).",
                                "Results are swapped in as a whole folder; give a sub-folder, e.g. --out results/.")
        out.parent.mkdir(parents=True, exist_ok=True)
        recover_folder(out)
        self.stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        return self.stage

    def __exit__(self, exc_type, exc, tb) -> bool:
        import shutil

        stage, out = self.stage, self.out
        if exc_type is not None:
            shutil.rmtree(stage, ignore_errors=True)
            return False
        try:
            os.chmod(stage, (out.stat().st_mode & 0o777) if out.exists() else (0o777 & ~_umask()))
            if not out.exists():
                os.rename(stage, out)
                return False
            _carry_over(out, stage)
            if _rename_exchange(stage, out):
                shutil.rmtree(stage, ignore_errors=True)       # now holds the previous run
                return False
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rmdir(old)
            os.rename(out, old)
            os.rename(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
