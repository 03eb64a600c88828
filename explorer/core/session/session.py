"""The session: the state the user edits, made of owned parts, and the events the GUI listens to.

Parts: ``editor`` (plan_editor.py: the plan, its rules, undo, pruning by hand), ``weight_state`` (weights.py: loaded
and kept weights, the applied plan), ``calibration`` (calibration.py) and ``masks`` (the mask views), both bound to
the kept weights and replaced when those change, and ``results`` (results.py: adopting flows' results, measurements,
History). The GUI calls the session's public methods and subscribes to its events; long work runs as a flow on a
``snapshot()`` (``core/flows``), never on the session itself.
"""
from __future__ import annotations

import copy
import threading

import torch
from psygnal import Signal
from torch import nn

from ..errors import ExplorerError, PlanError
from ..history import History
from ..measurements import Measurements
from ..model import data as data_mod
from ..model.layers import LayerInfo, ModelProfile, load_state
from ..model.loading import LoadResult, resolve, resolve_dataset_for
from ..model.metrics import LayerCounts, Totals, param_bytes
from ..prune.calibration import DEFAULT_CALIBRATION_SAMPLES, check_samples
from ..prune.criteria import CRITERIA, DATA_CRITERIA
from ..prune.masks import LayerMask
from ..prune.plan import LayerPlan, Plan
from ..prune.plan_masks import PlanMasks
from ..undo import Edit
from .calibration import Calibration, Structure
from .plan_editor import PlanEditor
from .results import Results
from .weights import LOADED, WeightState

READY_LAYER_PARAMS = 2_000_000   # rankings up to this many weights take well under a second to build


# rankings that stay valid when only the seed, or only the calibration samples, change
_SEEDLESS = frozenset(n for n, c in CRITERIA.items() if not c.needs and n not in ("random", "taylor")) | {"manual"}
_DATALESS = frozenset(n for n in CRITERIA if n not in DATA_CRITERIA) | {"manual"}


