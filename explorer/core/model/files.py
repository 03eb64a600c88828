"""Reading model files safely: what kind of file it is, and loading it without running its code.

Loading never runs code from a file the user did not trust: a state_dict is read with
``torch.load(weights_only=True)`` or from a ``.safetensors`` file (tensors and a JSON header only); a whole pickled module and a TorchScript archive are *code* (unpickling
calls functions the file names; TorchScript runs its ``__setstate__`` while loading and its ``forward``
when called), so both need ``trust``. Only regular files are read, only their first bytes to sniff the
kind, and a zip's checksums are verified before torch reads it (torch's reader does not check them, so
a damaged checkpoint would load silently).
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError, UntrustedFileError
from ..safe_read import looks_like_text, read_head, regular_file

TRUST_HINT = ("If you know where the file came from and trust it, open it again with --trust (in the window: "
              "tick 'Trust this file'); otherwise ask for a state_dict (torch.save(model.state_dict(), f)) or a "
              "safetensors file.")


def model_file(path: str | Path) -> Path:
    """A readable, non-empty regular file (refuses folders, devices such as /dev/zero, FIFOs)."""
    p = regular_file(path, "model", ModelLoadError)
    if p.stat().st_size == 0:
        raise ModelLoadError(f"The file '{p}' is empty.")
    return p


def is_zip(path: Path) -> bool:
    return read_head(path, 4) == b"PK\x03\x04"


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip holding ``code/`` and ``constants.pkl`` (read from the zip's directory only)."""
    if not is_zip(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.split("/", 1)[-1].startswith("code/") for n in names) and \
        any(n.endswith("constants.pkl") for n in names)


def verify_zip(path: Path) -> None:
    """Check every member's CRC (torch's own zip reader does not): flipped bytes are a clear refusal."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise corrupt(path, f"{type(e).__name__}: {e}") from None
    except Exception as e:   # zipfile raises a few others on crafted files
        raise corrupt(path, f"{type(e).__name__}: {e}") from None
    if bad is not None:
        raise ModelLoadError(f"'{path.name}' is damaged: the checksum of its part '{bad}' does not match, so some "
                             "of its bytes changed after it was written.",
                             "Copy the file again from where it came from; a damaged checkpoint would load wrong "
                             "weights silently.")


def load_torchscript(path: Path, trust: bool) -> nn.Module:
    if not trust:
        raise UntrustedFileError(
            f"'{path.name}' is a TorchScript archive: it is code, which runs while the file is loaded and again "
            "whenever the model is called, so it was refused.", TRUST_HINT)
    verify_zip(path)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise corrupt(path, f"{type(e).__name__}: {e}") from None
    return module.eval()


def load_torch(path: Path, trust: bool):
    """torch.load with weights_only unless trusted; clear errors for corrupt, hostile and unimportable files."""
    head = read_head(path, 512)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        kind = "a text file" if looks_like_text(head) else "not a zip archive or a pickle"
        raise corrupt(path, f"it is {kind}")
    if head.startswith(b"PK\x03\x04"):
        verify_zip(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        wanted = wanted_global(str(e))
        if wanted:
            raise UntrustedFileError(
                f"'{path.name}' would run code when loaded: it asks Python for '{wanted}' (a whole pickled object "
                "such as an nn.Module, or something hostile), not just tensors, so it was refused.",
                TRUST_HINT) from None
        raise corrupt(path, str(e)) from None
    except (ModuleNotFoundError, AttributeError, ImportError) as e:
        if trust:
            raise ModelLoadError(unimportable(path, e), "Make the class importable -- run from the folder that holds "
                                 "its module, or add that folder to PYTHONPATH -- or save a state_dict instead.") \
                from None
        raise corrupt(path, f"{type(e).__name__}: {e}") from None
    except Exception as e:  # zip/struct/EOF/... errors of a damaged file: never a traceback
        raise corrupt(path, f"{type(e).__name__}: {e}") from None


def wanted_global(text: str) -> str | None:
    """The global (class or function) that torch's weights_only refusal says the file wants to import."""
    m = re.search(r"(?:unsupported\s+(?:global|class)[:\s]+|GLOBAL\s+)(?:GLOBAL\s+)?([A-Za-z_][\w.]*)", text,
                  re.IGNORECASE)
    return m.group(1) if m else None


def unimportable(path: Path, e: Exception) -> str:
    text = str(e)
    m = re.search(r"Can't get attribute '([\w.]+)' on <module '([\w.]+)'", text)
    if m:
        name = f"{m.group(2)}.{m.group(1)}"
    else:
        m = re.search(r"No module named '([\w.]+)'", text)
        name = m.group(1) if m else text.splitlines()[0][:120]
    return f"'{path.name}' is a whole pickled model whose class {name} cannot be imported here."


def corrupt(path: Path, detail: str) -> ModelLoadError:
    detail = detail.strip().splitlines()[0][:200] if detail.strip() else ""
    return ModelLoadError(
        f"'{path.name}' is not a readable PyTorch checkpoint: it is corrupt, truncated, or another kind of file"
        + (f" ({detail})." if detail else "."),
        "Open a file written by torch.save (a state_dict), a .safetensors file, a sparse archive exported by this "
        "app, or a TorchScript archive.")


def state_dict_of(obj) -> dict[str, torch.Tensor] | None:
    """The tensor dict inside a loaded object (plain state_dict or {'state_dict': ...}/{'model': ...})."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) >= len(obj) - 2:  # tolerate a little metadata next to the tensors
            meta = getattr(obj, "_metadata", None)     # a state_dict's module versions: kept for load_state_dict
            if meta is not None:
                from collections import OrderedDict

                tensors = OrderedDict(tensors)
                tensors._metadata = meta
            return tensors
    return None


def is_safetensors(path: Path) -> bool:
    """A safetensors file: 8 bytes of header length, then a JSON header (tensors only: loading runs no code)."""
    head = read_head(path, 10)
    if len(head) < 10 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= min(path.stat().st_size - 8, 100 * 2**20)


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors state_dict. The format holds tensors and a JSON header only, so no trust is needed."""
    from ..extras import require

    st = require("safetensors.torch", f"Reading {path.name}")
    try:
        return dict(st.load_file(str(path), device="cpu"))
    except Exception as e:
        raise corrupt(path, f"{type(e).__name__}: {e}") from None


def read_state_dict(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """A state_dict from a torch.save file, a .safetensors file, a sparse archive (.npz) or a Deep Compression
    archive (.dcz)."""
    path = model_file(path)
    if path.suffix == ".safetensors" or is_safetensors(path):
        return load_safetensors(path)
    if path.suffix == ".npz":
        from ..formats.sparse_archive import load_sparse_archive
        return load_sparse_archive(path)
    if path.suffix == ".dcz":
        from ..formats.dcz import load_dcz
        return load_dcz(path)
    if is_torchscript(path):
        return load_torchscript(path, trust).state_dict()
    obj = load_torch(path, trust)
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    sd = state_dict_of(obj)
    if sd is None:
        raise ModelLoadError(f"'{path.name}' holds a {type(obj).__name__}, not a state_dict of tensors.",
                             "Save weights with torch.save(model.state_dict(), file).")
    return sd
