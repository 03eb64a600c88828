"""Model specs -> ``nn.Module``.

Spec strings (a contract; the README's table lists them):

- ``digits-cnn`` (default), ``digits-mlp``, ``digits-vgg``: built-in models with trained
  weights from ``resources/models``; ``tiny-lm``: the built-in language model (``tiny_lm.py``, dataset
  ``tiny-text``); ``lab-vgg``: the pruning lab's CIFAR VGG
  (random weights unless ``weights`` is given);
- ``torchvision:<arch>``: any torchvision classification architecture with
  random weights (``weights=FILE`` loads a local state_dict);
  ``torchvision:<arch>:<WEIGHTS>`` (e.g. ``IMAGENET1K_V1``) downloads
  torchvision's weights, which needs the internet;
- ``hf:DIR``: a local Hugging Face model folder (``hf.py``); ``timm:<arch>``:
  a timm architecture with random weights; ``module.path:ClassName``: the
  user's own class, built with no arguments -- only with ``trust=True``
  (``sources.py``);
- a file path: a state_dict (.pt or .safetensors; ``arch`` names the
  architecture, any spec above), a TorchScript archive, or a whole pickled
  module -- the last two only with ``trust=True``, because loading them runs
  code from the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from explorer import RESOURCES

from ..errors import ModelLoadError, OfflineError
from ..fileio import expand
from ..finite import all_finite
from . import nets, tiny_lm
from .files import (
    is_safetensors,
    is_torchscript,
    load_torch,
    load_torchscript,
    model_file,
    read_state_dict,
    state_dict_of,
)
from .layers import load_state
from .sources import build_timm, build_user_class, is_user_class, user_input_shape

DEFAULT_MODEL = "digits-cnn"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int | None
    default_dataset: str
    weights_file: str | None
    description: str
    task: str = "classification"        # or "causal-lm"
    vocab_size: int | None = None       # causal language models


BUILTINS: dict[str, BuiltinModel] = {
    b.name: b for b in [
        BuiltinModel("digits-cnn", nets.DigitsCNN, (1, 8, 8), 10, "digits", "digits-cnn.pt",
                     "small VGG-style conv net trained on the built-in digits"),
        BuiltinModel("digits-mlp", nets.DigitsMLP, (1, 8, 8), 10, "digits", "digits-mlp.pt",
                     "64-300-100-10 MLP (LeNet-300-100 shape) trained on the built-in digits"),
        BuiltinModel("digits-vgg", nets.DigitsVGG, (1, 32, 32), 10, "digits", "digits-vgg.pt",
                     "the lab VGG's shape, narrow, trained on the digits upscaled to 32x32 (real compaction speedups)"),
        BuiltinModel("tiny-lm", tiny_lm.TinyLM, (tiny_lm.BLOCK,), None, "tiny-text", "tiny-lm.pt",
                     "LLaMA-style byte-level decoder (4 blocks, d=256, 3.3 M parameters) trained on Python's "
                     "documentation text", task="causal-lm", vocab_size=tiny_lm.VOCAB),
        BuiltinModel("lab-vgg", nets.LabVGG, (3, 32, 32), 10, "synthetic", None,
                     "the MIT 6.5940 pruning lab's CIFAR-10 VGG (random weights; --weights loads the lab checkpoint)"),
    ]
}


@dataclass
class LoadedModel:
    """A model resolved from a spec, with what is known about its input."""

    spec: str
    module: nn.Module
    input_shape: tuple[int, ...] | None
    num_classes: int | None
    default_dataset: str
    source: str  # "builtin" | "torchvision" | "state_dict" | "torchscript" | "pickle" | "hf" | "timm" | "class"
    arch: str | None = None
    weights: str | None = None
    notes: list[str] = field(default_factory=list)
    task: str = "classification"        # or "causal-lm" (inputs: token ids; metric: perplexity)
    vocab_size: int | None = None       # causal language models
    tokenizer: str | None = None        # a folder with the model's tokenizer (hf:DIR), if it has one

    @property
    def name(self) -> str:
        return Path(self.spec).name if self.source in ("state_dict", "torchscript", "pickle") else self.spec


def torchvision_archs() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def torchvision_input_shape(arch: str) -> tuple[int, int, int]:
    return (3, 299, 299) if arch == "inception_v3" else (3, 224, 224)


def load_model(spec: str | None = None, weights: str | Path | None = None, arch: str | None = None,
               trust: bool = False) -> LoadedModel:
    """Resolve a model spec (see module docstring). Raises :class:`ModelLoadError` with a clear message."""
    if not spec and arch:
        spec, arch = arch, None             # --arch alone names the model (e.g. your own class)
    spec = (spec or DEFAULT_MODEL).strip()
    if spec in BUILTINS:
        return _builtin(spec, weights, trust)
    if spec.startswith("torchvision:"):
        return _torchvision(spec, weights, trust)
    if spec.startswith(("hf:", "timm:")) or is_user_class(spec):
        return _other_source(spec, weights, trust)
    path = expand(spec)      # ~nosuchuser: a clear error, not a RuntimeError
    if path.exists() or any(sep in spec for sep in ("/", "\\")) or path.suffix:
        return _from_file(spec, path, arch, trust)
    raise ModelLoadError(f"Unknown model '{spec}'.",
                         f"Use a built-in ({', '.join(BUILTINS)}), torchvision:<arch> (e.g. torchvision:resnet18), "
                         "timm:<arch>, hf:DIR, module.path:ClassName (with --trust), or the path of a checkpoint "
                         "file.")


def _other_source(spec: str, weights, trust: bool) -> LoadedModel:
    """hf:DIR, timm:<arch>, module.path:ClassName."""
    if spec.startswith("hf:"):
        from .hf import load_folder

        if weights is not None:
            raise ModelLoadError("An hf:DIR folder holds its own weights; --weights does not apply to it.",
                                 "Open another folder, or a state_dict with --arch hf:DIR.")
        module, info = load_folder(spec)
        task = info["task"]
        return LoadedModel(spec=spec, module=module, input_shape=info["input_shape"], num_classes=info["num_classes"],
                           default_dataset="synthetic", source="hf", arch=spec, weights=spec[3:],
                           notes=info["notes"], task="causal-lm" if task == "causal-lm" else "classification",
                           vocab_size=info["vocab_size"], tokenizer=info["tokenizer"])
    if spec.startswith("timm:"):
        module, shape, classes = seeded(lambda: build_timm(spec[len("timm:"):].strip()))
        source = "timm"
    else:
        module = seeded(lambda: build_user_class(spec, trust))
        shape, classes, source = user_input_shape(module), None, "class"
    notes = []
    if weights is not None:
        load_state_into(module, read_state_dict(Path(weights), trust), spec, Path(weights).name)
    else:
        notes.append("random weights")
    module.eval()
    return LoadedModel(spec=spec, module=module, input_shape=shape, num_classes=classes, default_dataset="synthetic",
                       source=source, arch=spec, weights=str(weights) if weights is not None else None, notes=notes)


RANDOM_INIT_SEED = 0


def seeded(factory):
    """Build a model with a fixed random init (same weights on every load, so recipes replay),
    without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        return factory()