class Session:
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
        self.editor = PlanEditor(self)         # the plan, its rules, undo, pruning by hand
        self.results = Results(self)           # adopting flows' results, measurements, History
        # the parts' narrow events, forwarded as the session's broader ones (the window's views subscribe to the
        # part they show -- editor.changed, editor.undo_changed, weight_state.changed, results.history_changed,
        # measurements.changed; the session's events serve scripts that want one place to listen)
        self.weight_state = WeightState(self)  # loaded and kept weights, the applied plan
        self.editor.changed.connect(self.plan_changed.emit)
        self.weight_state.changed.connect(self.weights_changed.emit)
        for sig in (self.editor.undo_changed, self.editor.saved_changed, self.results.history_changed):
            sig.connect(self.history_changed.emit)
        self.selected: str | None = None
        self.masks: PlanMasks | None = None
        self.calibration: Calibration | None = None     # statistics at the kept weights (replaced, never changed)
        self.calibration_samples = DEFAULT_CALIBRATION_SAMPLES
        self._structure: Structure | None = None
        self.lock = threading.RLock()
        self.measurements = Measurements()
        self.history = History()
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
            self.weight_state.load(module)
            self.editor.clear()
            self.measurements.clear()
            self.history = History()
            self._structure = Structure(module, result.profile.names, result.input_shape)
            self.calibration = self._new_calibration()
            cal = self.calibration
            groups_of = (lambda n, r=result: r.groups.of(n))
            self.masks = PlanMasks(result.profile, groups_of, cal.gradient, self.seed,
                                   {n for n, _ in module.named_parameters()}, param_bytes(module),
                                   self.weight_state.original,
                                   statistic=cal.statistic)
            self.selected = self.default_layer()
        self.loaded.emit()
        self.results.history_changed.emit()     # a new History (forwarded as history_changed too)
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
            self.renew_views(profile=r.profile)
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
        return self.weight_state.base[self.profile.weight_key(name)]

    def original_state(self) -> dict[str, torch.Tensor]:
        return self.weight_state.original

    def base_state(self) -> dict[str, torch.Tensor]:
        return self.weight_state.base

    @property
    def applied_plan(self) -> Plan:
        return self.weight_state.applied_plan

    @property
    def base_label(self) -> str:
        return self.weight_state.label

    @property
    def version(self) -> int:
        return self.weight_state.version

    @property
    def pruned_in_place(self) -> Plan | None:
        return self.weight_state.pruned_in_place

    @property
    def weights(self):
        """The store of kept weights (History returns to them)."""
        return self.weight_state.store

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
                            input_shape=tuple(r.input_shape), original=dict(self.original_state()), base=dict(self.base_state()),
                            base_id=self.base_id, plan=(plan or self.plan), applied=self.applied_plan,
                            seed=self.seed, device=self.device, masks=self.masks, calibration=self.calibration,
                            load=r)

    @property
    def groups(self):
        """The channel groups of the loaded model (analysed on first use)."""
        return self.require().groups

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
                self.renew_views(keep=_SEEDLESS)

    # ------------------------------------------------------------------ calibration (see calibration.py)
    def _new_calibration(self) -> Calibration:
        r = self.require()
        return Calibration(r.model.module, r.dataset, r.profile.names, lambda n: r.groups.of(n), self.base_state(),
                           self.base_id, self.seed, self.calibration_samples, self._structure)

    def renew_views(self, profile: ModelProfile | None = None, base: dict | None = None,
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
                self.renew_views(keep=_DATALESS)
            if self.loaded_ok:
                self.editor.changed.emit(None)

    # ------------------------------------------------------------------ plan editing (see plan_editor.py)
    @property
    def plan(self) -> Plan:
        return self.editor.plan

    def check_layer_plan(self, name: str, lp: LayerPlan) -> LayerPlan:
        return self.editor.check_layer_plan(name, lp)

    def set_layer(self, name: str, sparsity: float | None = None, granularity: str | None = None,
                  criterion: str | None = None, coalesce: object = None) -> list[str]:
        return self.editor.set_layer(name, sparsity, granularity, criterion, coalesce)

    def set_uniform(self, names: list[str], sparsity: float, granularity: str = "element",
                    criterion: str = "l1") -> dict[str, str]:
        return self.editor.set_uniform(names, sparsity, granularity, criterion)

    def set_global(self, names: list[str], sparsity: float, granularity: str = "element", criterion: str = "l1",
                   max_layer_sparsity: float = 0.95, per_layer: dict[str, float] | None = None) -> dict[str, str]:
        return self.editor.set_global(names, sparsity, granularity, criterion, max_layer_sparsity, per_layer)

    def set_plan(self, plan: Plan, record: bool = True) -> None:
        self.editor.set_plan(plan, record)

    def linked_plan(self, plan: Plan) -> Plan:
        return self.editor.linked_plan(plan)

    def undo(self) -> bool:
        if self.editor.can_undo:
            self.weight_state.check_not_spent(None)      # a session pruned in place has no way back
        return self._step(self.editor.undo_stack.undo(self.editor.edit()))

    def redo(self) -> bool:
        if self.editor.can_redo:
            self.weight_state.check_not_spent(None)
        return self._step(self.editor.undo_stack.redo(self.editor.edit()))

    def _step(self, edit: Edit | None) -> bool:
        """Go to an earlier (or later) edit: its plan, and its applied plan written into the model if it differs."""
        if edit is None:
            return False
        if edit.applied != self.applied_plan:
            self.weight_state.write(edit.applied, self.masked_state(edit.applied))
            self.weight_state.changed.emit()
        self.editor.replace(edit.plan, record=False)
        return True

    def reset(self) -> None:
        """Back to the dense loaded weights and an empty plan (undoable for the plan)."""
        self.weight_state.check_not_spent(Plan())
        self.editor.push()
        self.editor.plan = Plan()
        self.weight_state.back_to_loaded()
        self.weight_state.write(Plan(), self.masked_state(Plan()))
        self.weight_state.changed.emit()
        self.editor.changed.emit(None)
        self.editor.undo_changed.emit()

    @property
    def pending(self) -> bool:
        """The plan differs from what the model's weights reflect (Apply needed)."""
        return self.plan != self.applied_plan

    @property
    def modified(self) -> bool:
        """Something differs from the last export (or from the loaded model if never exported)."""
        return self.editor.modified or self.base_label != LOADED

    # ------------------------------------------------------------------ masks & counts (see prune.plan_masks)
    def layer_mask(self, name: str, lp: LayerPlan | None = None) -> LayerMask:
        return self.masks.view(name, lp or self.plan.get(name))

    def needs_build(self, name: str, lp: LayerPlan | None = None) -> bool:
        return self.masks.needs_build(name, lp or self.plan.get(name))

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
        self.weight_state.check_not_spent(plan or self.plan)
        return self.masks.masked_state(plan or self.plan, share=share)

    def apply(self, plan: Plan | None = None) -> None:
        """Write base * mask into the model's weights; the model now reflects ``plan`` (undoable)."""
        plan = (plan or self.plan)
        self.apply_state(plan, self.masked_state(plan, share=True))   # (masked_state refuses a spent session)

    def apply_state(self, plan: Plan, state: dict[str, torch.Tensor]) -> None:
        """Apply with the masked state computed elsewhere (a worker); undoable like :meth:`apply`."""
        self.weight_state.check_not_spent(plan)
        if plan != self.applied_plan:
            self.editor.push()
        self.weight_state.write(plan, state)
        self.weight_state.changed.emit()
        self.editor.undo_changed.emit()

    def mark_pruned_in_place(self, plan: Plan, layers: list[str]) -> None:
        """A flow given the loaded weights (``flows.prune.run(..., own_loaded=True)``) pruned ``layers`` of them in
        place under ``plan``: from now on the session refuses what would need the dense weights."""
        if layers:
            self.weight_state.pruned_in_place = plan
            self.masks.in_place.update({n: plan.get(n) for n in layers})

    def set_base(self, state: dict[str, torch.Tensor], label: str) -> None:
        """Take a copy of ``state`` as the new kept weights (masks apply to them from now on); the model's own
        weights change on the next apply. Rankings are rebuilt lazily."""
        self.weight_state.add_base(state, label)
        self.weight_state.changed.emit()

    # ------------------------------------------------------------------ results (see results.py)
    @property
    def base_id(self) -> int:
        """Which kept weights masks apply to now (a WeightStore id): what measurements and History refer to."""
        return self.weight_state.base_id

    def is_fresh(self, m) -> bool:
        """Does a measurement describe the plan the window shows, over the kept weights it has now?"""
        return self.results.is_fresh(m)
