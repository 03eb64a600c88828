"""Masks and counts of any plan over the kept weights: what the session asks on every slider step.

Per-layer questions (nonzero count, threshold, picture) are lookups in the engine's cached rankings;
model totals add them up with the non-prunable parameters (minus the BatchNorm/bias entries of removed
channels); full masks are materialised only to apply or export.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..finite import count_nonfinite
from ..jobs import ProgressMeter
from ..model.layers import ModelProfile
from ..model.metrics import LayerCounts, Totals, totals
from . import oneoff
from .masks import LayerMask, MaskEngine, masked_state, masked_tensors
from .plan import LayerPlan, Plan


class PlanMasks:
    def __init__(self, profile: ModelProfile, channel_group: Callable, gradient: Callable, seed: int,
                 param_names: set[str], param_bytes: int, base: dict[str, torch.Tensor],
                 statistic: Callable | None = None, dense_nonzero: dict[str, int] | None = None):
        self.profile = profile
        self.statistic = statistic
        self.channel_group = channel_group
        self.gradient = gradient
        self.param_names = param_names
        self.param_bytes = param_bytes
        self.keys = profile.weight_keys
        # layers from this size on get one-off masks when their ranking is not cached (None: oneoff.MIN_PARAMS;
        # a one-command session that will ask nothing else sets 1: no ranking is worth building for it)
        self.one_off_min_params: int | None = None
        self.engine = MaskEngine({l.name: l for l in profile.layers}, weight=lambda n: self.base[self.keys[n]],
                                 channel_group=channel_group, gradient=gradient, seed=seed, statistic=statistic)
        self.base = base
        self.in_place: dict[str, LayerPlan] = {}   # layers whose kept weights were masked in place, and how
        self._dense_nonzero = dense_nonzero or {l.name: int(torch.count_nonzero(base[l.key]))
                                                for l in self.profile.layers}
        self._other_nz: int | None = None

    def renewed(self, base: dict[str, torch.Tensor] | None = None, profile: ModelProfile | None = None,
                seed: int | None = None, gradient: Callable | None = None, statistic: Callable | None = None,
                keep: frozenset[str] | None = None, channel_group: Callable | None = None) -> "PlanMasks":
        """A new object for changed inputs, leaving this one as it is (a flow may still be using it): the
        rankings of criteria in ``keep`` carry over (they do not depend on what changed); with the same kept
        weights, so do the dense counts."""
        same_base = base is None or base is self.base
        new = PlanMasks(profile or self.profile, channel_group or self.channel_group, gradient or self.gradient,
                        self.engine.seed if seed is None else seed, self.param_names, self.param_bytes,
                        self.base if base is None else base, statistic=statistic or self.statistic,
                        dense_nonzero=self._dense_nonzero if same_base and profile is None else None)
        new.one_off_min_params = self.one_off_min_params
        if same_base and profile is None:
            new.in_place = dict(self.in_place)
            if keep:
                new.engine.carry_from(self.engine, keep)
        return new

    def copy(self) -> "PlanMasks":
        """An object of one's own over the same kept weights (a flow may change its settings), sharing the
        rankings built so far."""
        from .criteria import CRITERIA
        return self.renewed(keep=frozenset(CRITERIA) | {"manual"})

    # ------------------------------------------------------------------ per layer
    def view(self, name: str, lp: LayerPlan) -> LayerMask:
        return self.engine.view(name, lp.criterion, lp.granularity, lp.units)

    def needs_build(self, name: str, lp: LayerPlan) -> bool:
        return not self.engine.is_cached(name, lp.criterion, lp.granularity, lp.units)

    def uncached(self, plan: Plan, extra: list[str] | None = None) -> list[str]:
        """Layers whose ranking for the plan is not built yet (the GUI builds big ones in a worker)."""
        names = [n for n, lp in plan.active().items() if self.needs_build(n, lp)]
        for n in extra or []:
            if n not in names and self.needs_build(n, plan.get(n)):
                names.append(n)
        return names

    def build(self, names: list[str], plan: Plan, progress=None, cancel=None) -> None:
        """Build rankings and display samples for ``names`` (a job: slow on huge layers)."""
        params = {l.name: l.params for l in self.profile.layers}
        meter = ProgressMeter(progress, sum(params[n] for n in names) or 1, "indexing weights")
        for n in names:
            if cancel is not None:
                cancel.check()
            meter.note(f"indexing {n} ({params[n]:,} weights)")
            self.view(n, plan.get(n)).sample
            meter.step(params[n])

    def layer_counts(self, name: str, lp: LayerPlan) -> LayerCounts:
        if lp.is_dense:
            layer = self.profile.layer(name)
            nz = self._dense_nonzero[name]
            return LayerCounts(layer.params, nz, layer.matrix_shape[0], layer.macs, nz * layer.uses)
        return self.view(name, lp).counts(lp.sparsity)

    # ------------------------------------------------------------------ model totals
    def totals(self, plan: Plan) -> Totals:
        counts = [self.layer_counts(l.name, plan.get(l.name)) for l in self.profile.layers]
        prof = self.profile
        return totals(counts, prof.total_params, self.param_bytes, prof.total_macs,
                      other_nonzero=self._other_nonzero(plan))

    def _other_nonzero(self, plan: Plan) -> int:
        """Nonzero non-prunable parameters (biases, BatchNorm), with channel-pruned entries zeroed."""
        if self._other_nz is None:
            prunable = set(self.keys.values())
            self._other_nz = sum(int(torch.count_nonzero(v)) for k, v in self.base.items()
                                 if k in self.param_names and k not in prunable)
        removed = 0
        seen = set()
        for name, lp in plan.active().items():
            if lp.granularity != "channel":
                continue
            view = self.view(name, lp)
            if view.group is None or view.group.id in seen:
                continue
            seen.add(view.group.id)
            keep = view.kept_units(lp.sparsity)
            for pname, idx in view.group.aux:
                t = self.base.get(pname)
                if t is not None:
                    removed += int(torch.count_nonzero(t[torch.as_tensor(idx)][~keep]))
        return self._other_nz - removed

    # ------------------------------------------------------------------ full masks
    def engine_for(self, state: dict[str, torch.Tensor]) -> MaskEngine:
        """A throwaway engine ranking other weights (e.g. mid-fine-tuning); thread-safe."""
        keys = self.keys
        return MaskEngine({l.name: l for l in self.profile.layers}, weight=lambda n: state[keys[n]],
                          channel_group=self.channel_group, gradient=self.gradient, seed=self.engine.seed,
                          statistic=self.statistic)

    def materialize(self, plan: Plan):
        """Full masks of a plan on the kept weights: ({layer: bool mask}, {aux param: bool mask})."""
        return self.engine.materialize(plan, self.base)

    def masked_state(self, plan: Plan, share: bool = False) -> dict[str, torch.Tensor]:
        """base * mask for every parameter/buffer: what the pruned model's state_dict is.

        ``share``: tensors the plan leaves alone are the kept weights themselves (not copies), and big layers
        whose ranking is not cached and whose mask needs none (element, |w|) are masked one-off, without
        building a ranking (``oneoff.py``: same mask, a fraction of the time and memory)."""
        if not share:
            return masked_state(self.base, *self.materialize(plan))
        out = dict(self.base)
        direct = {n: lp for n, lp in plan.active().items() if self._one_off(n, lp)}
        rest = Plan({n: lp for n, lp in plan.active().items() if n not in direct})
        out.update(masked_tensors(self.base, *self.materialize(rest)))
        for n, lp in direct.items():
            k = self.keys[n]
            out[k] = self.base[k] if self.in_place.get(n) == lp else oneoff.masked_weight(self.base[k], lp.sparsity)
        return out

    def one_off_bytes(self, plan: Plan) -> int:
        """Bytes of the big layers whose masked weights :meth:`masked_state` writes one-off (new tensors)."""
        return sum(self.base[self.keys[n]].numel() * self.base[self.keys[n]].element_size()
                   for n, lp in plan.active().items() if self._one_off(n, lp))

    def masked_state_in_place(self, plan: Plan) -> tuple[dict[str, torch.Tensor], list[str]]:
        """:meth:`masked_state` (``share=True``) with the plan's one-off layers masked *in* the kept weights (no
        new tensors: what keeps ``prune`` of a big model at one copy of its weights). The other layers' masks
        are built first, while the kept weights are still dense: data-aware scores (activations, gradients)
        run the whole model. The kept weights are pruned from then on: whoever calls this owns them and
        discards them afterwards (the prune flow with ``own_loaded``). Returns (state, layers masked in place)."""
        direct = {n: lp for n, lp in plan.active().items() if self._one_off(n, lp)}
        rest = Plan({n: lp for n, lp in plan.active().items() if n not in direct})
        out = dict(self.base)
        out.update(masked_tensors(self.base, *self.materialize(rest)))
        for n, lp in direct.items():
            oneoff.mask_in_place(self.base[self.keys[n]], lp.sparsity)
            self.in_place[n] = lp
        return out, list(direct)

    def _one_off(self, name: str, lp: LayerPlan) -> bool:
        return oneoff.supports(lp.criterion, lp.granularity, self.profile.layer(name).params, self.one_off_min_params) \
            and self.needs_build(name, lp)

    def mismatches(self, plan: Plan, state: dict[str, torch.Tensor]) -> list[str]:
        """Tensors of ``state`` that differ (bitwise) from the plan's masked state, computed one layer at a time
        (the check that a recipe reproduces a model, without a second copy of the model)."""
        from ..fileio import bit_equal

        bad = []
        active = plan.active()
        changed = set()
        for n, lp in active.items():
            if self._one_off(n, lp):      # compared chunk by chunk: no masked copy of a big layer
                k = self.keys[n]
                changed.add(k)
                if k in state and self.in_place.get(n) == lp and state[k].data_ptr() == self.base[k].data_ptr():
                    continue      # masked in place by mask_in_place: the tensor *is* the recipe's mask applied
                if k in state and not oneoff.matches(self.base[k], lp.sparsity, state[k]):
                    bad.append(k)
                continue
            else:
                t = masked_tensors(self.base, self.materialize(Plan({n: lp}))[0], {})
            for k, v in t.items():
                changed.add(k)
                if k in state and not bit_equal(v, state[k]):
                    bad.append(k)
            del t
        if any(lp.granularity == "channel" for lp in active.values()):
            # channel plans also zero BatchNorm/bias entries; their combined masks come from the whole plan
            _, aux = self.materialize(Plan({n: lp for n, lp in active.items() if lp.granularity == "channel"}))
            for k, v in masked_tensors(self.base, {}, aux).items():
                changed.add(k)
                if k in state and not bit_equal(v, state[k]) and k not in bad:
                    bad.append(k)
        bad += [k for k, v in state.items() if k not in changed and k in self.base and not bit_equal(self.base[k], v)]
        return bad

    def nonfinite_layers(self) -> dict[str, int]:
        out = {}
        for l in self.profile.layers:
            n = count_nonfinite(self.base[l.key])
            if n:
                out[l.name] = n
        return out
