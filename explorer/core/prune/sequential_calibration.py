"""Sequential calibration: layers pruned one after another, each measured on the inputs of the network *as
already pruned* -- SparseGPT's order (Frantar & Alistarh 2023), also used by sequential wanda.

For a stack of transformer blocks (an ``nn.ModuleList`` of same-type blocks holding the layers), block by block,
so memory stays at the model plus one block's calibration activations:

1. the calibration inputs run up to the first block once; what enters it (its arguments, e.g. the hidden states,
   attention mask and rotary embeddings) is kept, one entry per chunk of samples;
2. inside the block, its layers are pruned in forward order: hooks on the layers not yet done record the
   statistic of the first one reached (and of every layer reached with the *same* input tensor, e.g. q/k/v or
   gate/up, whose inputs the others cannot change), the forward stops there, those layers are pruned, repeat;
3. the activations run through the *pruned* block and become the next block's inputs.

A model without such a stack is one "block" whose arguments are the calibration inputs themselves (each layer's
statistic then costs a forward pass of the pruned network up to that layer). Layers of the plan outside the stack
are visited that way, before it (those ahead of it in ``layers``) or after it (e.g. an ``lm_head``). A ModuleList
whose blocks do not each run once on the previous one's output (checked on one sample: parallel heads) is no
stack.

Statistics per layer (``need``): ``"hessian"``: H = X Xᵀ of the layer's input columns (float32: a Linear's input
features, a conv's unfolded C·kh·kw columns); ``"norms"``: Σ x_j² per input feature of a Linear / per input channel
of a conv (float64, like :func:`calibration.input_norms`).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from ..jobs import CancelToken, ProgressFn, ProgressMeter
from .reconstruct import _columns, _Stop

Step = Callable[[str, nn.Module, torch.Tensor], None]   # (layer name, its module, statistic): prunes it in place


def block_stack(module: nn.Module, layers: list[str]) -> tuple[str, nn.ModuleList] | None:
    """The ModuleList of repeated blocks holding most of ``layers`` (name, list), or None."""
    best, best_n = None, 0
    for name, m in module.named_modules():
        if not isinstance(m, nn.ModuleList) or len(m) < 2 or len({type(b) for b in m}) != 1:
            continue
        prefix = f"{name}." if name else ""
        n = sum(1 for lay in layers if lay.startswith(prefix) and lay[len(prefix):].split(".")[0].isdigit())
        if n > best_n:
            best, best_n = (name, m), n
    return best


def _accumulate(m: nn.Module, x: torch.Tensor, need: str, acc: torch.Tensor | None) -> torch.Tensor:
    x = x.detach()
    if need == "norms":
        t = x.double()
        s = (t.pow(2).reshape(-1, t.shape[-1]).sum(dim=0) if m.weight.dim() == 2     # Linear, HF Conv1D
             else t.pow(2).transpose(0, 1).reshape(t.shape[1], -1).sum(dim=1))
        return s if acc is None else acc + s
    if isinstance(m, nn.Linear):
        cols = x.reshape(-1, x.shape[-1]).float()
        h = cols.T @ cols
    else:
        cols = _columns(m, x)
        if m.bias is not None:
            cols = cols[:-1]
        cols = cols.float()
        h = cols @ cols.T
    return h if acc is None else acc.add_(h)


def _run(block: nn.Module, args: tuple, kwargs: dict):
    with torch.no_grad():
        return block(*args, **kwargs)


def _prune_block(block: nn.Module, prefix: str, names: list[str], inputs: list, need, step: Step,
                 meter: ProgressMeter, cancel: CancelToken | None, times: dict[str, float]) -> None:
    """Prune ``names`` (full names; modules inside ``block``) in forward order on the block's inputs."""
    mods = {n: block.get_submodule(n[len(prefix):]) if n[len(prefix):] else block for n in names}
    remaining = list(names)
    while remaining:
        stats: dict[str, torch.Tensor] = {}
        order: list[str] = []
        alias: dict[str, str] = {}          # Linear layers fed the same tensor share one statistic (q/k/v)
        owner: dict[str, str] = {}          # statistic kind -> the Linear that accumulates it
        first: list = [None]

        def hook(name):
            def fn(m, inp):
                t = inp[0]
                if first[0] is None:
                    first[0] = t
                elif t is not first[0]:
                    raise _Stop      # a layer further on: this group is complete
                if name not in order:
                    order.append(name)
                kind = need(name)
                if isinstance(m, nn.Linear) and owner.setdefault(kind, name) != name:
                    alias[name] = owner[kind]
                    return
                t0 = time.perf_counter()
                stats[name] = _accumulate(m, t, kind, stats.get(name))
                times["statistics"] = times.get("statistics", 0.0) + time.perf_counter() - t0
            return fn

        handles = [mods[n].register_forward_pre_hook(hook(n)) for n in remaining]
        try:
            for args, kwargs in inputs:
                if cancel is not None:
                    cancel.check()
                first[0] = None
                _timed(times, "forward", block, args, kwargs, stop=True)
        finally:
            for h in handles:
                h.remove()
        if not order:        # the forward never reaches them: nothing to measure them on
            for n in remaining:
                meter.step(1, f"{n}: not reached by the forward pass, left as it is")
            return
        for n in order:
            meter.note(f"pruning {n}")
            t0 = time.perf_counter()
            step(n, mods[n], stats[alias.get(n, n)])
            times["pruning"] = times.get("pruning", 0.0) + time.perf_counter() - t0
            meter.step(1, f"{n} pruned")
            remaining.remove(n)


