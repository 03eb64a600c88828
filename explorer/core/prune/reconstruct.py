"""Reconstruction: after the mask is chosen, refit each pruned layer's remaining weights on calibration data.

A layer's weight W is viewed as a matrix (out x d: a conv's against its unfolded input, in·kh·kw columns; a
column of ones appended for the bias). With X_d its input in the dense network and X_p its input in the pruned
network (the layers before it already reconstructed), the new weights solve

    min ||Ŵ X_p - W X_d||^2 + λ ||Ŵ - W||^2    with Ŵ = 0 wherever the mask prunes,

i.e. they reproduce the *dense* layer's output from the inputs the pruned network actually delivers, so errors
of earlier layers are corrected too. λ = damp · mean diag(X_p X_pᵀ) (damp = 0.01, SparseGPT's dampening) keeps
the problem well posed with few samples and pulls weights the data do not determine back to their old values.
With A = X_p X_pᵀ + λI and B = W (X_d X_pᵀ + λI), row r's kept weights K solve A_KK ŵ_K = B_rK: an exact
batched Cholesky solve per row where rows · d^3 is small, otherwise one OBS sweep over the columns as in
SparseGPT (start from the unconstrained optimum, prune column by column with a fixed mask, push each error onto
the later columns through the Cholesky factor of A^-1).

Layers are visited in forward order: every pruned layer (element, n:m, vector, kernel: its remaining weights
move; channel: its pruned rows stay 0 and the kept ones adapt to earlier changes), and for channel-pruned
layers also the layers that consume their channels -- least squares on the next layer, as in regression-based
channel selection (He et al. 2017). The mask never changes and pruned weights (and the biases of removed
channels) stay exactly +0.0. Conv layers with groups, non-zero padding modes or 3-d kernels are left as masked
(and said so).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..jobs import CancelToken, ProgressFn, ProgressMeter

if TYPE_CHECKING:
    from .state_view import StateView

DAMP = 0.01
EXACT_FLOPS = 2e10          # rows * d^3 up to this: exact per-row solves; beyond: the OBS sweep
CHUNK_BYTES = 64 * 2**20    # unfolded inputs of one chunk of samples


@dataclass
class LayerFit:
    name: str
    method: str                 # "exact", "obs" or "skipped: why"
    error_before: float = 0.0   # ||W_masked X_p - W X_d||^2 / ||W X_d||^2 on the calibration data
    error_after: float = 0.0


@dataclass
class Reconstruction:
    state: dict[str, torch.Tensor]        # the full state with reconstructed weights (the others shared)
    layers: list[LayerFit] = field(default_factory=list)


class _Stop(Exception):
    pass


def _unsupported(m: nn.Module) -> str | None:
    if isinstance(m, nn.Linear):
        return None
    if not isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return f"{type(m).__name__} is not supported"
    if m.groups != 1:
        return "grouped convolution"
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        return "padding mode"
    return None


def _columns(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as (d, positions): unfolded for convs, a row of ones appended for the bias."""
    x = x.detach().double()
    if isinstance(m, nn.Linear):
        cols = x.reshape(-1, x.shape[-1]).T
    else:
        if isinstance(m, nn.Conv1d):
            x = x.unsqueeze(2)
            k, d, p, s = (1, m.kernel_size[0]), (1, m.dilation[0]), (0, m.padding[0]), (1, m.stride[0])
        else:
            k, d, p, s = m.kernel_size, m.dilation, m.padding, m.stride
        u = F.unfold(x, k, dilation=d, padding=p, stride=s)        # (N, C*kh*kw, L)
        cols = u.transpose(0, 1).reshape(u.shape[1], -1)
    if m.bias is not None:
        cols = torch.cat([cols, torch.ones(1, cols.shape[1], dtype=cols.dtype)])
    return cols


