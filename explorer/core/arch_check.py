"""Does an architecture work end to end? Masks at every granularity, and exact channel compaction.

For a loaded session: each granularity is planned on every layer it fits (uniform sparsity), its masks
are materialised and applied, the counts the engine reports are compared with the zeros really in the
weights, and the masked model must still run. Then channel pruning is compacted and the compacted model
must compute the masked model's outputs (relative error at most ``COMPACT_RTOL``) with fewer parameters.
Norm layers get random statistics first (a fresh torchvision model has BatchNorm weight 1, bias 0, mean 0,
var 1, which would hide a missing mask of their entries). ``scripts/sweep_torchvision.py`` runs this on
every torchvision classification architecture; the fast tests run it on one net per family.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import ExplorerError
from .model.metrics import param_count
from .prune.compact import COMPACT_RTOL, compact_checked, compaction_plan, relative_difference

if TYPE_CHECKING:
    from .session import Session

GRANULARITIES = ("element", "2:4", "vector", "kernel", "channel")
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


@dataclass
class GranularityCheck:
    ok: bool
    layers: int = 0                 # layers the granularity fits (planned)
    error: str | None = None


@dataclass
class CompactCheck:
    ok: bool
    rel_error: float | None = None
    params_before: int = 0
    params_after: int = 0
    removed_groups: int = 0
    kept_masked: dict[str, str] = field(default_factory=dict)   # group root -> why its channels stay (zeroed)
    error: str | None = None


@dataclass
class ReloadCheck:
    ok: bool
    max_difference: float | None = None   # between the masked model and a fresh instance loaded from model.pt
    error: str | None = None


@dataclass
class ArchCheck:
    model: str
    input_shape: tuple[int, ...]
    layers: int
    params: int
    granularities: dict[str, GranularityCheck]
    compact: CompactCheck | None
    notes: list[str]
    seconds: float
    reload: ReloadCheck | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def randomize_norms(session: Session, seed: int = 0) -> None:
    """Random affine parameters and running statistics for every norm layer (kept weights of the session)."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in session.base_state().items()}
    for n, m in session.module.named_modules():
        if not isinstance(m, _NORMS):
            continue
        for p in ("weight", "bias"):
            t = sd.get(f"{n}.{p}")
            if t is not None and t.is_floating_point():
                sd[f"{n}.{p}"] = (torch.rand(t.shape, generator=g) + 0.5) if p == "weight" else \
                    (torch.rand(t.shape, generator=g) - 0.5)
        if f"{n}.running_mean" in sd and sd[f"{n}.running_mean"] is not None:
            c = sd[f"{n}.running_mean"].shape
            sd[f"{n}.running_mean"] = torch.randn(c, generator=g) * 0.1
            sd[f"{n}.running_var"] = torch.rand(c, generator=g) + 0.5
    session.set_base(sd, "random norms")


def _first(out) -> torch.Tensor:
    if hasattr(out, "logits"):
        return out.logits
    return out[0] if isinstance(out, (tuple, list)) else out


def check_granularity(session: Session, gran: str, sparsity: float, example: torch.Tensor) -> GranularityCheck:
    from .prune.plan import Plan

    try:
        s = max(sparsity, 0.5) if ":" in gran else sparsity
        skipped = session.set_uniform(session.layer_names, s, gran)
        totals = session.totals()
        session.apply()
        state = session.module.state_dict()
        zeros = sum(int((state[l.key] == 0).sum()) for l in session.layers)
        nonzero = sum(l.params for l in session.layers) - zeros
        if nonzero != totals.prunable_nonzero:
            return GranularityCheck(False, error=f"counted {totals.prunable_nonzero:,} nonzero weights, the masked "
                                                 f"model has {nonzero:,}")
        with torch.inference_mode():
            out = _first(session.module(example))
        if not torch.isfinite(out).all():
            return GranularityCheck(False, error="the masked model's outputs are not finite")
        return GranularityCheck(True, layers=len(session.layer_names) - len(skipped))
    except ExplorerError as e:
        return GranularityCheck(False, error=e.message)
    except Exception as e:   # a bug: recorded as one, never hidden
        return GranularityCheck(False, error=f"internal error: {type(e).__name__}: {str(e)[:200]}")
    finally:
        session.set_plan(Plan(), record=False)
        session.apply(Plan())


