"""Calibration: the statistics the data-aware criteria read, at one set of kept weights (a part of the session).

A :class:`Calibration` is bound to everything its numbers depend on -- the loaded model and dataset, the kept
weights, the seed and the sample count -- and is replaced, never changed, when any of them changes. So a flow
holding one (through its :class:`~explorer.core.flows.snapshot.Snapshot`) computes exactly the statistics of the
state it was taken from, whatever the window does meanwhile, and it never touches the session: it copies the
model it measures from the loaded module itself, under its own lock only. Statistics (Fisher diagonal, input
norms, APoZ) and taylor's gradients are computed on first use -- in a job when the window asks -- and cached.
Which BatchNorm and ReLU follow each layer comes from one traced forward of an example input, once per loaded
model (:class:`Structure`, shared by the calibrations of that model).
"""
from __future__ import annotations

import copy
import threading

import torch

from ..errors import PlanError
from ..model.layers import load_state
from ..prune.calibration import (
    KINDS,
    CalibrationCache,
    calibration_batch,
    fisher_diagonal,
    input_norms,
    true_fisher_diagonal,
)
from ..prune.granularity import Channel


class Structure:
    """What follows each layer of one loaded model (its BatchNorm, its ReLU), traced once, thread-safe."""

    def __init__(self, module: torch.nn.Module, names: list[str], input_shape: tuple):
        self._module, self._names, self._input_shape = module, list(names), tuple(input_shape)
        self._lock = threading.Lock()
        self._followers = None

    def followers(self):
        from ..prune.activations import trace_followers

        with self._lock:
            if self._followers is None:
                example = torch.zeros(1, *self._input_shape)
                self._followers = trace_followers(copy.deepcopy(self._module), self._names, example)
            return self._followers


