"""Model sources beyond the built-ins and torchvision: ``timm:<arch>`` and the user's own class.

- ``timm:<arch>``: any timm architecture with random weights (``pretrained=False``: nothing is
  downloaded); ``weights=FILE`` loads a local state_dict (.pt or .safetensors). The input size comes
  from the architecture's pretrained config.
- ``module.path:ClassName`` (e.g. ``mypkg.models:Net``, given as ``--arch`` or as the model spec): the
  class is imported and built with no arguments. Importing a module runs its code, so this needs
  ``trust`` and the refusal says so. The current folder is searched first, as ``python -m`` would.
  The class may say its input shape with a class attribute ``input_shape = (C, H, W)``.
"""
from __future__ import annotations

import importlib
import os
import re
import sys

from torch import nn

from ..errors import ModelLoadError, UntrustedFileError

_USER_CLASS = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")
KNOWN_PREFIXES = ("torchvision", "timm", "hf")


def is_user_class(spec: str | None) -> bool:
    """``module.path:ClassName`` (not a torchvision/timm/hf spec)."""
    if not spec:
        return False
    m = _USER_CLASS.match(spec.strip())
    return bool(m) and m.group(1) not in KNOWN_PREFIXES


def build_user_class(spec: str, trust: bool) -> nn.Module:
    """Import ``module.path`` and build ``ClassName()`` -- only with ``trust``: importing runs the module's code."""
    mod_name, cls_name = _USER_CLASS.match(spec.strip()).groups()
    if not trust:
        raise UntrustedFileError(
            f"'{spec}' names your own class: importing {mod_name} runs its code, so it was refused.",
            "If you wrote the code or trust it, add --trust (in the window: tick 'Trust this file').")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise ModelLoadError(f"The module '{mod_name}' cannot be found ({e.name} is missing).",
                             "Run from the folder that holds it, or add that folder to PYTHONPATH.") from None
    except Exception as e:
        raise ModelLoadError(f"Importing '{mod_name}' failed: {type(e).__name__}: {str(e)[:200]}.") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ModelLoadError(f"The module '{mod_name}' has no '{cls_name}'.",
                             f"Check the spelling: --arch {mod_name}:ClassName.")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelLoadError(f"'{spec}' is a {type(cls).__name__}, not an nn.Module class.")
    try:
        net = cls()
    except TypeError as e:
        raise ModelLoadError(f"'{spec}' cannot be built without arguments ({e}).",
                             "Give every argument of __init__ a default (the app builds ClassName()).") from None
    except Exception as e:
        raise ModelLoadError(f"Building '{spec}' failed: {type(e).__name__}: {str(e)[:200]}.") from None
    return net


def user_input_shape(net: nn.Module) -> tuple[int, ...] | None:
    shape = getattr(type(net), "input_shape", None)
    if isinstance(shape, (tuple, list)) and shape and all(isinstance(v, int) and v > 0 for v in shape):
        return tuple(shape)
    return None


def timm_archs() -> list[str]:
    from ..extras import require

    return list(require("timm", "timm models").list_models())


def build_timm(arch: str) -> tuple[nn.Module, tuple[int, ...], int | None]:
    """(random-init timm model, its input shape, its class count)."""
    from ..extras import offline, require

    offline()
    timm = require("timm", f"The model timm:{arch}")
    if not arch:
        raise ModelLoadError("The model spec 'timm:' needs an architecture, e.g. timm:resnet18.")
    if not timm.is_model(arch):
        close = [a for a in timm.list_models(f"*{arch}*")][:5]
        raise ModelLoadError(f"timm has no architecture '{arch}'.",
                             ("Did you mean " + ", ".join(close) + "? " if close else "")
                             + "List them with: python -c 'import timm; print(timm.list_models())'.")
    try:
        net = timm.create_model(arch, pretrained=False)
    except Exception as e:
        raise ModelLoadError(f"timm could not build {arch}: {type(e).__name__}: {str(e)[:200]}.") from None
    cfg = getattr(net, "pretrained_cfg", None) or getattr(net, "default_cfg", None) or {}
    shape = tuple(int(v) for v in cfg.get("input_size", (3, 224, 224)))
    return net, shape, getattr(net, "num_classes", None) or None
