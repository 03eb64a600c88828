"""Optional dependencies: a feature that needs one says which extra installs it.

transformers (``hf:DIR`` folders), timm (``timm:<arch>``), safetensors (``.safetensors`` files and exports),
onnx + onnxruntime (``--export onnx``, the Latency tab's onnxruntime timing) are extras of the package,
installed by ``pip install 'pruning-explorer[hf,timm,onnx]'`` (``make test`` installs them all).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading

from .errors import ExplorerError

EXTRA_OF = {"transformers": "hf", "timm": "timm", "safetensors": "safetensors", "onnx": "onnx",
            "onnxruntime": "onnx", "tokenizers": "hf"}


class MissingExtraError(ExplorerError):
    title = "A package is missing"


_IMPORTS = threading.RLock()   # held while an import runs with a package hidden (without), and by require


def require(module: str, feature: str):
    """Import an optional package, or explain in one sentence which extra provides it."""
    try:
        with _IMPORTS:
            return importlib.import_module(module)
    except ImportError:
        extra = EXTRA_OF.get(module.split(".")[0], module)
        raise MissingExtraError(f"{feature} needs the optional package '{module.split('.')[0]}', which is not "
                                "installed.", f"Install it with: pip install 'pruning-explorer[{extra}]'.") from None


def import_without(module: str, hidden: str):
    """Import ``module`` with the package ``hidden`` looking uninstalled to it (its ``import hidden`` raises
    ImportError), unless ``hidden`` is imported already; a later import of ``hidden`` works as usual. For a
    dependency that imports an optional package it only needs for a part this app never calls."""
    with _IMPORTS:
        if module in sys.modules or hidden in sys.modules:
            return importlib.import_module(module)
        sys.modules[hidden] = None            # the import system's "not installed" mark
        try:
            return importlib.import_module(module)
        finally:
            if hidden in sys.modules and sys.modules[hidden] is None:
                del sys.modules[hidden]


def available(module: str) -> bool:
    try:
        importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    return importlib.util.find_spec(module) is not None


def offline() -> None:
    """Never reach the Hugging Face Hub: every model and tokenizer comes from a local folder."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import huggingface_hub.constants as c  # already imported (e.g. by timm): its flag was read then
        c.HF_HUB_OFFLINE = True
    except Exception:
        pass
