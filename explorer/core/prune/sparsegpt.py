"""SparseGPT (Frantar & Alistarh 2023) and sequential wanda: masks chosen on the network as already pruned.

``sparsegpt_layer``: one layer's weight W (out x d, a conv's against its unfolded input) and H = X Xᵀ of its input;
A = H + λI with λ = 1 % of mean diag H. Columns are visited left to right in blocks of 128 (the OBS sweep of
:func:`reconstruct.obs_sweep`, the same code ``--reconstruct`` runs); the mask is chosen *during* the sweep on the
already-updated weights by the OBS saliency w² / [U]_cc² (U the upper Cholesky factor of A⁻¹, so [U]_cc² is
[H_F⁻¹]_cc of the columns not yet visited):

- ``element`` at sparsity s: at the start of each block of columns, the lowest-saliency weights of the block
  (its share of the layer's round(s · out · d), by cumulative rounding, so the layer prunes exactly what the mask
  engine counts);
- ``n:m`` (n of every m kept): at the start of each group of m input columns, in every row the m − n lowest.

Each pruned weight's error is pushed onto the columns not yet visited. Pruned weights end as +0.0; the bias is
not changed. The mask engine ranks zero weights first under every criterion, so a plan's masks over the swept
weights are exactly the sweep's.

``one_shot``: the plan's layers visited in forward order on the calibration samples through
:func:`sequential_calibration.sequential_prune` (block by block for transformer stacks): ``sparsegpt`` layers are swept;
with ``sequential`` (sequential calibration: wanda's norms from the pruned network) every other layer is masked there too, so the layers
after it see it pruned; without it only sparsegpt layers are visited, after the earlier layers' masks are applied.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import PlanError
from ..jobs import CancelToken, ProgressFn
from ..model.sharing import twin
from .granularity import NM, Element
from .reconstruct import DAMP, _unsupported, obs_sweep
from .sequential_calibration import sequential_prune

BLOCK = 128


def check_granularity(gran, layer: str = "") -> None:
    if not isinstance(gran, (Element, NM)):
        raise PlanError(f"The sparsegpt criterion chooses single weights during its sweep: it takes element or "
                        f"n:m granularity, not {gran}" + (f" (layer {layer})." if layer else "."),
                        "Use element or n:m (e.g. 2:4) with sparsegpt, or another criterion for structured pruning.")


def hessian_factor(H: torch.Tensor, damp: float = DAMP) -> torch.Tensor:
    """U, the upper Cholesky factor of (H + λI)⁻¹ with λ = damp · mean diag H (float64 stays float64, else float32).
    A Hessian that float32 cannot factor gets ten times the dampening, up to three times."""
    H = H if H.dtype == torch.float64 else H.float()
    d = H.shape[0]
    mean = float(torch.diagonal(H).mean())
    lam = damp * mean if mean > 0 else damp
    for _ in range(4):
        L, info = torch.linalg.cholesky_ex(H + lam * torch.eye(d, dtype=H.dtype))
        if int(info) == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
        lam *= 10
    raise PlanError("SparseGPT's Hessian is not positive definite even with extra dampening (non-finite "
                    "activations?).", "Check the model's outputs on the calibration samples.")


def sparsegpt_layer(W: torch.Tensor, H: torch.Tensor | None = None, sparsity: float = 0.5,
                    nm: tuple[int, int] | None = None, damp: float = DAMP, block: int = BLOCK,
                    U: torch.Tensor | None = None, times: dict[str, float] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(new W, keep mask) of a weight matrix W (out x d) given H (d x d) or its factor ``U``
    (:func:`hessian_factor`); computed in U's dtype. ``times`` (optional) gathers "inverse" and "sweep" seconds."""
    out, d = W.shape
    t0 = time.perf_counter()
    if U is None:
        U = hessian_factor(H, damp)
    t1 = time.perf_counter()
    WT = W.T.to(U.dtype).contiguous().clone()
    MT = torch.ones_like(WT)
    if nm is not None:
        n, m = nm
        block = max(m, (block // m) * m)

        def choose(i1, j, W1, D1, M1):
            if (i1 + j) % m == 0:
                sal = W1[j:j + m] ** 2 / D1[j:j + m, None] ** 2          # (m, out)
                gone = torch.sort(sal, dim=0, stable=True).indices[:m - n]
                M1[j:j + m].scatter_(0, gone, 0.0)
    else:
        def choose(i1, j, W1, D1, M1):
            if j == 0:
                cols = W1.shape[0]
                # cumulative rounding: the blocks' counts add up to round(s · out · d), the mask engine's count
                k = int(round(sparsity * out * (i1 + cols))) - int(round(sparsity * out * i1))
                k = min(max(k, 0), cols * out)
                if k:
                    sal = (W1 ** 2 / D1[:, None] ** 2).reshape(-1)
                    gone = torch.topk(sal, k, largest=False, sorted=False).indices
                    M1.view(-1)[gone] = 0.0
    obs_sweep(WT, U, MT, block, choose)
    keep = MT.T.bool().contiguous()
    Wn = torch.where(keep, WT.T, torch.zeros((), dtype=WT.dtype))
    if times is not None:
        times["inverse"] = times.get("inverse", 0.0) + t1 - t0
        times["sweep"] = times.get("sweep", 0.0) + time.perf_counter() - t1
    return Wn.contiguous(), keep


@dataclass
class OneShot:
    state: dict[str, torch.Tensor]              # the base with the swept layers' new weights
    statistic: dict[str, torch.Tensor] = field(default_factory=dict)   # sequential input norms (wanda)
    order: str = "layers"                       # "blocks" (transformer stack) or "layers"
    swept: list[str] = field(default_factory=list)


def _nm(gran) -> tuple[int, int] | None:
    return (gran.n, gran.m) if isinstance(gran, NM) else None


def needs_one_shot(plan, sequential: bool) -> bool:
    active = plan.active()
    return any(lp.criterion == "sparsegpt" for lp in active.values()) or (
        sequential and any(lp.criterion == "wanda" for lp in active.values()))


def one_shot(snap, plan, sequential: bool = False, progress: ProgressFn | None = None,
             cancel: CancelToken | None = None) -> OneShot:
    """Run the plan's sparsegpt sweeps (and, with ``sequential``, wanda's norms) layer after layer on the
    snapshot's calibration samples. ``snap``: a Snapshot or Session (its module, kept weights, mask views and
    calibration). The snapshot is not changed."""
    active = plan.active()
    for n, lp in active.items():
        if lp.criterion == "sparsegpt":
            check_granularity(lp.granularity, n)
    names = [n for n in snap.layer_names if n in active]
    if not sequential:          # only sweeps are visited; the other layers' masks are applied up front
        names = [n for n in names if active[n].criterion == "sparsegpt"]
    base = snap.base_state()
    state = dict(base)
    seq: dict[str, torch.Tensor] = {}
    views = snap.masks.renewed(statistic=statistic_with(snap.masks.statistic, seq),
                               keep=frozenset({"l1", "l2", "random", "manual"})) if sequential else snap.masks
    work = dict(base)
    for n, lp in active.items():      # the network as pruned so far: layers not visited below are masked now
        if n not in names and lp.criterion != "sparsegpt":
            key = snap.layer(n).key
            work[key] = base[key] * views.view(n, lp).element_mask(lp.sparsity)
    model = twin(snap.module, work)
    for n in names:
        why = _unsupported(model.get_submodule(n))
        if active[n].criterion == "sparsegpt" and why is not None:
            raise PlanError(f"The sparsegpt criterion cannot sweep layer {n}: {why}.",
                            "Use another criterion for that layer.")
    swept: list[str] = []
    factor: list = [None, None]       # (H, U): layers fed the same input (q/k/v) share H and its factor

    def step(name: str, m: nn.Module, stat: torch.Tensor) -> None:
        lp = active[name]
        key = snap.layer(name).key
        if lp.criterion == "sparsegpt":
            W = m.weight.detach().reshape(m.weight.shape[0], -1)
            nm = _nm(lp.granularity)
            p = _nm_order(m.weight.shape) if nm is not None else None
            if p is not None:       # a conv's n:m runs go along input channels at each kernel position
                W, stat = W[:, p], stat[p][:, p]
            if factor[0] is not stat:
                factor[:] = [stat, hessian_factor(stat)]
            Wn, _ = sparsegpt_layer(W, sparsity=lp.sparsity, nm=nm, U=factor[1])
            if p is not None:
                Wn = Wn[:, torch.argsort(p)]
            new = Wn.to(m.weight.dtype).reshape(m.weight.shape).contiguous()
            state[key] = new
            swept.append(name)
        else:
            if lp.criterion == "wanda":
                seq[name] = stat.sqrt().float()
            new = base[key] * views.view(name, lp).element_mask(lp.sparsity)
        m.weight.data = new          # the shared base tensor is never written: the module gets a new one

    x, _ = snap.calibration.data()
    order = sequential_prune(model, x, names, step, need=lambda n: _need(active[n]), progress=progress,
                             cancel=cancel)
    return OneShot(state=state, statistic=seq, order=order, swept=swept)


def _nm_order(shape) -> torch.Tensor | None:
    """Column order (C, kh·kw) -> (kh·kw, C) of a conv's unfolded weight, so that m consecutive columns are m
    consecutive input channels at one kernel position (the n:m groups of ``granularity.NM``); None for a Linear."""
    if len(shape) <= 2:
        return None
    c, k = shape[1], int(torch.tensor(shape[2:]).prod())
    return torch.arange(c * k).reshape(c, k).T.reshape(-1)


def _need(lp) -> str:
    return "hessian" if lp.criterion == "sparsegpt" else "norms"


def statistic_with(fallback, seq: dict[str, torch.Tensor], flat: dict[str, int] | None = None):
    """A mask views' statistic answering wanda's input norms from ``seq`` (sequential) where it has them, and for
    the swept layers in ``flat`` (name -> input width) ones: their zeros go first whatever the scores, so their
    masks need no calibration pass over the swept network."""
    flat = flat or {}

    def statistic(kind: str, layer: str):
        if kind == "input_norm" and layer in seq:
            return seq[layer]
        if kind == "input_norm" and layer in flat:
            return torch.ones(flat[layer])
        return fallback(kind, layer) if fallback else None
    return statistic