def _layer_input(module: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """Run ``module`` until layer ``name`` receives its input, and return that input."""
    got = []

    def hook(_m, inputs):
        got.append(inputs[0])
        raise _Stop

    h = dict(module.named_modules())[name].register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            module(x)
    except _Stop:
        pass
    finally:
        h.remove()
    return got[0]


def _gram(dense: nn.Module, pruned: nn.Module, name: str, x: torch.Tensor, chunk: int, cancel):
    """X_p X_pᵀ, X_d X_pᵀ and X_d X_dᵀ (float64) of layer ``name`` over the calibration inputs."""
    m = dict(pruned.named_modules())[name]
    A = C = D = None
    for i in range(0, x.shape[0], chunk):
        if cancel is not None:
            cancel.check()
        xp = _columns(m, _layer_input(pruned, name, x[i:i + chunk]))
        xd = _columns(m, _layer_input(dense, name, x[i:i + chunk]))
        a, c, d = xp @ xp.T, xd @ xp.T, xd @ xd.T
        A, C, D = (a, c, d) if A is None else (A + a, C + c, D + d)
    return A, C, D


def _solve_exact(A: torch.Tensor, B: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    out, d = B.shape
    W = torch.zeros_like(B)
    rows = max(1, int(2**28 // (d * d * 8)))
    eye = torch.eye(d, dtype=A.dtype)
    for r0 in range(0, out, rows):
        M = keep[r0:r0 + rows]
        Mf = M.to(A.dtype)
        Ar = A * (Mf[:, :, None] * Mf[:, None, :]) + eye * (1 - Mf)[:, None, :]
        L, info = torch.linalg.cholesky_ex(Ar)
        b = (B[r0:r0 + rows] * Mf).unsqueeze(-1)
        if bool((info == 0).all()):
            sol = torch.cholesky_solve(b, L)
        else:
            sol = torch.linalg.solve(Ar, b)
        W[r0:r0 + rows] = sol.squeeze(-1) * Mf
    return W


def _solve_obs(A: torch.Tensor, B: torch.Tensor, keep: torch.Tensor, block: int = 128) -> torch.Tensor:
    L = torch.linalg.cholesky(A)
    WT = torch.cholesky_solve(B.T.contiguous(), L)         # the unconstrained optimum, columns as rows
    U = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    MT = keep.T.contiguous().to(WT.dtype)
    obs_sweep(WT, U, MT, block)
    return WT.T.contiguous()


def obs_sweep(WT: torch.Tensor, U: torch.Tensor, MT: torch.Tensor, block: int = 128, choose=None) -> None:
    """SparseGPT's OBS sweep, in place: columns (here the rows of ``WT``, d x out) left to right, each column's
    pruned entries (``MT`` = 0; 1 = kept) zeroed and their error pushed onto the later columns through ``U``, the
    upper Cholesky factor of A^-1. Lazy batch updates: columns in blocks of ``block``, the rest by one matmul.

    ``choose(j0, W1, D1, M1)`` (optional: SparseGPT's mask selection) is called before column j0 of every block
    (of the block's current weights W1, its [U]_cc diagonal D1 and its mask rows M1, which it may fill in place);
    without it ``MT`` is a fixed mask."""
    d = WT.shape[0]
    for i1 in range(0, d, block):
        i2 = min(i1 + block, d)
        W1, U1, M1 = WT[i1:i2].clone(), U[i1:i2, i1:i2], MT[i1:i2]
        D1 = torch.diagonal(U1) if choose is not None else None
        Err = torch.empty_like(W1)
        for j in range(i2 - i1):
            if choose is not None:
                choose(i1, j, W1, D1, M1)
            err = W1[j] * (1 - M1[j]) / U1[j, j]
            W1[j:].sub_(U1[j, j:, None] * err[None, :])
            W1[j].mul_(M1[j])
            Err[j] = err
        WT[i1:i2] = W1
        if i2 < d:
            WT[i2:] -= U[i1:i2, i2:].T @ Err


def _error(W: torch.Tensor, Wd: torch.Tensor, A0: torch.Tensor, C: torch.Tensor, D: torch.Tensor) -> float:
    """||W X_p - Wd X_d||^2 / ||Wd X_d||^2 from the Gram matrices."""
    ref = float((Wd @ D * Wd).sum())
    e = float((W @ A0 * W).sum() - 2 * (W @ C.T * Wd).sum() + ref)
    return max(e, 0.0) / ref if ref > 0 else 0.0


def reconstruct(make_model, dense_state: dict[str, torch.Tensor], pruned_state: dict[str, torch.Tensor],
                layers: list[str], masks: dict[str, torch.Tensor], aux: dict[str, torch.Tensor], x: torch.Tensor,
                damp: float = DAMP, progress: ProgressFn | None = None,
                cancel: CancelToken | None = None) -> Reconstruction:
    """Refit ``layers`` (forward order) of the pruned state on calibration inputs ``x``.

    ``make_model(state)`` gives a model copy with a state loaded; ``masks`` are the plan's weight masks (a layer
    without one keeps every weight), ``aux`` its channel masks (a masked bias stays 0)."""
    dense, pruned = make_model(dense_state), make_model(pruned_state)
    state = dict(pruned_state)
    mods = dict(pruned.named_modules())
    meter = ProgressMeter(progress, max(1, len(layers)), "reconstructing")
    fits: list[LayerFit] = []
    for name in layers:
        m = mods[name]
        why = _unsupported(m)
        if why is not None:
            fits.append(LayerFit(name, f"skipped: {why}"))
            meter.step(1, f"{name}: left as masked ({why})")
            continue
        meter.note(f"reconstructing {name}")
        Wd = dense_state[f"{name}.weight"].double().reshape(m.weight.shape[0], -1)
        keep = masks.get(f"{name}.weight", torch.ones(m.weight.shape, dtype=torch.bool)).reshape(Wd.shape[0], -1)
        if m.bias is not None:
            Wd = torch.cat([Wd, dense_state[f"{name}.bias"].double()[:, None]], dim=1)
            bias_keep = aux.get(f"{name}.bias", torch.ones(Wd.shape[0], dtype=torch.bool))
            keep = torch.cat([keep, bias_keep[:, None]], dim=1)
        d = Wd.shape[1]
        with torch.no_grad():
            probe = _layer_input(pruned, name, x[:1])
        positions = _columns(m, probe).shape[1]
        chunk = max(1, int(CHUNK_BYTES // max(1, d * positions * 8)))
        A0, C, D = _gram(dense, pruned, name, x, chunk, cancel)
        lam = damp * float(torch.diagonal(A0).mean()) if float(torch.diagonal(A0).mean()) > 0 else damp
        eye = torch.eye(d, dtype=A0.dtype)
        A = A0 + lam * eye
        B = Wd @ (C + lam * eye)
        method = "exact" if Wd.shape[0] * d ** 3 <= EXACT_FLOPS else "obs"
        W = (_solve_exact if method == "exact" else _solve_obs)(A, B, keep)
        before = _error(Wd * keep, Wd, A0, C, D)
        after = _error(W, Wd, A0, C, D)
        if not after < before * (1 - 1e-9) or not torch.isfinite(W).all():   # never worse than masking
            W, method, after = Wd * keep, f"{method} (kept masked: no gain)", before
        W = torch.where(keep, W, torch.zeros((), dtype=W.dtype)).float()
        if m.bias is not None:
            state[f"{name}.bias"] = W[:, -1].contiguous().clone()
            W = W[:, :-1]
        state[f"{name}.weight"] = W.reshape(m.weight.shape).contiguous()
        with torch.no_grad():
            m.weight.copy_(state[f"{name}.weight"])
            if m.bias is not None:
                m.bias.copy_(state[f"{name}.bias"])
        fits.append(LayerFit(name, method, before, after))
        meter.step(1, f"{name}: output error {before:.3g} -> {after:.3g} ({method})")
    return Reconstruction(state=state, layers=fits)


def layers_to_refit(session: StateView, plan) -> list[str]:
    """The plan's pruned layers and, for channel-pruned ones, the layers consuming their channels (forward order)."""
    active = plan.active()
    names = set(active)
    for n, lp in active.items():
        if lp.granularity == "channel":
            names.update(session.channel_group(n).consumers)
    return [n for n in session.layer_names if n in names]


def reconstruct_plan(session: StateView, plan, progress: ProgressFn | None = None,
                     cancel: CancelToken | None = None) -> Reconstruction:
    """Mask the session's kept weights with ``plan`` and refit them on the session's calibration samples.
    The session is not changed (``session.results.adopt`` takes the result as the new kept weights)."""
    from ..errors import PlanError
    from .masks import masked_state

    if not plan.active():
        raise PlanError("Nothing to reconstruct: the plan prunes no layer.", "Plan some sparsity first.")
    base = session.base_state()
    masks, aux = session.materialize(plan)
    x, _ = session.calibration.data()
    return reconstruct(session.model_copy, base, masked_state(base, masks, aux), layers_to_refit(session, plan),
                       masks, aux, x, progress=progress, cancel=cancel)
