"""``hf:DIR``: a local Hugging Face model folder (``config.json`` + weights, as ``save_pretrained`` writes it).

Loaded with transformers' ``from_pretrained`` on the folder only: ``local_files_only`` and the hub's
offline mode are set, so a folder that lacks a file is a clear error, never a download, and
``trust_remote_code`` is never set -- a folder whose config names its own code (``auto_map``) is refused
with that reason. Supported heads: image classification (takes image datasets; input
``num_channels x image_size x image_size``) and causal language models (Llama family, GPT-2, ...; input a
block of token ids, dataset ``text:FILE``, metric perplexity). Attention runs in transformers' eager
implementation (plain matrix products: every projection is seen, traced and exported alike) and the
key/value cache is off. A pruned model is written back as a folder ``from_pretrained`` loads
(:func:`save_folder`).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError, UntrustedFileError
from ..extras import offline, require

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
IMAGE_SUFFIXES = ("ForImageClassification",)
DEFAULT_BLOCK = 128          # tokens per block of a language model's text (at most its context length)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# files of a folder that are the model itself (save_folder writes its own): every other top-level file -- tokenizer,
# processor, generation config, chat template, model card -- travels with the exported folder
_MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".ot",
                   ".py", ".pyc")


def _transformers():
    offline()
    tf = require("transformers", "Opening a Hugging Face folder (hf:DIR)")
    try:
        tf.utils.logging.set_verbosity_error()
        tf.utils.logging.disable_progress_bar()
    except Exception:
        pass
    return tf


def folder_of(spec: str) -> Path:
    from ..fileio import expand

    raw = spec[len("hf:"):].strip()
    if not raw:
        raise ModelLoadError("The model spec 'hf:' needs a folder: write it as hf:DIR.",
                             "DIR is a folder written by save_pretrained (config.json and model.safetensors).")
    p = expand(raw)
    if not p.exists():
        raise ModelLoadError(f"The Hugging Face folder '{p}' does not exist.",
                             "hf:DIR reads a local folder (config.json + model.safetensors); nothing is downloaded.")
    if not p.is_dir():
        raise ModelLoadError(f"'{p}' is a file, not a Hugging Face model folder.",
                             "hf:DIR needs the folder save_pretrained wrote (config.json + model.safetensors).")
    return p


def read_config(folder: Path) -> dict:
    from ..errors import PlanError
    from ..safe_read import read_json

    f = folder / "config.json"
    if not f.exists():
        raise ModelLoadError(f"'{folder}' has no config.json, so it is not a Hugging Face model folder.",
                             "Write the folder with model.save_pretrained(DIR); nothing is downloaded.")
    try:
        cfg = read_json(f, "model config")
    except PlanError as e:
        raise ModelLoadError(e.message, e.hint) from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{f} is not a JSON object, so not a model config.")
    return cfg


def check_folder(folder: Path, cfg: dict) -> tuple[str, str]:
    """(architecture class name, task "causal-lm" | "image-classification"), or a clear refusal."""
    if cfg.get("auto_map"):
        raise UntrustedFileError(
            f"The model in '{folder.name}' needs trust_remote_code: its config names model code inside the folder "
            f"({', '.join(sorted(cfg['auto_map']))[:120]}), and loading would run it, so it was refused.",
            "Only architectures that transformers itself implements are opened (trust_remote_code is never set).")
    if not any((folder / w).exists() for w in WEIGHT_FILES) and not any(folder.glob("*.safetensors")):
        raise ModelLoadError(f"'{folder}' has a config.json but no weights (model.safetensors).",
                             "Save the model with save_pretrained(DIR) so the weights are in the folder; nothing "
                             "is downloaded.")
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs and isinstance(archs[0], str) else ""
    if arch.endswith(CAUSAL_SUFFIXES):
        return arch, "causal-lm"
    if arch.endswith(IMAGE_SUFFIXES):
        return arch, "image-classification"
    raise ModelLoadError(f"The model in '{folder.name}' is a {arch or 'model without a named architecture'}; "
                         "hf:DIR opens image classifiers (…ForImageClassification) and causal language models "
                         "(…ForCausalLM, GPT2LMHeadModel).",
                         "Save the model with its task head (e.g. AutoModelForCausalLM) and open that folder.")


def has_tokenizer(folder: Path) -> bool:
    return any((folder / f).exists() for f in TOKENIZER_FILES)


def load_folder(spec: str):
    """(module, info dict: task, input_shape, num_classes, vocab_size, tokenizer folder, notes)."""
    folder = folder_of(spec)
    cfg = read_config(folder)
    arch, task = check_folder(folder, cfg)
    tf = _transformers()
    auto = tf.AutoModelForCausalLM if task == "causal-lm" else tf.AutoModelForImageClassification
    try:
        module = auto.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False,
                                      attn_implementation="eager", dtype=torch.float32)
    except (ValueError, KeyError) as e:
        msg = str(e).strip().splitlines()[0][:240] if str(e).strip() else type(e).__name__
        if "trust_remote_code" in msg:
            raise UntrustedFileError(f"The model in '{folder.name}' needs trust_remote_code, which is never set.",
                                     "Only architectures that transformers implements are opened.") from None
        raise ModelLoadError(f"transformers could not build the model in '{folder.name}': {msg}") from None
    except (OSError, EnvironmentError) as e:
        msg = str(e).strip().splitlines()[0][:240] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"'{folder.name}' is missing a file transformers needs ({msg}).",
                             "Nothing is downloaded: save the whole model with save_pretrained(DIR).") from None
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:240] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"transformers could not load '{folder.name}' ({type(e).__name__}: {msg}).") from None
    module.eval()
    mc = module.config
    if hasattr(mc, "use_cache"):
        mc.use_cache = False
    notes = [f"Hugging Face {arch} ({task}) from {folder}"]
    if task == "causal-lm":
        ctx = getattr(mc, "max_position_embeddings", None) or getattr(mc, "n_positions", None) or DEFAULT_BLOCK
        info = dict(task=task, input_shape=(min(DEFAULT_BLOCK, int(ctx)),), num_classes=None,
                    vocab_size=int(mc.vocab_size), tokenizer=str(folder) if has_tokenizer(folder) else None)
    else:
        size = getattr(mc, "image_size", 224)
        size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
        info = dict(task=task, input_shape=(int(getattr(mc, "num_channels", 3)), *size),
                    num_classes=int(getattr(mc, "num_labels", 0)) or None, vocab_size=None, tokenizer=None)
    info["notes"] = notes
    info["arch"] = arch
    return module, info


class LogitsOnly(nn.Module):
    """A transformers model as a plain function of one tensor to its logits (for tracing and ONNX)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        if x.dtype in (torch.int64, torch.int32):
            # an explicit all-ones attention mask: transformers then skips its packed-sequence check (torch.diff,
            # which the ONNX exporter lacks); the logits are the same
            out = self.model(x, attention_mask=torch.ones_like(x))
        else:
            out = self.model(x)
        if hasattr(out, "logits"):
            return out.logits
        return out[0] if isinstance(out, (tuple, list)) else out