def check_compaction(session: Session, sparsity: float, example: torch.Tensor) -> CompactCheck:
    from .prune.plan import Plan

    try:
        session.set_uniform(session.layer_names, sparsity, "channel")
        plan = session.plan
        session.apply(plan)
        state = {k: v.detach().clone() for k, v in session.module.state_dict().items()}
        removals, kept = compaction_plan(session, plan)
        compacted, dropped = compact_checked(session.module, state, removals, example)
        kept.update(dropped)
        removals = {k: v for k, v in removals.items() if k not in dropped}
        rel = relative_difference(session.module, compacted, example)
        before, after = param_count(session.module), param_count(compacted)
        ok = rel <= COMPACT_RTOL and (after < before or not removals)
        return CompactCheck(ok, rel, before, after, len(removals), kept,
                            None if ok else (f"relative error {rel:.2g}" if rel > COMPACT_RTOL else
                                             "no parameter was removed"))
    except ExplorerError as e:
        return CompactCheck(False, error=e.message)
    except Exception as e:   # a bug: recorded as one, never hidden
        return CompactCheck(False, error=f"internal error: {type(e).__name__}: {str(e)[:200]}")
    finally:
        session.set_plan(Plan(), record=False)
        session.apply(Plan())


def check_reload(session: Session, factory, sparsity: float, example: torch.Tensor, layers=None) -> ReloadCheck:
    """The prune flow's ``model.pt`` (uniform element sparsity on ``layers``, default all) loads with ``torch.load(weights_only=True)`` into
    ``factory()``, a fresh instance of the model's class, with ``load_state_dict(strict=True)``, and computes the
    masked model's outputs."""
    import tempfile
    from pathlib import Path

    from .flows.prune import run as run_prune
    from .prune.plan import Plan

    try:
        session.set_uniform(list(layers or session.layer_names), sparsity, "element")
        with tempfile.TemporaryDirectory() as d:
            run_prune(session.snapshot(), Path(d) / "out", measure=False)
            state = torch.load(Path(d) / "out" / "model.pt", map_location="cpu", weights_only=True)
        fresh = factory().eval()
        fresh.load_state_dict(state, strict=True)
        session.apply()          # the masked model, to compare with
        with torch.inference_mode():
            a, b = _first(session.module.eval()(example)), _first(fresh(example))
        diff = float((a - b).abs().max())
        ok = diff <= 1e-5 * max(1.0, float(a.abs().max()))
        return ReloadCheck(ok, diff, None if ok else f"outputs differ by {diff:.3g}")
    except ExplorerError as e:
        return ReloadCheck(False, error=e.message)
    except Exception as e:   # strict loading's refusal, or a bug: recorded, never hidden
        return ReloadCheck(False, error=f"{type(e).__name__}: {str(e)[:200]}")
    finally:
        session.set_plan(Plan(), record=False)
        session.apply(Plan())


def check_session(session: Session, sparsity: float = 0.3, granularities=GRANULARITIES, compact: bool = True,
                  randomize: bool = True, factory=None) -> ArchCheck:
    """``factory`` (a fresh, untrained instance of the model's class) set: also :func:`check_reload`."""
    t0 = time.perf_counter()
    if randomize:
        randomize_norms(session)
    r = session.require()
    example = session.dataset.example_input(2)
    checks = {g: check_granularity(session, g, sparsity, example) for g in granularities}
    comp = None
    if compact and "channel" in checks and checks["channel"].ok:
        comp = check_compaction(session, sparsity, example)
    reload = check_reload(session, factory, sparsity, example) if factory is not None else None
    return ArchCheck(model=session.model_spec, input_shape=tuple(r.input_shape), layers=len(session.layers),
                     params=session.profile.total_params, granularities=checks, compact=comp,
                     notes=list(r.notes), seconds=time.perf_counter() - t0, reload=reload)