def _builtin(name: str, weights, trust: bool) -> LoadedModel:
    b = BUILTINS[name]
    module = seeded(b.factory)
    notes = []
    if weights is not None:
        load_state_into(module, read_state_dict(Path(weights), trust), name, Path(weights).name)
        source_weights = str(weights)
    elif b.weights_file:
        f = RESOURCES / "models" / b.weights_file
        if not f.exists():
            raise ModelLoadError(f"The built-in weights {f} are missing.",
                                 "Re-create them with `make retrain` (pruning-explorer train-builtin).")
        load_state_into(module, read_state_dict(f, trust=False), name, f.name)
        source_weights = str(f)
    else:
        source_weights = None
        notes.append("random weights")
    module.eval()
    return LoadedModel(spec=name, module=module, input_shape=b.input_shape, num_classes=b.num_classes,
                       default_dataset=b.default_dataset, source="builtin", arch=name, weights=source_weights,
                       notes=notes, task=b.task, vocab_size=b.vocab_size)


def _torchvision(spec: str, weights, trust: bool) -> LoadedModel:
    import torchvision

    parts = spec.split(":")
    arch = parts[1] if len(parts) > 1 else ""
    enum_name = parts[2] if len(parts) > 2 else None
    archs = torchvision_archs()
    if arch not in archs:
        close = [a for a in archs if arch and (arch in a or a in arch)][:5]
        raise ModelLoadError(f"torchvision has no classification architecture '{arch}'.",
                             ("Did you mean " + ", ".join(close) + "? " if close else "")
                             + "Run `pruning-explorer info --list-models` for the list.")
    notes = []
    if enum_name:
        if weights is not None:
            raise ModelLoadError("Give either torchvision weights by name or --weights FILE, not both.")
        try:
            enum = torchvision.models.get_model_weights(arch)[enum_name]
        except KeyError:
            names = [w.name for w in torchvision.models.get_model_weights(arch)]
            raise ModelLoadError(f"torchvision has no weights '{enum_name}' for {arch}.",
                                 f"Available: {', '.join(names)}.") from None
        try:
            module = torchvision.models.get_model(arch, weights=enum)
        except Exception as e:  # URLError, socket errors, HTTP errors, hash mismatch...
            raise OfflineError(
                f"Could not download torchvision's {arch} weights {enum_name} ({type(e).__name__}: {e}).",
                "This machine seems to be offline. Download the file on a machine with internet "
                f"({enum.url}) and open it here with --weights FILE.") from None
        notes.append(f"torchvision weights {enum_name}")
        source_weights = enum_name
    else:
        module = seeded(lambda: torchvision.models.get_model(arch, weights=None))
        if weights is not None:
            load_state_into(module, read_state_dict(Path(weights), trust), spec, Path(weights).name)
            source_weights = str(weights)
        else:
            source_weights = None
            notes.append("random weights")
    module.eval()
    return LoadedModel(spec=spec, module=module, input_shape=torchvision_input_shape(arch), num_classes=None,
                       default_dataset="synthetic", source="torchvision", arch=f"torchvision:{arch}",
                       weights=source_weights, notes=notes)