def is_hf(module: nn.Module) -> bool:
    return hasattr(module, "save_pretrained") and hasattr(module, "config") and hasattr(module.config, "to_dict")


def companion_files(source: Path) -> list[Path]:
    """The top-level files of the Hugging Face folder ``source`` that are not the model (weights, their index,
    config.json, code): tokenizer and processor files, generation_config.json, a chat template, the model card."""
    if not source.is_dir():
        return []
    out = []
    for f in sorted(source.iterdir()):
        n = f.name
        if (n.startswith(".") or not f.is_file() or n == "config.json" or n.endswith(_MODEL_SUFFIXES)
                or (n.endswith(".index.json") and any(n.startswith(w) for w in WEIGHT_FILES))):
            continue
        out.append(f)
    return out


def source_folder(module: nn.Module) -> Path | None:
    """The folder a transformers model was loaded from (``from_pretrained`` records it in its config)."""
    p = getattr(getattr(module, "config", None), "_name_or_path", None) or getattr(module, "name_or_path", None)
    return Path(p) if p and Path(p).is_dir() else None


def save_folder(module: nn.Module, state: dict[str, torch.Tensor], path: Path, example: torch.Tensor,
                source: Path | None = None) -> Path:
    """Write ``module`` with ``state`` as a folder ``from_pretrained`` loads (safetensors), then load it back
    from there and check it computes the same logits on ``example`` before anyone relies on it. The source
    folder's other files (``source``, else the folder the model was loaded from: :func:`companion_files`) are
    copied next to it, so ``AutoTokenizer``/``AutoImageProcessor.from_pretrained`` and pipelines load it too."""
    import shutil

    from ..errors import ExplorerError
    from .layers import load_state

    tf = _transformers()
    m = copy.deepcopy(module)
    load_state(m, state)
    m.eval()
    path = Path(path)
    source = Path(source) if source is not None else source_folder(module)
    m.save_pretrained(str(path), safe_serialization=True)
    for f in companion_files(source) if source is not None else ():
        if not (path / f.name).exists():        # what save_pretrained wrote (generation_config.json) stays
            shutil.copyfile(f, path / f.name)
    auto = tf.AutoModelForCausalLM if getattr(m.config, "architectures", [""])[0].endswith(CAUSAL_SUFFIXES) \
        else tf.AutoModelForImageClassification
    back = auto.from_pretrained(str(path), local_files_only=True, trust_remote_code=False,
                                attn_implementation="eager", dtype=torch.float32).eval()
    with torch.inference_mode():
        a, b = LogitsOnly(m)(example), LogitsOnly(back)(example)
    if not torch.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise ExplorerError(f"The Hugging Face folder {path.name} did not load back to the same model.")
    from ..fileio import file_mode

    for f in path.iterdir():        # transformers writes some files private; exports get the usual permissions
        if f.is_file():
            f.chmod(file_mode(path / ".none"))
    return path
