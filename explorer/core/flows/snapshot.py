"""The frozen input of every flow: what a job starts from, taken on the caller's thread (the GUI thread in the
window) by ``Session.snapshot``.

A snapshot holds references, not copies: the loaded module (only ever copied, never run or trained in place), the
loaded and the kept weights (dicts of tensors the session never writes into: applying a plan rebinds the model's
tensors, new kept weights are new tensors), the plan, the dataset, the profile, the channel groups, the seed and
device, and the session's mask views and calibration *at that moment* -- objects the session replaces, never
changes, when any of their inputs changes (``PlanMasks.renewed``). So a flow computes the result of the state it
was given whatever happens to the session meanwhile (edits, apply, undo, another model), and it never calls back
into the session: no lock order is needed between the window and its jobs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..device import on_device
from ..errors import PlanError
from ..model.data import DatasetBundle
from ..model.layers import LayerInfo, ModelProfile
from ..model.sharing import twin
from ..prune import plan_rules as rules
from ..prune.masks import LayerMask
from ..prune.plan import LayerPlan, Plan
from ..prune.plan_masks import PlanMasks


@dataclass(frozen=True)
class Snapshot:
    model_spec: str
    module: nn.Module                     # the loaded module: copied by model(), never run or trained itself
    dataset: DatasetBundle
    profile: ModelProfile
    input_shape: tuple
    original: dict[str, torch.Tensor]     # the weights as loaded
    base: dict[str, torch.Tensor]         # the kept weights masks apply to
    base_id: int
    plan: Plan                            # the plan the flow works on
    applied: Plan                         # what the model's weights reflected when the snapshot was taken
    seed: int
    device: torch.device
    masks: PlanMasks                      # rankings over ``base`` (renewed, never changed, by the session)
    calibration: object                   # the Calibration part (core/session/calibration.py) at ``base``
    load: object                          # the LoadResult (channel groups, analysed on first use)

    # ------------------------------------------------------------------ what flows ask (the session's read-only
    # questions, answered for the frozen state: analyse/* take either)
    @property
    def layer_names(self) -> list[str]:
        return self.profile.names

    @property
    def layers(self) -> list[LayerInfo]:
        return self.profile.layers

    def layer(self, name: str) -> LayerInfo:
        try:
            return self.profile.layer(name)
        except KeyError:
            raise PlanError(f"Unknown layer '{name}'.") from None

    @property
    def groups(self):
        return self.load.groups

    def channel_group(self, name: str):
        return self.load.groups.of(name)

    def linked_layers(self, name: str) -> tuple[str, ...]:
        g = self.load.groups.by_layer.get(name)
        return g.members if g is not None and g.linked else (name,)

    def linked_plan(self, plan: Plan) -> Plan:
        return rules.linked_plan(plan, self.linked_layers)

    def check_layer_plan(self, name: str, lp: LayerPlan) -> LayerPlan:
        lp = rules.check_layer_plan(name, lp, self.layer(name), lambda: self.channel_group(name), self.dataset)
        self.calibration.check_criterion(name, lp, lambda: self.linked_layers(name))
        return lp

    @property
    def calibration_samples(self) -> int:
        return self.calibration.samples

    def base_state(self) -> dict[str, torch.Tensor]:
        return self.base

    def original_state(self) -> dict[str, torch.Tensor]:
        return self.original

    def materialize(self, plan: Plan | None = None):
        return self.masks.materialize(plan or self.plan)

    def applied_state(self) -> dict[str, torch.Tensor]:
        """The weights the model held when the snapshot was taken (the kept weights under the applied plan)."""
        return self.masked_state(self.applied) if self.applied.active() else self.base

    def model_copy(self, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """A private copy that owns its tensors (it may be trained) holding ``state``, default the applied
        weights, like ``Session.model_copy``."""
        return self.model(self.applied_state() if state is None else state, trainable=True)

    def layer_mask(self, name: str, lp: LayerPlan | None = None) -> LayerMask:
        return self.masks.view(name, lp or self.plan.get(name))

    def totals(self, plan: Plan | None = None):
        return self.masks.totals(plan or self.plan)

    def masked_state(self, plan: Plan | None = None) -> dict[str, torch.Tensor]:
        """kept weights * mask of ``plan`` (default: the snapshot's plan); new tensors where masked."""
        return self.masks.masked_state(plan or self.plan)

    def masks_for_state(self, plan: Plan, state: dict[str, torch.Tensor]):
        """Full masks of ``plan`` ranked on ``state`` (fine-tuning's re-mask callback): the criteria read this
        snapshot's calibration statistics and gradients."""
        return self.masks.engine_for(state).materialize(plan, state)

    def model(self, state: dict[str, torch.Tensor] | None = None, trainable: bool = False) -> nn.Module:
        """A private copy of the model (eval mode, on the CPU) holding ``state`` (default: the kept weights).
        Read-only copies share ``state``'s tensors; ``trainable`` copies own theirs (training writes in place)."""
        state = self.base if state is None else state
        if trainable:
            state = {k: v.detach().clone() for k, v in state.items()}
        return twin(self.module, state)

    def job_model(self, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """:meth:`model` on the snapshot's device: what evaluations and measurements run."""
        return on_device(self.model(state), self.device)

    def with_base(self, base: dict[str, torch.Tensor], plan: Plan | None = None) -> "Snapshot":
        """This snapshot with other kept weights (fine-tuned, reconstructed): views and calibration follow them, and
        the model's weights reflect ``plan`` (default: the snapshot's plan), as after adopting them."""
        cal = self.calibration.at(base)
        masks = self.masks.renewed(base=base, gradient=cal.gradient, statistic=cal.statistic)
        masks.one_off_min_params = self.masks.one_off_min_params
        plan = plan or self.plan
        return replace(self, base=base, base_id=-1, masks=masks, calibration=cal, plan=plan, applied=plan)

    def with_own_masks(self) -> "Snapshot":
        """This snapshot with mask views of its own (sharing the rankings built so far), whose settings a flow may
        change without touching the session's."""
        return replace(self, masks=self.masks.copy())

    def runtime(self):
        """The fine-tuning runtime of a job on this snapshot (its device, one process)."""
        from ..train.distributed import Runtime
        return Runtime(device=self.device)
