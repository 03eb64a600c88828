"""The weight state (a part of the session): the weights as loaded, the kept weights masks apply to, the plan the
model's tensors reflect, and the store of earlier kept weights.

The original weights are never lost: the model's prunable weights are always ``base * mask``, with ``base`` the
kept weights (the loaded ones, or the last fine-tuned ones) and ``original`` the weights as loaded, so reset and
undo are exact. Nothing here writes into a tensor it holds: applying a plan rebinds the model's tensors to new ones,
new kept weights are new tensors -- so a flow's snapshot (references to these dicts) stays valid. The one exception
is the prune flow given the loaded weights (``flows.prune.run(..., own_loaded=True)``), for a door that discards the
session afterwards; it tells the session so (``Session.mark_pruned_in_place``), and the session then refuses what
would need the dense weights (:meth:`WeightState.check_not_spent`).
"""
from __future__ import annotations

import torch
from psygnal import Signal

from ..errors import ExplorerError
from ..history import MIN_BUDGET_BYTES, WeightStore, state_bytes
from ..prune.plan import Plan

LOADED = "loaded weights"


class WeightState:
    changed = Signal()      # the model's weights changed (apply, new kept weights, reset, undo); the session
                            # forwards it as ``weights_changed``

    def __init__(self, owner):
        self.owner = owner                     # the Session (public methods, its lock and events)
        self.original: dict[str, torch.Tensor] = {}
        self.base: dict[str, torch.Tensor] = {}
        self.original_id = self.base_id = 0
        self.label = LOADED                    # what the kept weights are ("loaded weights", "fine-tuned", ...)
        self.applied_plan = Plan()             # what the model's tensors reflect
        self.pruned_in_place: Plan | None = None   # set once the loaded weights were pruned in place
        self.version = 0                       # bumps whenever the model's weights change
        self.store = WeightStore()             # kept weights one can return to (History)

    def load(self, module: torch.nn.Module) -> None:
        """A new model: its own tensors are the loaded weights (not a copy: see the module's doc)."""
        self.original = {k: v.detach() for k, v in module.state_dict().items()}
        self.base = self.original
        self.store.clear()
        self.store.budget = max(MIN_BUDGET_BYTES, 2 * state_bytes(self.original))
        self.original_id = self.base_id = self.store.add(self.original, pinned=True)
        self.applied_plan = Plan()
        self.label = LOADED
        self.pruned_in_place = None
        self.version += 1

    # ------------------------------------------------------------------ the model's tensors
    def write(self, plan: Plan, state: dict[str, torch.Tensor]) -> None:
        """The model's tensors become ``state``'s (rebound, not copied in place: the kept weights that the model
        shared stay untouched, and unchanged tensors stay shared)."""
        from ..model.sharing import rebind_state

        self.check_not_spent(plan)
        with torch.no_grad(), self.owner.lock:
            rebind_state(self.owner.module, state)
            self.applied_plan = plan
            self.version += 1

    # ------------------------------------------------------------------ kept weights
    def use_base(self, state: dict[str, torch.Tensor], label: str, base_id: int) -> None:
        """New kept weights (after fine-tuning, on reset or restore); the views follow (``owner.renew_views``)."""
        self.check_not_spent(None)
        with self.owner.lock:
            self.base, self.base_id = state, base_id
            self.store.use(base_id)
            self.label = label
            self.version += 1
            self.owner.renew_views(base=state)

    def add_base(self, state: dict[str, torch.Tensor], label: str) -> None:
        """A copy of ``state`` becomes the kept weights (stored, so History can return to it)."""
        state = {k: v.detach().clone() for k, v in state.items()}
        self.use_base(state, label, self.store.add(state))

    def back_to_loaded(self) -> None:
        if self.base is not self.original and self.label != LOADED:
            self.use_base(self.original, LOADED, self.original_id)

    # ------------------------------------------------------------------ pruning the loaded weights in place
    def check_not_spent(self, plan: Plan | None) -> None:
        """Refuse to change weights after pruning in place (``plan``: None for new kept weights)."""
        spent = self.pruned_in_place
        if spent is None:
            return
        if plan is None or any(plan.get(n) != spent.get(n) for n in self.owner.masks.in_place):
            raise ExplorerError("The loaded weights were pruned in place to save memory, so the dense weights "
                                "are gone from this session.", "Open the model again to try another plan.")
