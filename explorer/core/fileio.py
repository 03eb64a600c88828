"""Files the app writes: atomic writes (temp + rename), whole-folder swaps, bit equality.

Every write goes to a temp file beside its destination, is checked (``verify``) and only then renamed
over the destination, so a failed write or check leaves the previous file untouched; a results folder is
built beside its destination and swapped in as a whole. Reading user-chosen files safely is ``safe_read``.
It imports nothing else of the app but the errors.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import ExplorerError


def atomic_write(path: str | Path, write, verify=None) -> Path:
    """``write(tmp)``, ``verify(tmp)`` (may raise), then rename over ``path``.

    ``tmp`` has the destination's own name, inside a private temp folder beside it, so formats that record
    their file name (torch.save's zip names its folder after the file) are byte-identical run to run. A
    failed write or check leaves the previous file untouched; disk errors become one clear sentence.
    """
    path = out_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(path)
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=str(path.parent)))
    except OSError as e:
        raise write_error(path, e) from None
    tmp = tmpdir / path.name
    try:
        write(str(tmp))
        if verify is not None:
            verify(str(tmp))
        os.chmod(tmp, file_mode(path))   # temp files are private; exports get the usual permissions
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not _is_write_failure(e):
            raise
        raise write_error(path, e) from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def _is_write_failure(e: RuntimeError) -> bool:
    """torch.save reports a full disk or a vanished folder as RuntimeError ('unexpected pos', 'file write failed')."""
    text = str(e).lower()
    return any(k in text for k in ("unexpected pos", "write failed", "no space", "file write", "cannot open"))


def write_error(path: Path, e: BaseException) -> ExplorerError:
    import errno

    code = getattr(e, "errno", None)
    if code == errno.ENOSPC or "unexpected pos" in str(e) or "no space" in str(e).lower():
        why = "the disk is full"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is not writable"
    else:
        why = getattr(e, "strerror", None) or str(e).splitlines()[0][:200]
    return ExplorerError(f"Could not write {path}: {why}.", "Nothing was replaced. Choose another folder, or free "
                                                           "some space, and try again.")


def clean_stale_temps(path: Path) -> None:
    """Temp folders of earlier writes of ``path`` whose process is gone (killed mid-write)."""
    for t in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        _remove_if_orphaned(t)


def _remove_if_orphaned(t: Path) -> None:
    """Remove ``.NAME.PID.XXXX.tmp`` (a file or folder) if process PID is gone; older temps without a PID too."""
    parts = t.name.rsplit(".", 3)          # [".NAME", PID, random, "tmp"]
    pid = parts[1] if len(parts) == 4 and parts[1].isdigit() else None
    if pid is not None and _alive(int(pid)):
        return
    try:
        shutil.rmtree(t) if t.is_dir() else t.unlink()
    except OSError:
        pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def glob_escape(name: str) -> str:
    import glob
    return glob.escape(name)


def out_path(path: str | Path, what: str = "output") -> Path:
    """A path the app will write a file to: ``~`` expanded, not a folder, not below a file."""
    p = expand(path)
    if p.is_dir():
        raise ExplorerError(f"The {what} path {p} is a folder, but a file is expected there.",
                            f"Give a file name, e.g. {p / 'out.json'}.")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExplorerError(f"The {what} path {p} is below {parent}, which is a file, not a folder.")
            break
    return p


def expand(path: str | Path) -> Path:
    """``Path(path).expanduser()`` with a clear error for ``~nosuchuser``."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise ExplorerError(f"The path {path} starts with an unknown user's home folder.",
                            "Check the name after ~, or write the full path.") from None


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

# Everything a results run (prune, finetune, compress, "Export everything") writes, by name: folders (a
# Hugging Face model_hf/) and files. An earlier run's copy that this run does not write again is removed with
# the swap (so a folder never mixes two runs); any other entry is the user's and is kept.
RESULT_DIRS = frozenset({"model_hf"})
RESULT_FILES = frozenset({"model.pt", "recipe.json", "report.json", "model_compact.pt", "model_compact.ts",
                          "model_sparse.npz", "model.safetensors", "model.onnx", "model.dcz", "compression.json",
                          "model_sparse_runtime.ts"})


