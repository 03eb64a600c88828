"""The session: the one object that holds model + dataset + plan + masks + history + measurements.

Every state change goes through a public method here, and the session emits the events the GUI listens
to (psygnal; the GUI never emits them). The original weights are never lost: the model's prunable weights
are always ``base * mask``, with ``base`` the kept weights (the loaded ones, or the last fine-tuned ones)
and ``original`` the weights as loaded, so reset and undo are exact.

Loading lives in ``model.loading`` and gradients in ``prune.gradients``; the undo stack, the History with
its weight store and the measurements are small objects of their own that the session owns.
"""
from __future__ import annotations

import copy
import threading

import torch
from psygnal import Signal
from torch import nn

from ..errors import ExplorerError, PlanError
from ..history import MIN_BUDGET_BYTES, History, WeightStore, state_bytes
from ..measurements import Measurements
from ..model import data as data_mod
from ..model.layers import LayerInfo, ModelProfile, load_state
from ..model.loading import LoadResult, resolve, resolve_dataset_for
from ..model.metrics import LayerCounts, Totals, param_bytes
from ..prune import plan_rules as rules
from ..prune.calibration import DEFAULT_CALIBRATION_SAMPLES, KINDS, check_samples
from ..prune.criteria import CRITERIA, DATA_CRITERIA
from ..prune.granularity import NM, Channel
from ..prune.masks import LayerMask
from ..prune.plan import LayerPlan, Plan
from ..prune.plan_masks import PlanMasks
from ..undo import Edit, UndoStack
from .calibration import Calibration, Structure
from .manual import SessionManual
from .results import SessionResults

LOADED = "loaded weights"
READY_LAYER_PARAMS = 2_000_000   # rankings up to this many weights take well under a second to build


# rankings that stay valid when only the seed, or only the calibration samples, change
_SEEDLESS = frozenset(n for n, c in CRITERIA.items() if not c.needs and n not in ("random", "taylor")) | {"manual"}
_DATALESS = frozenset(n for n in CRITERIA if n not in DATA_CRITERIA) | {"manual"}