# ---------------------------------------------------------------- files (reading them safely: files.py)

def load_state_into(module: nn.Module, sd: dict[str, torch.Tensor], arch: str, fname: str) -> None:
    """load_state_dict(strict) with a readable list of mismatching keys and shapes."""
    own = module.state_dict()
    # tolerate 'module.' prefixes from DataParallel checkpoints
    if sd and all(k.startswith("module.") for k in sd) and not any(k.startswith("module.") for k in own):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    # BatchNorm's num_batches_tracked is optional in old checkpoints
    missing_real = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing_real or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): " + "; ".join(shapes[:4]) + (" ..." if len(shapes) > 4 else ""))
        if missing_real:
            parts.append(f"{len(missing_real)} key(s) missing from the file: " + ", ".join(missing_real[:5])
                         + (" ..." if len(missing_real) > 5 else ""))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): " + ", ".join(unexpected[:5])
                         + (" ..." if len(unexpected) > 5 else ""))
        raise ModelLoadError(f"'{fname}' does not fit the architecture {arch}: " + "; ".join(parts) + ".",
                             "Choose the architecture the checkpoint was saved from (--arch).")
    bad = [k for k, v in sd.items() if not all_finite(v)]
    load_state(module, sd, strict=False)     # the file's metadata (module versions), else the module's own
    if bad:
        # loaded, but the session reports it; pruning must not silently hide NaN/inf
        module._explorer_nonfinite = bad  # type: ignore[attr-defined]


def guess_arch(sd: dict[str, torch.Tensor]) -> str | None:
    """A built-in architecture whose parameter names and shapes match ``sd`` exactly, if any."""
    for name, b in BUILTINS.items():
        own = b.factory().state_dict()
        keys = {k for k in own if not k.endswith("num_batches_tracked")}
        sd_keys = {k for k in sd if not k.endswith("num_batches_tracked")}
        if keys == sd_keys and all(tuple(own[k].shape) == tuple(sd[k].shape) for k in keys):
            return name
    return None


def _from_file(spec: str, path: Path, arch: str | None, trust: bool) -> LoadedModel:
    if not path.exists():
        raise ModelLoadError(f"The model file '{path}' does not exist.",
                             "Check the path, or use a built-in model (digits-cnn, digits-mlp) or torchvision:<arch>.")
    path = model_file(path)
    if path.suffix in (".npz", ".dcz", ".safetensors") or is_safetensors(path):
        obj = read_state_dict(path)
    elif is_torchscript(path):
        module = load_torchscript(path, trust)
        return LoadedModel(spec=str(path), module=module, input_shape=None, num_classes=None,
                           default_dataset="synthetic", source="torchscript", notes=["TorchScript archive (trusted)"])
    else:
        obj = load_torch(path, trust)
    if isinstance(obj, nn.Module):
        obj.eval()
        return LoadedModel(spec=str(path), module=obj, input_shape=None, num_classes=None,
                           default_dataset="synthetic", source="pickle", notes=["whole pickled module (trusted)"])
    sd = state_dict_of(obj)
    if sd is None:
        raise ModelLoadError(f"'{path.name}' holds a {type(obj).__name__}, not a model or a state_dict.",
                             "Open a state_dict (torch.save(model.state_dict(), f)) with --arch, or a TorchScript "
                             "archive with --trust.")
    if not arch and path.suffix == ".npz":
        from ..formats.sparse_archive import read_meta
        arch = read_meta(path).get("arch")
    if not arch and path.suffix == ".dcz":
        from ..formats.dcz import read_dcz_meta
        arch = read_dcz_meta(path).get("arch")
    arch = arch or guess_arch(sd)
    if not arch:
        raise ModelLoadError(
            f"'{path.name}' is a state_dict (weights only), so the architecture must be named.",
            "Pass --arch with a model spec such as digits-cnn, lab-vgg, torchvision:resnet18, timm:resnet18, "
            "hf:DIR or mypkg.models:Net (in the window, pick it in the dialog).")
    known = arch in BUILTINS or arch.startswith(("torchvision:", "timm:", "hf:")) or is_user_class(arch)
    base = load_model(arch, trust=trust) if known else None
    if base is None:
        raise ModelLoadError(f"Unknown architecture '{arch}' for {path.name}.",
                             f"Use a built-in ({', '.join(BUILTINS)}), torchvision:<arch>, timm:<arch>, hf:DIR or "
                             "module.path:ClassName (with --trust).")
    module = BUILTINS[arch].factory() if arch in BUILTINS else base.module
    load_state_into(module, sd, arch, path.name)
    module.eval()
    return LoadedModel(spec=str(path), module=module, input_shape=base.input_shape, num_classes=base.num_classes,
                       default_dataset=base.default_dataset, source="state_dict", arch=arch, weights=str(path),
                       notes=[f"state_dict for {arch}"], task=base.task, vocab_size=base.vocab_size,
                       tokenizer=base.tokenizer)