def _timed(times: dict[str, float], key: str, block: nn.Module, args: tuple, kwargs: dict, stop: bool = False):
    """Run the block, its wall time (less the statistics its hooks took meanwhile) added to ``times[key]``."""
    s0, t0 = times.get("statistics", 0.0), time.perf_counter()
    y = None
    try:
        y = _run(block, args, kwargs)
    except _Stop:
        if not stop:
            raise
    times[key] = times.get(key, 0.0) + time.perf_counter() - t0 - (times.get("statistics", 0.0) - s0)
    return y


class _Capture(Exception):
    pass


def _block_inputs(module: nn.Module, first: nn.Module, x: torch.Tensor, chunk: int,
                  cancel: CancelToken | None) -> list:
    """(args, kwargs) entering ``first`` for each chunk of the calibration inputs."""
    got: list = []

    def hook(_m, args, kwargs):
        # a key/value cache would grow with every run of a block: each run must see only its own inputs
        kw = {k: (None if type(v).__name__.endswith("Cache") else False if k == "use_cache" else v)
              for k, v in kwargs.items()}
        got.append((args, kw))
        raise _Capture

    h = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i in range(0, x.shape[0], chunk):
            if cancel is not None:
                cancel.check()
            try:
                _run(module, (x[i:i + chunk],), {})
            except _Capture:
                pass
    finally:
        h.remove()
    return got


def _is_chain(module: nn.Module, stack: nn.ModuleList, x: torch.Tensor) -> bool:
    """Does each block of ``stack`` run once, on the previous block's output (checked on one sample)? A
    ModuleList of parallel heads is no stack."""
    seen: list = []

    def hook(_m, args, kwargs, out):
        h = args[0] if args else kwargs.get("hidden_states")
        seen.append((h, out[0] if isinstance(out, (tuple, list)) else out))

    handles = [b.register_forward_hook(hook, with_kwargs=True) for b in stack]
    try:
        _run(module, (x,), {})
    finally:
        for h in handles:
            h.remove()
    if len(seen) != len(stack):
        return False
    return all(isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
               and torch.equal(a, b) for (_, b), (a, _) in zip(seen, seen[1:]))


def _next_inputs(block: nn.Module, inputs: list, times: dict[str, float]) -> list:
    out = []
    for args, kwargs in inputs:
        y = _timed(times, "forward", block, args, kwargs)
        y = y[0] if isinstance(y, (tuple, list)) else y
        if args:
            out.append(((y, *args[1:]), kwargs))
        else:
            out.append(((), {**kwargs, "hidden_states": y}))
    return out


def sequential_prune(module: nn.Module, x: torch.Tensor, layers: list[str], step: Step,
                     need: str | Callable[[str], str] = "hessian", chunk: int = 8, progress: ProgressFn | None = None,
                     cancel: CancelToken | None = None, times: dict[str, float] | None = None) -> str:
    """Prune ``layers`` of ``module`` (changed in place by ``step``) in forward order, each on the calibration
    inputs ``x`` as the network already pruned delivers them. ``need``: the statistic ("hessian" or "norms"), or
    a function giving it per layer. Returns how it went: "blocks" or "layers". ``times`` (optional) gathers
    seconds spent in calibration forwards ("forward"), statistics ("statistics") and the steps ("pruning")."""
    times = {} if times is None else times
    module.eval()
    if isinstance(need, str):
        need = (lambda _n, kind=need: kind)
    meter = ProgressMeter(progress, max(1, len(layers)), "pruning layer after layer")
    found = block_stack(module, layers)
    if found is not None and not _is_chain(module, found[1], x[:1]):
        found = None
    rest = list(layers)
    how = "layers"
    whole = [((x[i:i + chunk],), {}) for i in range(0, x.shape[0], chunk)]
    if found is not None:
        stack_name, stack = found
        inside = [n for n in layers if n.startswith(f"{stack_name}.")]
        before = layers[:layers.index(inside[0])] if inside else []
        if before:        # layers ahead of the stack (in ``layers``' order) first, on the whole network
            _prune_block(module, "", before, whole, need, step, meter, cancel, times)
            rest = [n for n in rest if n not in before]
        t0 = time.perf_counter()
        inputs = _block_inputs(module, stack[0], x, chunk, cancel)
        times["forward"] = times.get("forward", 0.0) + time.perf_counter() - t0
        for i, block in enumerate(stack):
            prefix = f"{stack_name}.{i}." if stack_name else f"{i}."
            names = [n for n in rest if n.startswith(prefix)]
            if names:
                _prune_block(block, prefix, names, inputs, need, step, meter, cancel, times)
                rest = [n for n in rest if n not in names]
            if i + 1 < len(stack):
                if cancel is not None:
                    cancel.check()
                inputs = _next_inputs(block, inputs, times)
        inputs = None
        how = "blocks"
    if rest:        # no stack, or layers after it: the whole network is the block
        _prune_block(module, "", rest, whole, need, step, meter, cancel, times)
    return how
