"""The session's calibration data and the statistics the data-aware criteria read (a part of :class:`Session`).

Calibration data are ``calibration_samples`` training samples drawn with the session's seed; statistics
(Fisher diagonal, input norms, APoZ) are computed at the kept weights on first use -- in a job when the window
asks -- and cached until the kept weights, the dataset, the seed or the sample count change. Which BatchNorm
and ReLU follow each layer comes from one traced forward of an example input, once per loaded model.
"""
from __future__ import annotations

import torch

from .errors import PlanError
from .prune.calibration import (
    DEFAULT_CALIBRATION_SAMPLES,
    KINDS,
    CalibrationCache,
    calibration_batch,
    check_samples,
    fisher_diagonal,
    input_norms,
)
from .prune.granularity import Channel


class SessionCalibration:
    """Mixed into :class:`Session`; uses its kept weights, dataset, seed, model and channel groups."""

    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES

    @property
    def _calibration(self) -> CalibrationCache:
        c = self.__dict__.get("_calibration_cache")
        if c is None:
            c = self.__dict__["_calibration_cache"] = CalibrationCache()
        return c

    def _calibration_key(self) -> tuple:
        ds = self.dataset
        return (self._base_id, self.seed, ds.spec, id(ds), self.calibration_samples)

    # ------------------------------------------------------------------ settings
    def set_calibration_samples(self, n: int) -> None:
        """How many training samples the data-aware criteria and reconstruction use (recorded in recipes)."""
        n = check_samples(n)
        if n != self.calibration_samples:
            self.calibration_samples = n
            if self.masks is not None:
                self.masks.invalidate_data_criteria()
            if self.loaded_ok:
                self.plan_changed.emit(None)

    def calibration_record(self) -> dict:
        """What a recipe records so that criteria and reconstruction replay bit for bit."""
        return {"calibration": {"samples": self.calibration_samples, "seed": self.seed}}

    def calibration_data(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The calibration samples (inputs, labels or None)."""
        return calibration_batch(self.dataset, self.calibration_samples, self.seed)

    # ------------------------------------------------------------------ statistics
    def needs_calibration(self, lp) -> bool:
        """True when ranking ``lp`` first computes calibration statistics (the window does that in a job)."""
        kind = lp.criterion.needs
        return kind in KINDS and not self._calibration.has(kind, self._calibration_key())

    def calibration_statistic(self, kind: str, progress=None, cancel=None) -> dict[str, torch.Tensor]:
        """{layer: statistic} of ``kind`` ('fisher', 'input_norm', 'apoz'), computed once per kept weights."""
        if kind not in KINDS:
            raise ValueError(kind)

        def compute():
            x, y = self.calibration_data()
            module = self.model_copy(self._base)
            names = self.layer_names
            if kind == "fisher":
                return fisher_diagonal(module, x, y, names, self.dataset.num_classes, progress=progress,
                                       cancel=cancel)
            if kind == "input_norm":
                return input_norms(module, x, names, cancel=cancel)
            from .prune.activations import trace_followers
            f = trace_followers(module, names, x, cancel=cancel)
            return {n: a for n in names if (a := f.apoz(n)) is not None}

        return self._calibration.get(kind, self._calibration_key(), compute)

    def _statistic(self, kind: str, layer: str) -> torch.Tensor | None:
        if kind == "bn_gamma":
            p = self.following_batchnorm(layer)
            return None if p is None else self._base[p]
        return self.calibration_statistic(kind).get(layer)

    def _followers(self):
        from .prune.activations import trace_followers

        c = self._calibration
        with c.followers_lock:
            if c.followers is None or c.followers[0] != self._original_id:
                example = torch.zeros(1, *self.require().input_shape)
                with self.lock:
                    c.followers = (self._original_id, trace_followers(self.module, self.layer_names, example))
            return c.followers[1]

    def following_batchnorm(self, layer: str) -> str | None:
        """The weight parameter of the BatchNorm right after ``layer`` whose entries go with its channels (from
        the channel group's parameters zeroed with a channel), or None."""
        bn = self._followers().batchnorm.get(layer)
        if bn is None:
            return None
        return bn if bn in {p for p, _ in self.channel_group(layer).aux} else None

    def _check_criterion(self, name: str, lp) -> None:
        """Refuse a criterion where it cannot score this layer (called by ``check_layer_plan``)."""
        crit = lp.criterion
        if crit.needs_labels and not self.dataset.has_labels:
            raise PlanError(f"The {crit.name} criterion needs labels: its Fisher is built from per-sample gradients "
                            f"of the loss, and {self.dataset.spec} has none.",
                            "Use wanda or apoz (they work on unlabelled data), or l1/l2.")
        if crit.channel_only and not isinstance(lp.granularity, Channel):
            raise PlanError(f"The {crit.name} criterion scores whole output channels; it works with channel "
                            f"granularity only (not {lp.granularity.name}).",
                            "Choose channel granularity, or a criterion such as l1, hessian or wanda.")
        if crit.needs == "input_norm" and isinstance(self.module, torch.jit.ScriptModule):
            raise PlanError(f"The {crit.name} criterion reads each layer's inputs with forward hooks, which a "
                            "TorchScript model does not support.", "Open the model as a state_dict with --arch.")
        if crit.needs in ("fisher", "input_norm", "apoz") and self.dataset.size("train") == 0:
            raise PlanError(f"The {crit.name} criterion needs calibration samples from the training split, and "
                            f"{self.dataset.spec} has none.")
        # a channel group shares one ranking: every layer of it must have what the criterion reads
        for m in (self.linked_layers(name) if crit.needs in ("bn_gamma", "apoz") else ()):
            also = "" if m == name else f" (it shares its channels with layer {name})"
            if crit.needs == "bn_gamma" and self.following_batchnorm(m) is None:
                raise PlanError(f"The bn-scale criterion needs a BatchNorm right after layer {m}{also} (its |γ| scores "
                                "the channels), and none follows it whose entries go with its channels.",
                                "Use l1, l2, hessian or apoz for this layer.")
            if crit.needs == "apoz" and m not in self._followers().relu:
                raise PlanError(f"The apoz criterion counts zeros after the ReLU that follows a layer, and no ReLU "
                                f"follows layer {m}{also} (directly or after its BatchNorm).",
                                "Use l1, l2, hessian or bn-scale for this layer.")