class Calibration:
    """Calibration samples, statistics and gradients at the kept weights ``base`` (a dict that is never written)."""

    def __init__(self, module: torch.nn.Module, dataset, names: list[str], groups_of, base: dict[str, torch.Tensor],
                 base_id: int, seed: int, samples: int, structure: Structure):
        """``module``: the loaded model (only ever copied); ``groups_of(layer)``: its channel group."""
        self.module, self.dataset, self.names, self.groups_of = module, dataset, list(names), groups_of
        self.base, self.base_id = base, base_id
        self.seed, self.samples, self.structure = seed, samples, structure
        self._cache = CalibrationCache()
        self._grads_lock = threading.Lock()
        self._grads: dict[str, torch.Tensor] | None = None

    def _key(self) -> tuple:
        return (self.base_id, self.seed, self.dataset.spec, id(self.dataset), self.samples)

    def at(self, base: dict[str, torch.Tensor], base_id: int = -1) -> "Calibration":
        """The calibration of other kept weights (everything else the same)."""
        return Calibration(self.module, self.dataset, self.names, self.groups_of, base, base_id, self.seed,
                           self.samples, self.structure)

    def model(self) -> torch.nn.Module:
        """A private copy of the model at the kept weights (eval mode)."""
        m = copy.deepcopy(self.module)
        load_state(m, self.base)
        return m.eval()

    def record(self) -> dict:
        """What a recipe records so that criteria and reconstruction replay bit for bit."""
        return {"calibration": {"samples": self.samples, "seed": self.seed}}

    def data(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The calibration samples (inputs, labels or None)."""
        return calibration_batch(self.dataset, self.samples, self.seed)

    # ------------------------------------------------------------------ statistics
    def has(self, kind: str) -> bool:
        return self._cache.has(kind, self._key())

    def needs(self, lp) -> bool:
        """True when ranking ``lp`` first computes statistics not computed yet (the window does that in a job)."""
        kind = lp.criterion.needs
        return kind in KINDS and not self.has(kind)

    def statistic_of(self, kind: str, progress=None, cancel=None) -> dict[str, torch.Tensor]:
        """{layer: statistic} of ``kind`` ('fisher', 'true_fisher', 'input_norm', 'apoz'), computed once."""
        if kind not in KINDS:
            raise ValueError(kind)

        def compute():
            x, y = self.data()
            module = self.model()
            names = self.names
            if kind == "fisher":
                return fisher_diagonal(module, x, y, names, self.dataset.num_classes, progress=progress,
                                       cancel=cancel)
            if kind == "true_fisher":
                return true_fisher_diagonal(module, x, y, names, self.dataset.num_classes, seed=self.seed,
                                            progress=progress, cancel=cancel)
            if kind == "input_norm":
                return input_norms(module, x, names, cancel=cancel)
            from ..prune.activations import trace_followers
            f = trace_followers(module, names, x, cancel=cancel)
            return {n: a for n in names if (a := f.apoz(n)) is not None}

        return self._cache.get(kind, self._key(), compute)

    def statistic(self, kind: str, layer: str) -> torch.Tensor | None:
        """One layer's statistic (the mask engine's callback); BatchNorm scales come from the kept weights."""
        if kind == "bn_gamma":
            p = self.following_batchnorm(layer)
            return None if p is None else self.base[p]
        return self.statistic_of(kind).get(layer)

    def gradient(self, name: str) -> torch.Tensor | None:
        """taylor's gradient of ``name`` at the kept weights (computed once for all layers)."""
        with self._grads_lock:
            if self._grads is None:
                from ..prune.gradients import compute_gradients
                self._grads = compute_gradients(self.model(), self.dataset, self.names, self.seed)
            return self._grads.get(name) if self._grads else None

    def following_batchnorm(self, layer: str) -> str | None:
        """The weight parameter of the BatchNorm right after ``layer`` whose entries go with its channels (from
        the channel group's parameters zeroed with a channel), or None."""
        bn = self.structure.followers().batchnorm.get(layer)
        if bn is None:
            return None
        return bn if bn in {p for p, _ in self.groups_of(layer).aux} else None

    # ------------------------------------------------------------------ refusals
    def check_criterion(self, name: str, lp, linked) -> None:
        """Refuse a criterion where it cannot score this layer (``linked()``: the layers sharing its channels,
        asked only for the criteria that need them: the channel analysis may not have run yet)."""
        crit = lp.criterion
        ds = self.dataset
        if crit.needs_labels and not ds.has_labels:
            raise PlanError(f"The {crit.name} criterion needs labels: its Fisher is built from per-sample gradients "
                            f"of the loss, and {ds.spec} has none.",
                            "Use wanda or apoz (they work on unlabelled data), or l1/l2.")
        if crit.channel_only and not isinstance(lp.granularity, Channel):
            raise PlanError(f"The {crit.name} criterion scores whole output channels; it works with channel "
                            f"granularity only (not {lp.granularity.name}).",
                            "Choose channel granularity, or a criterion such as l1, hessian or wanda.")
        if crit.needs == "input_norm" and isinstance(self.module, torch.jit.ScriptModule):
            raise PlanError(f"The {crit.name} criterion reads each layer's inputs with forward hooks, which a "
                            "TorchScript model does not support.", "Open the model as a state_dict with --arch.")
        if crit.needs in ("fisher", "input_norm", "apoz") and ds.size("train") == 0:
            raise PlanError(f"The {crit.name} criterion needs calibration samples from the training split, and "
                            f"{ds.spec} has none.")
        # a channel group shares one ranking: every layer of it must have what the criterion reads
        for m in (linked() if crit.needs in ("bn_gamma", "apoz") else ()):
            also = "" if m == name else f" (it shares its channels with layer {name})"
            if crit.needs == "bn_gamma" and self.following_batchnorm(m) is None:
                raise PlanError(f"The bn-scale criterion needs a BatchNorm right after layer {m}{also} (its |γ| scores "
                                "the channels), and none follows it whose entries go with its channels.",
                                "Use l1, l2, hessian or apoz for this layer.")
            if crit.needs == "apoz" and m not in self.structure.followers().relu:
                raise PlanError(f"The apoz criterion counts zeros after the ReLU that follows a layer, and no ReLU "
                                f"follows layer {m}{also} (directly or after its BatchNorm).",
                                "Use l1, l2, hessian or bn-scale for this layer.")
