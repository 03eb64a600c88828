"""Optional dependencies: a feature that needs one says which extra installs it.

transformers (``hf:DIR`` folders), timm (``timm:<arch>``), safetensors (``.safetensors`` files and exports),
onnx + onnxruntime (``--export onnx``, the Latency tab's onnxruntime timing) are extras of the package,
installed by ``pip install 'pruning-explorer[hf,timm,onnx]'`` (``make test`` installs them all).
"""
from __future__ import annotations

import importlib
import importlib.util
import os

from .errors import ExplorerError

EXTRA_OF = {"transformers": "hf", "timm": "timm", "safetensors": "safetensors", "onnx": "onnx",
            "onnxruntime": "onnx", "tokenizers": "hf"}


class MissingExtraError(ExplorerError):
    title = "A package is missing"


def require(module: str, feature: str):
    """Import an optional package, or explain in one sentence which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRA_OF.get(module.split(".")[0], module)
        raise MissingExtraError(f"{feature} needs the optional package '{module.split('.')[0]}', which is not "
                                "installed.", f"Install it with: pip install 'pruning-explorer[{extra}]'.") from None


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
