"""A model's stack of repeated blocks: what the ``block`` granularity drops (depth pruning).

``find_blocks(module)`` looks for containers (``nn.ModuleList`` / ``nn.Sequential``) whose children are two or
more modules of one class, each holding a Linear or a convolution -- a transformer's decoder layers (Hugging Face
``model.layers``, GPT-2's ``transformer.h``, any such ModuleList) or a CNN's residual stages (torchvision ResNet's
``layerN``). A block can be *skipped* (replaced by the identity) when its output has its input's shape: with an
example input that is checked in one forward pass; without one, a block that has a ``downsample`` module (ResNet's
first block of a stage) cannot be skipped and every other block can. A plain ``Sequential`` of layers of different
classes (the digits models, VGG) has no blocks: ``find_blocks`` returns None.

``without_blocks(module, paths)`` returns a copy that is really shallower: the dropped blocks are removed from their
containers (not masked), and a transformers model's config and attention ``layer_idx`` are renumbered so it still
runs with a key-value cache. ``skipping(module, paths)`` makes blocks act as the identity in place, for measuring.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import torch
from torch import nn

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Block:
    path: str              # e.g. "model.layers.3", "layer2.1"
    container: str         # the ModuleList / Sequential holding it
    index: int             # its position there
    skippable: bool
    why: str = ""          # why it cannot be skipped (empty when it can)


@dataclass
class BlockStack:
    blocks: list[Block] = field(default_factory=list)
    kind: str = "transformer"          # "transformer" (one ModuleList) or "residual" (CNN stages)

    @property
    def skippable(self) -> list[Block]:
        return [b for b in self.blocks if b.skippable]

    @property
    def paths(self) -> list[str]:
        return [b.path for b in self.blocks]

    def as_dict(self) -> dict:
        return {"kind": self.kind, "blocks": [{"path": b.path, "skippable": b.skippable, **({"why": b.why} if b.why
                                                                                           else {})}
                                              for b in self.blocks]}


def _holds_weights(m: nn.Module) -> bool:
    # nn.Linear / convolutions, and transformers' Conv1D (GPT-2): any 2-D or larger weight
    return any(isinstance(s, _WEIGHTED) or (isinstance(getattr(s, "weight", None), torch.Tensor)
                                            and s.weight.dim() >= 2) for s in m.modules())


def _containers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-most ModuleLists / Sequentials of >= 2 same-class children that hold weights (none nested in another)."""
    found: list[tuple[str, nn.Module]] = []
    for name, m in module.named_modules():
        if not isinstance(m, (nn.ModuleList, nn.Sequential)) or isinstance(m, _WEIGHTED):
            continue
        kids = list(m.children())
        if len(kids) < 2 or len({type(k) for k in kids}) != 1 or isinstance(kids[0], _WEIGHTED):
            continue
        if not all(_holds_weights(k) and len(list(k.children())) > 0 for k in kids):
            continue
        if any(name.startswith(p + ".") or p == "" for p, _ in found):
            continue
        found.append((name, m))
    return found


def first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    return getattr(x, "last_hidden_state", None) if not isinstance(x, (tuple, list)) else None


def _shapes(module: nn.Module, paths: list[str], example) -> dict[str, bool]:
    """{block path: its output has its input's shape} from one forward pass of ``example``."""
    mods = dict(module.named_modules())
    seen: dict[str, bool] = {}
    handles = []

    def hook(p):
        def fn(_m, args, kwargs, out):
            x = args[0] if args else kwargs.get("hidden_states")
            xi, xo = first_tensor(x), first_tensor(out)
            seen.setdefault(p, xi is not None and xo is not None and xi.shape == xo.shape)
        return fn

    for p in paths:
        handles.append(mods[p].register_forward_hook(hook(p), with_kwargs=True))
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(example)
    finally:
        module.train(was)
        for h in handles:
            h.remove()
    return seen


def find_blocks(module: nn.Module, example: torch.Tensor | None = None) -> BlockStack | None:
    """The model's stack of repeated blocks, or None when it has none (see the module's docstring)."""
    if isinstance(module, torch.jit.ScriptModule):
        return None
    conts = _containers(module)
    if not conts:
        return None
    entries = [(f"{c}.{i}" if c else str(i), c, i, b) for c, m in conts for i, b in enumerate(m.children())]
    shapes = _shapes(module, [e[0] for e in entries], example) if example is not None else None
    blocks = []
    for path, cont, i, b in entries:
        if shapes is not None:
            ok = shapes.get(path, False)
            why = "" if ok else ("its output shape differs from its input's" if path in shapes
                                 else "it did not run on the example input")
        else:
            ok = getattr(b, "downsample", None) is None
            why = "" if ok else "it changes the feature map's shape (it has a downsample)"
        blocks.append(Block(path, cont, i, ok, why))
    kind = "transformer" if len(conts) == 1 and isinstance(conts[0][1], nn.ModuleList) else "residual"
    return BlockStack(blocks, kind)


def _identity_output(args, kwargs, out):
    x = args[0] if args else kwargs.get("hidden_states")
    if isinstance(out, torch.Tensor):
        return x
    if isinstance(out, tuple):
        return (x,) + tuple(out[1:])
    if isinstance(out, list):
        return [x] + list(out[1:])
    return x


@contextlib.contextmanager
def skipping(module: nn.Module, paths):
    """Within the block, the blocks at ``paths`` return their input (their own computation still runs; the
    result is discarded): the reference a shallower model is checked against."""
    mods = dict(module.named_modules())
    handles = [mods[p].register_forward_hook(lambda _m, a, k, o: _identity_output(a, k, o), with_kwargs=True)
               for p in paths]
    try:
        yield module
    finally:
        for h in handles:
            h.remove()


def without_blocks(module: nn.Module, stack: BlockStack, drop) -> nn.Module:
    """A deep copy of ``module`` with the blocks whose paths are in ``drop`` removed from their containers."""
    drop = set(drop)
    by_path = {b.path: b for b in stack.blocks}
    bad = [p for p in drop if p not in by_path or not by_path[p].skippable]
    if bad:
        raise ValueError(f"not skippable blocks: {bad}")
    m = copy.deepcopy(module)
    mods = dict(m.named_modules())
    conts = dict.fromkeys(b.container for b in stack.blocks)
    for c in conts:
        old = mods[c]
        idx = [i for i, name in enumerate(n for n, _ in old.named_children())
               if (f"{c}.{name}" if c else name) not in drop]
        kids = list(old.children())
        kept = [kids[i] for i in idx]
        new = nn.ModuleList(kept) if isinstance(old, nn.ModuleList) else nn.Sequential(*kept)
        _set_child(m, c, new)
        if isinstance(old, nn.ModuleList):
            _renumber(m, new, len(old), idx)
    return m.eval()


def _set_child(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def _renumber(model: nn.Module, layers: nn.ModuleList, old_count: int, kept_idx: list[int]) -> None:
    """A transformers model: the config's layer count (and per-layer lists) and each attention's ``layer_idx``."""
    for i, block in enumerate(layers):
        for sub in block.modules():
            if isinstance(getattr(sub, "layer_idx", None), int):
                sub.layer_idx = i
    cfg = getattr(model, "config", None)
    if cfg is None:
        return
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if getattr(cfg, key, None) == old_count:
            setattr(cfg, key, len(layers))
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, list) and len(types) == old_count:
        cfg.layer_types = [types[k] for k in kept_idx]