def _writable(folder: Path) -> bool:
    """Whether the process may write into ``folder``; for root (whom permission bits do not stop) a folder
    with no write bit at all counts as read-only too, as the user who made it so meant."""
    if getattr(os, "geteuid", lambda: -1)() == 0:
        return bool(folder.stat().st_mode & 0o222)
    return os.access(folder, os.W_OK)


def check_results_folder(out_dir: str | Path) -> None:
    """Refuse, touching nothing, a results folder the swap would damage: a file, a read-only folder, or one
    where the user keeps a folder (or a file) under a name the app writes as a file (or a folder)."""
    out = expand(out_dir)
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and parent.is_dir() and not _writable(parent):   # the swap renames entries in it
        raise ExplorerError(f"The folder {parent} is not writable (read-only), so the results folder {out} cannot "
                            "be made or replaced in it.", "Make it writable (chmod u+w) or give another folder.")
    if not out.exists():
        return
    if not out.is_dir():
        raise ExplorerError(f"--out {out} is a file, not a folder.", "Give a folder for the results.")
    if not _writable(out):
        raise ExplorerError(f"The output folder {out} is not writable (read-only), so its results are not "
                            "replaced.", "Make it writable (chmod u+w) or give another folder.")
    for name in sorted(RESULT_FILES | RESULT_DIRS):
        p = out / name
        if p.is_symlink() or not p.exists():
            continue
        if p.is_dir() != (name in RESULT_DIRS):
            kind = "folder" if p.is_dir() else "file"
            raise ExplorerError(f"The output folder {out} holds a {kind} named {name} that is not the app's "
                                f"{'folder' if name in RESULT_DIRS else 'file'}; it is left as it is and "
                                "nothing is written.",
                                f"Rename or move {p}, or give another folder.")


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
    for p in _stale_siblings(out_dir, "partial"):
        shutil.rmtree(p, ignore_errors=True)
    old = _stale_siblings(out_dir, "old")
    if old and not out_dir.exists():
        os.rename(old.pop(), out_dir)
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    if out_dir.is_dir():
        for p in out_dir.glob(".*.tmp"):      # temp files of single-file writes killed part-way
            _remove_if_orphaned(p)


def _carry_over(src_dir: Path, stage: Path) -> None:
    """Hard-link (or copy) what ``src_dir`` holds and the new run does not write into ``stage``, except an
    earlier run's own outputs (:data:`RESULT_FILES`), which go with the previous folder."""
    entries = [p for p in src_dir.iterdir()
               if not (stage / p.name).exists() and p.name not in RESULT_FILES | RESULT_DIRS]
    count = sum(1 for p in entries for _ in (p.rglob("*") if p.is_dir() and not p.is_symlink() else [p]))
    if count > FOREIGN_LIMIT:
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
        # now ``out`` holds exactly this run's files (plus files of the user's own that were there; an
        # earlier run's outputs that this run does not write, e.g. model_compact.pt, are gone)

    A run killed at any moment leaves ``out`` as the previous run or as this one, never a mix;
    leftovers are tidied by the next run (:func:`recover_folder`).
    """

    def __init__(self, out_dir: str | Path):
        self.out = expand(out_dir).absolute()
        self.stage: Path | None = None

    def __enter__(self) -> Path:
        out = self.out
        check_results_folder(out)
        try:
            cwd = Path.cwd().resolve()
        except OSError:
            cwd = None
        if out.exists() and cwd is not None and (cwd == out.resolve() or out.resolve() in cwd.parents):
            raise ExplorerError(f"The output folder {out} is the current folder (or holds it).",
                                "Results are swapped in as a whole folder; give a sub-folder, e.g. --out results/.")
        for parent in out.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise ExplorerError(f"The output folder {out} is below {parent}, which is a file.")
                break
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            recover_folder(out)
            self.stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        except OSError as e:
            raise write_error(out, e) from None
        return self.stage

    def __exit__(self, exc_type, exc, tb) -> bool:
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
        except OSError as e:
            shutil.rmtree(stage, ignore_errors=True)
            raise write_error(out, e) from None
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
