"""A model's tensors shared instead of copied: what keeps a big model at one copy of its weights.

The session keeps the weights as loaded (``original``) and the model holds the weights of the applied plan.
Instead of cloning the loaded weights and copying masked ones into the model in place, the model's
parameters and buffers are *rebound* to new tensors (``param.data = t``): tensors a plan does not change stay
one shared tensor, and the loaded ones are never written. Code that trains a model in place first gives it
private copies (:func:`unshare`); a read-only twin of a model for timing shares everything (:func:`twin`).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def _owner(module: nn.Module, key: str) -> tuple[nn.Module, str]:
    *path, leaf = key.split(".")
    m = module
    for p in path:
        m = getattr(m, p)
    return m, leaf


def rebind_state(module: nn.Module, state: dict[str, torch.Tensor], check: bool = True) -> None:
    """Make the module's tensors ``state``'s tensors, without copying (keys the module lacks are ignored).

    A tensor whose shape, dtype or device differs from the module's is converted first (a new tensor), as an
    in-place copy would have done; a TorchScript module's tensors are copied in place (its attributes cannot
    be rebound), after their sharing with other tensors is broken by giving it private copies first."""
    own = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for k, v in state.items():
            cur = own.get(k)
            if cur is None:
                continue
            v = v.detach()
            if check and v.shape != cur.shape:
                raise RuntimeError(f"{k}: shape {tuple(v.shape)} does not fit the model's {tuple(cur.shape)}")
            if check and (v.dtype != cur.dtype or v.device != cur.device):
                v = v.to(dtype=cur.dtype, device=cur.device)
            if isinstance(module, torch.jit.ScriptModule):
                if cur.data_ptr() != v.data_ptr():
                    cur.data = v.clone()
                continue
            if isinstance(cur, nn.Parameter):
                cur.data = v
            else:
                owner, leaf = _owner(module, k)
                if leaf in getattr(owner, "_buffers", {}):
                    owner._buffers[leaf] = v
                else:
                    cur.data = v


def _storages(states) -> set[int]:
    out = set()
    for st in states:
        for t in st.values():
            try:
                out.add(t.untyped_storage().data_ptr())
            except Exception:
                pass
    return out


def unshare(module: nn.Module, states) -> int:
    """Give every module tensor that shares storage with a tensor of ``states`` a private copy (before the
    module is trained in place). Returns how many tensors were copied."""
    shared = _storages(states)
    n = 0
    with torch.no_grad():
        for k, cur in module.state_dict(keep_vars=True).items():
            if cur.numel() and cur.untyped_storage().data_ptr() in shared:
                if isinstance(module, torch.jit.ScriptModule):
                    cur.data = cur.detach().clone()
                else:
                    rebind_state(module, {k: cur.detach().clone()})
                n += 1
    return n


def shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def twin(module: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``module`` (eval mode) whose parameters and buffers are ``state``'s tensors, shared, not copied:
    for reading (timing, evaluating), never for training. TorchScript modules are deep-copied instead."""
    if isinstance(module, torch.jit.ScriptModule):
        m = copy.deepcopy(module)
        m.load_state_dict(state)
        return m.eval()
    memo: dict[int, object] = {}
    own = module.state_dict(keep_vars=True)
    for k, cur in own.items():
        # the copy gets an empty stand-in (nothing is duplicated), then the shared tensor is bound in its place
        empty = torch.empty(0, dtype=cur.dtype, device=cur.device)
        memo[id(cur)] = nn.Parameter(empty, requires_grad=cur.requires_grad) if isinstance(cur, nn.Parameter) \
            else empty
    m = copy.deepcopy(module, memo)
    rebind_state(m, {k: state[k] for k in own if k in state}, check=False)
    return m.eval()