class Session(SessionResults, SessionManual):
    """Model + dataset + plan + masks + history, with events for the GUI."""

    loaded = Signal()                 # a new model/dataset is in place
    plan_changed = Signal(object)     # names of layers whose plan changed (list), or None for all
    weights_changed = Signal()        # the module's weights changed (apply, fine-tune, reset)
    selection_changed = Signal(str)
    history_changed = Signal()        # undo/redo availability, History entries, saved marker
    device_changed = Signal(str)      # where jobs run now (its short description)

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.result: LoadResult | None = None
        self.plan = Plan()
        self.applied_plan = Plan()
        self.selected: str | None = None
        self.undo_stack = UndoStack()
        self._original: dict[str, torch.Tensor] = {}
        self._base: dict[str, torch.Tensor] = {}
        self._base_id = self._original_id = 0
        self.masks: PlanMasks | None = None
        self.calibration: Calibration | None = None     # statistics at the kept weights (replaced, never changed)
        self.calibration_samples = DEFAULT_CALIBRATION_SAMPLES
        self._structure: Structure | None = None
        self.lock = threading.RLock()
        self.measurements = Measurements()
        self.saved_plan: Plan | None = None    # the plan last exported (for the 'modified' marker)
        self.base_label = LOADED
        self.history = History()
        self.weights = WeightStore()
        self.pruned_in_place: Plan | None = None   # set once the loaded weights were pruned in place
        self.version = 0                       # bumps whenever the model's weights change
        self.device = torch.device("cpu")      # where jobs run; the module itself always stays on the CPU

    # ------------------------------------------------------------------ loading
    @classmethod
    def open(cls, model: str | None = None, dataset: str | None = None, seed: int = 0, **kw) -> "Session":
        s = cls(seed=seed)
        s.apply_load(resolve(model, dataset, **{k: v for k, v in kw.items()
                                                 if k in ("weights", "arch", "trust", "input_shape")}))
        return s

    def load(self, model: str | None = None, dataset: str | None = None, **kw) -> None:
        """Replace model/dataset; on error nothing already loaded changes."""
        self.apply_load(resolve(model, dataset, **kw))

    def apply_load(self, result: LoadResult) -> None:
        with self.lock:
            self.result = result
            module = result.model.module
            # the loaded tensors themselves, not a copy: the module's tensors are never written in place by the
            # session (applying a plan rebinds them to new tensors, see _write_state), so these stay as loaded
            self._original = {k: v.detach() for k, v in module.state_dict().items()}
            self._base = self._original   # never mutated in place: masks produce new tensors
            self.weights.clear()
            self.weights.budget = max(MIN_BUDGET_BYTES, 2 * state_bytes(self._original))
            self._original_id = self._base_id = self.weights.add(self._original, pinned=True)
            self.plan, self.applied_plan, self.saved_plan = Plan(), Plan(), Plan()
            self.undo_stack.clear()
            self.measurements.clear()
            self.history = History()
            self.version += 1
            self.base_label = LOADED
            self.pruned_in_place = None
            self._structure = Structure(module, result.profile.names, result.input_shape)
            self.calibration = self._new_calibration()
            cal = self.calibration
            groups_of = (lambda n, r=result: r.groups.of(n))
            self.masks = PlanMasks(result.profile, groups_of, cal.gradient, self.seed,
                                   {n for n, _ in module.named_parameters()}, param_bytes(module), self._original,
                                   statistic=cal.statistic)
            self.selected = self.default_layer()
        self.loaded.emit()
        self.history_changed.emit()
        self.measurements.changed.emit()

    def set_dataset(self, spec: str) -> None:
        """Switch dataset for the loaded model (keeps plan and weights); errors leave everything as is."""
        self.apply_dataset(resolve_dataset_for(self.require(), spec))

    def apply_dataset(self, new: LoadResult) -> None:
        self.require()
        with self.lock:
            # a new LoadResult (same module), not the old one changed: snapshots taken before keep theirs
            self.result = r = new
            self.measurements.clear()
            self._structure = Structure(self.module, r.profile.names, r.input_shape)
            self._renew_views(profile=r.profile)
        self.loaded.emit()
        self.measurements.changed.emit()

    # ------------------------------------------------------------------ basic state
    def require(self) -> LoadResult:
        if self.result is None:
            raise ExplorerError("No model is loaded.")
        return self.result

    @property
    def loaded_ok(self) -> bool:
        return self.result is not None

    @property
    def module(self) -> nn.Module:
        return self.require().model.module

    @property
    def profile(self) -> ModelProfile:
        return self.require().profile

    @property
    def layers(self) -> list[LayerInfo]:
        return self.profile.layers

    @property
    def layer_names(self) -> list[str]:
        return self.profile.names

    @property
    def dataset(self) -> data_mod.DatasetBundle:
        return self.require().dataset

    @property
    def model_spec(self) -> str:
        return self.require().model.spec

    @property
    def model_name(self) -> str:
        return self.require().model.name

    def layer(self, name: str) -> LayerInfo:
        try:
            return self.profile.layer(name)
        except KeyError:
            raise PlanError(f"Unknown layer '{name}'.", "Run `pruning-explorer info` to list the prunable layers.") from None

    def default_layer(self) -> str | None:
        """The layer selected on load: the largest one whose ranking is quick to build (at most
        ``READY_LAYER_PARAMS`` weights), so the window opens on a layer it can show at once; the smallest
        layer when every one is bigger."""
        ls = self.require().profile.layers
        if not ls:
            return None
        ready = [l for l in ls if l.params <= READY_LAYER_PARAMS]
        return max(ready, key=lambda l: l.params).name if ready else min(ls, key=lambda l: l.params).name

    @property
    def groups_ready(self) -> bool:
        """The channel groups (which layers share channels) are known; until then the window runs the analysis
        in the background, and anything that needs them waits for it."""
        return self.require().groups_ready

    def ensure_groups(self, progress=None, cancel=None) -> None:
        """Run the channel-group analysis now if it was deferred (a job in the window)."""
        self.require().groups

    def select(self, name: str) -> None:
        self.layer(name)
        if name != self.selected:
            self.selected = name
            self.selection_changed.emit(name)

    def base_weight(self, name: str) -> torch.Tensor:
        """The kept (unmasked) weight of a prunable layer that masks apply to."""
        return self._base[self.profile.weight_key(name)]

    def original_state(self) -> dict[str, torch.Tensor]:
        return self._original

    def base_state(self) -> dict[str, torch.Tensor]:
        return self._base

    def applied_state(self) -> dict[str, torch.Tensor]:
        """The model's own tensors now (the kept weights under the applied plan); never write into them."""
        with self.lock:
            return {k: v.detach() for k, v in self.module.state_dict().items()}

    @property
    def input_shape(self) -> tuple:
        return tuple(self.require().input_shape)

    def model_copy(self, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """A private copy of the model (in eval mode), with ``state`` loaded if given: what jobs work on."""
        with self.lock:
            m = copy.deepcopy(self.module)
        if state is not None:
            load_state(m, state)
        return m.eval()

    def snapshot(self, plan: Plan | None = None):
        """The frozen input of a flow (``core/flows``): references to the current state, taken in microseconds on
        the caller's thread; the flow never calls back into the session. ``plan``: default the current plan."""
        from ..flows.snapshot import Snapshot

        r = self.require()
        with self.lock:
            return Snapshot(model_spec=r.model.spec, module=r.model.module, dataset=r.dataset, profile=r.profile,
                            input_shape=tuple(r.input_shape), original=dict(self._original), base=dict(self._base),
                            base_id=self._base_id, plan=(plan or self.plan).copy(), applied=self.applied_plan.copy(),
                            seed=self.seed, device=self.device, masks=self.masks, calibration=self.calibration,
                            load=r)

    @property
    def groups(self):
        """The channel groups of the loaded model (analysed on first use)."""
        return self.require().groups

    def job_copy(self, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """:meth:`model_copy` on the session's device: what evaluations and measurements run."""
        return self.model_copy(state).to(self.device)

    def runtime(self):
        """The fine-tuning runtime of this session's jobs (its device, one process)."""
        from ..train.distributed import Runtime
        return Runtime(device=self.device)

    def set_device(self, spec: str | torch.device | None) -> torch.device:
        """Run jobs on ``spec`` (auto|cpu|cuda[:N]|mps); refused with a clear error when it is not here."""
        from ..device import describe, resolve_device

        dev = resolve_device(spec)
        if dev != self.device:
            self.device = dev
            self.device_changed.emit(describe(dev))
        return dev

    def channel_group(self, name: str):
        return self.require().groups.of(name)

    def linked_layers(self, name: str) -> tuple[str, ...]:
        """Layers that share one channel choice with ``name`` (itself included)."""
        g = self.require().groups.by_layer.get(name)
        return g.members if g is not None and g.linked else (name,)

    # ------------------------------------------------------------------ gradients (taylor)
    def set_seed(self, seed: int) -> None:
        """Seed of the random criterion and of data shuffling; cached random rankings are dropped."""
        if seed != self.seed:
            self.seed = seed
            if self.masks:
                self._renew_views(keep=_SEEDLESS)

    # ------------------------------------------------------------------ calibration (see calibration.py)
    def _new_calibration(self) -> Calibration:
        r = self.require()
        return Calibration(r.model.module, r.dataset, r.profile.names, lambda n: r.groups.of(n), self._base,
                           self._base_id, self.seed, self.calibration_samples, self._structure)

    def _renew_views(self, profile: ModelProfile | None = None, base: dict | None = None,
                     keep: frozenset[str] | None = None) -> None:
        """New calibration and mask views for changed inputs; the old ones stay intact for flows holding them."""
        with self.lock:
            self.calibration = cal = self._new_calibration()
            r = self.result
            self.masks = self.masks.renewed(base=base, profile=profile, seed=self.seed, gradient=cal.gradient,
                                            statistic=cal.statistic, keep=keep,
                                            channel_group=lambda n: r.groups.of(n))

    def set_calibration_samples(self, n: int) -> None:
        """How many training samples the data-aware criteria and reconstruction use (recorded in recipes)."""
        n = check_samples(n)
        if n != self.calibration_samples:
            self.calibration_samples = n
            if self.masks is not None:
                self._renew_views(keep=_DATALESS)
            if self.loaded_ok:
                self.plan_changed.emit(None)

    def calibration_record(self) -> dict:
        """What a recipe records so that criteria and reconstruction replay bit for bit."""
        return {"calibration": {"samples": self.calibration_samples, "seed": self.seed}}

    def calibration_data(self):
        """The calibration samples (inputs, labels or None)."""
        return self.calibration.data()

    def needs_calibration(self, lp) -> bool:
        """True when ranking ``lp`` first computes calibration statistics (the window does that in a job)."""
        kind = lp.criterion.needs
        return kind in KINDS and not self.calibration.has(kind)

    def calibration_statistic(self, kind: str, progress=None, cancel=None) -> dict[str, torch.Tensor]:
        """{layer: statistic} of ``kind`` ('fisher', 'input_norm', 'apoz'), computed once per kept weights."""
        return self.calibration.statistic_of(kind, progress, cancel)

    def following_batchnorm(self, layer: str) -> str | None:
        return self.calibration.following_batchnorm(layer)

    # ------------------------------------------------------------------ plan editing
    def _edit(self) -> Edit:
        return Edit(self.plan.copy(), self.applied_plan.copy())

    def _replace_plan(self, plan: Plan, names=None, coalesce: object = None, record: bool = True) -> None:
        if record:
            self.undo_stack.push(self._edit(), coalesce)
        self.plan = plan
        self.plan_changed.emit(names)
        self.history_changed.emit()

    def end_edit(self) -> None:
        """Close a coalesced edit (e.g. on slider release): the next edit is a new undo step."""
        self.undo_stack.end_edit()

    def check_layer_plan(self, name: str, lp: LayerPlan) -> LayerPlan:
        """Validate one layer's plan: values, and that the granularity fits the layer."""
        lp = rules.check_layer_plan(name, lp, self.layer(name), lambda: self.channel_group(name), self.dataset)
        self.calibration.check_criterion(name, lp, self.linked_layers(name))
        return lp

    def set_layer(self, name: str, sparsity: float | None = None, granularity: str | None = None,
                  criterion: str | None = None, coalesce: object = None) -> list[str]:
        """Change one layer's plan (and its linked layers under channel granularity). Returns changed names."""
        cur = self.plan.get(name)
        if cur.is_manual and criterion is None:   # a slider or granularity edit leaves the hand-made choice
            cur = LayerPlan(cur.sparsity, cur.granularity, "l1")
        new = LayerPlan(cur.sparsity if sparsity is None else sparsity,
                        cur.granularity if granularity is None else granularity,
                        cur.criterion if criterion is None else criterion)
        if granularity is not None and sparsity is None and isinstance(new.granularity, NM) and new.sparsity == 0.0:
            new = LayerPlan(new.granularity.pattern_sparsity, new.granularity, new.criterion)
        new = self.check_layer_plan(name, new)
        channel = isinstance(new.granularity, Channel)
        names = list(self.linked_layers(name)) if channel or isinstance(cur.granularity, Channel) else [name]
        plan = self.plan
        for n in names:
            lp = new
            if n != name and not channel:
                # leaving channel: linked layers fall back to the same granularity if it fits, else element
                lp = new if new.granularity.fits(self.layer(n)) else LayerPlan(new.sparsity, "element", new.criterion)
            plan = plan.with_layer(n, lp)
        if plan.layers == self.plan.layers:
            return []
        plan.scope, plan.target_sparsity = "local", None   # a hand edit makes the plan per-layer
        self._replace_plan(plan, names, coalesce)
        return names

    def set_uniform(self, names: list[str], sparsity: float, granularity: str = "element",
                    criterion: str = "l1") -> dict[str, str]:
        """Same plan for many layers. Layers the granularity does not fit are left dense; returns why."""
        proto = self._check_many(names, LayerPlan(sparsity, granularity, criterion))
        skipped: dict[str, str] = {}
        plan = self.plan.copy()
        plan.scope, plan.target_sparsity = "local", sparsity
        for n in names:
            try:
                plan.layers[n] = self.check_layer_plan(n, proto)
            except PlanError as e:
                skipped[n] = e.message
                plan.layers.pop(n, None)
        rules.refuse_if_none_fit(names, skipped, proto)
        self.set_plan(plan)
        return skipped

    def _check_many(self, names: list[str], proto: LayerPlan) -> LayerPlan:
        """Bad values and a criterion the dataset cannot serve are errors for all layers, not 'does not fit'."""
        proto = proto.validated()
        rules.check_criterion_data(proto, self.dataset)
        for n in names:
            self.layer(n)
        return proto

    def set_global(self, names: list[str], sparsity: float, granularity: str = "element", criterion: str = "l1",
                   max_layer_sparsity: float = 0.95) -> dict[str, str]:
        """One threshold on comparable scores across ``names``; per-layer cap so no layer is emptied."""
        from ..prune.scope import global_sparsities

        proto = self._check_many(names, LayerPlan(sparsity, granularity, criterion))
        skipped: dict[str, str] = {}
        ok = []
        for n in names:
            try:
                self.check_layer_plan(n, LayerPlan(0.0, proto.granularity, proto.criterion))
                ok.append(n)
            except PlanError as e:
                skipped[n] = e.message
        rules.refuse_if_none_fit(names, skipped, proto)
        per_layer = global_sparsities(self, ok, sparsity, proto.granularity, proto.criterion, max_layer_sparsity)
        plan = self.plan.copy()
        for n in names:
            plan.layers.pop(n, None)
        for n, s in per_layer.items():
            plan.layers[n] = LayerPlan(s, proto.granularity, proto.criterion)
        plan.scope, plan.target_sparsity = "global", sparsity
        self.set_plan(plan)
        return skipped

    def set_plan(self, plan: Plan, record: bool = True) -> None:
        plan = self.linked_plan(plan.validated(self.layer_names))
        for n, lp in list(plan.layers.items()):
            plan.layers[n] = self.check_layer_plan(n, lp)
        self._replace_plan(plan, record=record)

    def linked_plan(self, plan: Plan) -> Plan:
        return rules.linked_plan(plan, self.linked_layers)

    @property
    def can_undo(self) -> bool:
        return self.undo_stack.can_undo

    @property
    def can_redo(self) -> bool:
        return self.undo_stack.can_redo

    def undo(self) -> bool:
        if self.can_undo:
            self._check_not_spent(None)      # a session pruned in place has no way back
        return self._step(self.undo_stack.undo(self._edit()))

    def redo(self) -> bool:
        if self.can_redo:
            self._check_not_spent(None)
        return self._step(self.undo_stack.redo(self._edit()))

    def _step(self, edit: Edit | None) -> bool:
        """Go to an earlier (or later) edit: its plan, and its applied plan written into the model if it differs."""
        if edit is None:
            return False
        if edit.applied != self.applied_plan:
            self._write_state(edit.applied, self.masked_state(edit.applied))
            self.weights_changed.emit()
        self._replace_plan(edit.plan.copy(), record=False)
        return True

    def reset(self) -> None:
        """Back to the dense loaded weights and an empty plan (undoable for the plan)."""
        self._check_not_spent(Plan())
        self.undo_stack.push(self._edit())
        self.plan = Plan()
        if self._base is not self._original and self.base_label != LOADED:
            self._set_base(self._original, LOADED, self._original_id)
        self._write_state(Plan(), self.masked_state(Plan()))
        self.weights_changed.emit()
        self.plan_changed.emit(None)
        self.history_changed.emit()

    @property
    def pending(self) -> bool:
        """The plan differs from what the model's weights reflect (Apply needed)."""
        return self.plan != self.applied_plan

    @property
    def modified(self) -> bool:
        """Something differs from the last export (or from the loaded model if never exported)."""
        return self.plan != (self.saved_plan or Plan()) or self.base_label != LOADED

    def mark_saved(self, plan: Plan | None = None) -> None:
        """The plan (default: the current one) was just exported: the 'modified' marker clears."""
        self.saved_plan = (plan or self.plan).copy()
        self.history_changed.emit()

    # ------------------------------------------------------------------ masks & counts (see prune.plan_masks)
    def layer_mask(self, name: str, lp: LayerPlan | None = None) -> LayerMask:
        return self.masks.view(name, lp or self.plan.get(name))

    def needs_build(self, name: str, lp: LayerPlan | None = None) -> bool:
        return self.masks.needs_build(name, lp or self.plan.get(name))

    def uncached(self, plan: Plan | None = None, extra: list[str] | None = None) -> list[str]:
        return self.masks.uncached(plan or self.plan, extra)

    def build_views(self, names: list[str], plan: Plan | None = None, progress=None, cancel=None,
                    loaded: LoadResult | None = None) -> None:
        """Rank ``names`` for ``plan`` ahead of use (a background job). ``loaded``: the load the names belong
        to (``session.result`` when the job was queued); if another model has been opened since, the job has
        outlived its model and builds nothing."""
        with self.lock:
            masks, result = self.masks, self.result
        if loaded is not None and result is not loaded:
            return
        masks.build(names, plan or self.plan, progress, cancel)

    def layer_counts(self, name: str, lp: LayerPlan | None = None) -> LayerCounts:
        self.layer(name)
        return self.masks.layer_counts(name, lp or self.plan.get(name))

    def totals(self, plan: Plan | None = None) -> Totals:
        return self.masks.totals(plan or self.plan)

    def masks_for_state(self, plan: Plan, state: dict[str, torch.Tensor]):
        """Full masks of ``plan`` ranked on ``state`` (the fine-tuning re-mask callback)."""
        return self.masks.engine_for(state).materialize(plan, state)

    def materialize(self, plan: Plan | None = None):
        return self.masks.materialize(plan or self.plan)

    def masked_state(self, plan: Plan | None = None, share: bool = False) -> dict[str, torch.Tensor]:
        """base * mask for every tensor of the state. ``share``: the tensors the plan leaves alone are the kept
        weights themselves, not copies (for the model's own state; never write into them)."""
        self._check_not_spent(plan or self.plan)
        return self.masks.masked_state(plan or self.plan, share=share)

    def apply(self, plan: Plan | None = None) -> None:
        """Write base * mask into the model's weights; the model now reflects ``plan`` (undoable)."""
        plan = (plan or self.plan).copy()
        self.apply_state(plan, self.masked_state(plan, share=True))   # (masked_state refuses a spent session)

    def apply_state(self, plan: Plan, state: dict[str, torch.Tensor]) -> None:
        """Apply with the masked state computed elsewhere (a worker); undoable like :meth:`apply`."""
        self._check_not_spent(plan)
        if plan != self.applied_plan:
            self.undo_stack.push(self._edit())
        self._write_state(plan, state)
        self.weights_changed.emit()
        self.history_changed.emit()

    def _write_state(self, plan: Plan, state: dict[str, torch.Tensor]) -> None:
        """The model's tensors become ``state``'s (rebound, not copied in place: the kept weights that the model
        shared stay untouched, and unchanged tensors stay shared)."""
        from ..model.sharing import rebind_state

        self._check_not_spent(plan)
        with torch.no_grad(), self.lock:
            rebind_state(self.module, state)
            self.applied_plan = plan.copy()
            self.version += 1

    def prune_loaded_in_place(self, plan: Plan) -> list[str]:
        """Apply ``plan``, writing the masks of its big one-off layers (element, |w|) into the loaded weights
        themselves instead of into new tensors: one copy of a big model's weights instead of two. For a caller
        that discards the session afterwards (the ``prune`` command on a big model): from then on the loaded
        weights *are* the pruned ones, so applying another plan, resetting or restoring weights is refused.
        Returns the layers masked in place."""
        plan = plan.copy()
        self._check_not_spent(plan)
        # not under the session's lock (ranking may take it: see MaskEngine.invalidate) nor under no_grad (the
        # taylor criterion's scores need gradients)
        state, done = self.masks.masked_state_in_place(plan)
        if done:
            self.pruned_in_place = plan
            self.version += 1
        self.apply_state(plan, state)
        return done

    def _check_not_spent(self, plan: Plan | None) -> None:
        """Refuse to change weights after :meth:`prune_loaded_in_place` (``plan``: None for a new base)."""
        spent = self.pruned_in_place
        if spent is None:
            return
        if plan is None or any(plan.get(n) != spent.get(n) for n in self.masks.in_place):
            raise ExplorerError("The loaded weights were pruned in place to save memory, so the dense weights "
                                "are gone from this session.", "Open the model again to try another plan.")

    def own_module_tensors(self) -> None:
        """Give the model private copies of the tensors it shares with the kept/loaded weights, before code
        trains it in place (the prune and compress flows fine-tune ``session.module`` itself)."""
        from ..model.sharing import unshare

        with torch.no_grad(), self.lock:
            unshare(self.module, [self._original, self._base])

    def set_base(self, state: dict[str, torch.Tensor], label: str) -> None:
        """Take a copy of ``state`` as the new kept weights (masks apply to them from now on); the model's own
        weights change on the next apply. Rankings are rebuilt lazily."""
        state = {k: v.detach().clone() for k, v in state.items()}
        self._set_base(state, label, self.weights.add(state))
        self.weights_changed.emit()

    def _set_base(self, state: dict[str, torch.Tensor], label: str, base_id: int) -> None:
        """New kept weights (after fine-tuning, on reset or restore); rankings are rebuilt lazily."""
        self._check_not_spent(None)
        with self.lock:
            self._base = state
            self._base_id = base_id
            self.weights.use(base_id)
            self._renew_views(base=state)
            self.base_label = label
            self.version += 1

    def nonfinite_layers(self) -> dict[str, int]:
        return self.masks.nonfinite_layers()
