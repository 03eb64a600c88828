"""The session: the one object that holds model + dataset + plan + masks + history.

State changes go through the session; the GUI subscribes to its psygnal
events and redraws. The original weights are never lost: the model's
prunable weights are always ``base * mask``, with ``base`` a kept copy
(the loaded weights, or the last fine-tuned ones) and ``original`` the
weights as loaded, so reset and undo are exact.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
from psygnal import Signal
from torch import nn

from .model import data as data_mod
from .model import zoo
from .errors import ExplorerError, PlanError, ShapeMismatchError
from .prune.granularity import NM, Channel, get_granularity
from .prune.groups import ChannelGroups, channel_groups
from .model.layers import LayerInfo, ModelProfile, profile_model
from .prune.masks import MaskEngine, LayerMask
from .model.metrics import LayerCounts, Totals, param_bytes, totals
from .prune.recipe import LayerPlan, Plan

UNDO_LIMIT = 200


@dataclass
class HistoryEntry:
    """A state the user has been through, with what was measured there (the Pareto view's points)."""

    id: int
    label: str
    plan: Plan
    base: dict            # the kept weights the plan applies to (shared between entries, never mutated)
    base_label: str
    sparsity: float
    compression_ratio: float
    nonzero_macs: int
    accuracy: float | None = None
    latency_ms: float | None = None


@dataclass
class LoadResult:
    """Everything :meth:`Session.resolve` built; applied atomically by :meth:`Session.apply_load`."""

    model: zoo.LoadedModel
    dataset: data_mod.DatasetBundle
    profile: ModelProfile
    groups: ChannelGroups
    input_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        shape = tuple(int(x) for x in str(text).replace("x", ",").split(",") if x.strip())
    except ValueError:
        raise ExplorerError(f"Input shape '{text}' is not a list of integers; write it as C,H,W (e.g. 3,224,224).") from None
    if not shape or any(s <= 0 for s in shape):
        raise ExplorerError(f"Input shape '{text}' must be positive integers, e.g. 3,224,224.")
    return shape


def resolve(model: str | None = None, dataset: str | None = None, weights: str | None = None,
            arch: str | None = None, trust: bool = False, input_shape: tuple[int, ...] | None = None) -> LoadResult:
    """Load a model and a dataset and check that they fit. Pure and possibly slow (run it in a worker)."""
    lm = zoo.load_model(model, weights=weights, arch=arch, trust=trust)
    if lm.input_shape is None and not dataset and not input_shape:
        # a TorchScript/pickled model does not say what it eats: try the built-in digits, else ask
        try:
            return resolve(model, "digits", weights, arch, trust, None)
        except ShapeMismatchError:
            raise ShapeMismatchError(
                f"The input shape of {lm.name} is unknown (it does not take the built-in 1x8x8 digits).",
                "Give it with --input-shape C,H,W (e.g. 3,224,224; in the window: the Input shape field), "
                "or choose a dataset.") from None
    ds_spec = dataset or lm.default_dataset
    shape = tuple(input_shape) if input_shape else None
    notes = list(lm.notes)
    if ds_spec.split(":")[0] == "synthetic":
        shape = shape or lm.input_shape
        if shape is None:
            raise ShapeMismatchError(f"The input shape of {lm.name} is unknown.",
                                     "Give it with --input-shape C,H,W (e.g. 3,224,224), or choose a dataset.")
        ds = data_mod.load_dataset(ds_spec, input_shape=shape)
    else:
        ds = data_mod.load_dataset(ds_spec, input_shape=shape or lm.input_shape)
        if shape and tuple(shape) != tuple(ds.input_shape):
            notes.append(f"dataset gives {ds.input_shape}, --input-shape said {shape}: using the dataset's")
        shape = ds.input_shape
    if lm.input_shape and tuple(lm.input_shape) != tuple(shape):
        notes.append(f"{lm.name} is usually fed {lm.input_shape}; running it at {tuple(shape)}")
    try:
        example = ds.example_input(1)
    except ExplorerError:
        example = torch.zeros(1, *shape)
    try:
        profile = profile_model(lm.module, shape, example=example)
    except ShapeMismatchError as e:
        raise ShapeMismatchError(
            f"{lm.name} does not fit the dataset {ds.spec} (inputs {tuple(shape)}): {e.message}",
            "Choose a dataset of the model's input shape"
            + (f" {lm.input_shape}" if lm.input_shape else "") + ", or another model.") from None
    if not profile.layers:
        raise ExplorerError(f"{lm.name} has no prunable layers (Conv1d/Conv2d/Conv3d/Linear with a weight).",
                            "Nothing to prune here; open a network with convolutional or linear layers.")
    out_dim = profile.output_shape[0] if profile.output_shape else None
    if ds.has_labels and ds.num_classes and out_dim is not None and len(profile.output_shape) == 1:
        if out_dim < ds.num_classes:
            raise ShapeMismatchError(
                f"{lm.name} outputs {out_dim} classes but {ds.spec} has {ds.num_classes}.",
                "Choose a model trained for this dataset.")
        if out_dim != ds.num_classes:
            notes.append(f"model outputs {out_dim} classes, dataset has {ds.num_classes}: accuracy uses the first "
                         f"{ds.num_classes}")
    groups = channel_groups(lm.module, profile, example)
    if groups.note:
        notes.append(groups.note)
    nonfinite = [n for n, p in lm.module.named_parameters() if p.is_floating_point() and not torch.isfinite(p).all()]
    if nonfinite:
        notes.append(f"non-finite weights (NaN/inf) in {len(nonfinite)} tensor(s): {', '.join(nonfinite[:3])}"
                     " -- they are never pruned silently")
    if profile.skipped:
        notes.append(f"{len(profile.skipped)} layer(s) not used by the forward pass are not listed: "
                     + ", ".join(profile.skipped[:3]))
    return LoadResult(model=lm, dataset=ds, profile=profile, groups=groups, input_shape=tuple(shape), notes=notes)


class Session:
    """Model + dataset + plan + masks + history, with events for the GUI."""

    loaded = Signal()                 # a new model/dataset is in place
    plan_changed = Signal(object)     # names of layers whose plan changed (list), or None for all
    weights_changed = Signal()        # the module's weights changed (apply, fine-tune, reset)
    selection_changed = Signal(str)
    history_changed = Signal()        # undo/redo availability, snapshots
    metrics_changed = Signal()        # evaluation/latency results updated

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.result: LoadResult | None = None
        self.plan = Plan()
        self.applied_plan = Plan()
        self.selected: str | None = None
        self._undo: list[Plan] = []
        self._redo: list[Plan] = []
        self._coalesce: object = None
        self._original: dict[str, torch.Tensor] = {}
        self._base: dict[str, torch.Tensor] = {}
        self._dense_nonzero: dict[str, int] = {}
        self._grads: dict[str, torch.Tensor] | None = None
        self.engine: MaskEngine | None = None
        self.lock = threading.RLock()
        self.results: dict[str, object] = {}   # evaluation/latency results by key (filled by jobs)
        self.saved_plan: Plan | None = None    # the plan last exported (for the 'modified' marker)
        self.base_label = "loaded weights"
        self.history: list[HistoryEntry] = []
        self.version = 0                       # bumps whenever the model's weights change
        self._other_nz: int | None = None
        self._param_bytes = 0

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
            self._original = {k: v.detach().clone() for k, v in module.state_dict().items()}
            self._base = self._original   # never mutated in place: masks produce new tensors
            self._count_base()
            self._param_bytes = param_bytes(module)
            self.plan, self.applied_plan, self.saved_plan = Plan(), Plan(), Plan()
            self._undo.clear()
            self._redo.clear()
            self._coalesce = None
            self._grads = None
            self.results = {}
            self.history = []
            self.version += 1
            self.base_label = "loaded weights"
            self.engine = MaskEngine({l.name: l for l in result.profile.layers}, weight=self.base_weight,
                                     channel_group=self.channel_group, gradient=self._gradient, seed=self.seed)
            self.selected = self.default_layer()
        self.loaded.emit()
        self.history_changed.emit()

    def set_dataset(self, spec: str) -> None:
        """Switch dataset for the loaded model (keeps plan and weights); errors leave everything as is."""
        self.apply_dataset(resolve_dataset_for(self.require(), spec))

    def apply_dataset(self, new: LoadResult) -> None:
        r = self.require()
        with self.lock:
            r.dataset, r.input_shape = new.dataset, new.input_shape
            r.profile, r.groups, r.notes = new.profile, new.groups, new.notes
            self._grads = None
            self.results = {}
            if self.engine:
                self.engine.layers = {l.name: l for l in r.profile.layers}
                self.engine.invalidate()
        self.loaded.emit()

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
        ls = self.require().profile.layers
        return max(ls, key=lambda l: l.params).name if ls else None

    def select(self, name: str) -> None:
        self.layer(name)
        if name != self.selected:
            self.selected = name
            self.selection_changed.emit(name)

    def base_weight(self, name: str) -> torch.Tensor:
        """The kept (unmasked) weight of a prunable layer that masks apply to."""
        return self._base[f"{name}.weight"]

    def original_state(self) -> dict[str, torch.Tensor]:
        return self._original

    def base_state(self) -> dict[str, torch.Tensor]:
        return self._base

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
            if self.engine:
                self.engine.seed = seed
                self.engine.invalidate(criterion="random")
                self.engine.invalidate(criterion="taylor")
            self._grads = None

    def _gradient(self, name: str) -> torch.Tensor | None:
        if self._grads is None:
            self._grads = compute_gradients(self)
        return self._grads.get(name) if self._grads else None

    # ------------------------------------------------------------------ plan editing
    def _push_undo(self, coalesce: object = None) -> None:
        if coalesce is not None and coalesce == self._coalesce:
            return
        self._undo.append(self.plan.copy())
        del self._undo[:-UNDO_LIMIT]
        self._redo.clear()
        self._coalesce = coalesce

    def end_edit(self) -> None:
        """Close a coalesced edit (e.g. on slider release): the next edit is a new undo step."""
        self._coalesce = None

    def check_layer_plan(self, name: str, lp: LayerPlan) -> LayerPlan:
        """Validate one layer's plan: values, and that the granularity fits the layer."""
        lp = lp.validated(name)
        layer = self.layer(name)
        gran = get_granularity(lp.granularity)
        gran.check(layer)
        if isinstance(gran, Channel):
            g = self.channel_group(name)
            if g.blocked:
                raise PlanError(f"'channel' granularity does not fit layer {name}: {g.blocked}.",
                                "Its output channels must all stay; use element, n:m, vector or kernel for it.")
        if lp.criterion == "taylor" and not self.dataset.has_labels:
            raise PlanError("The taylor criterion needs gradients, which need a dataset with labels.",
                            f"{self.dataset.spec} has no labels; use l1, l2 or random.")
        return lp

    def set_layer(self, name: str, sparsity: float | None = None, granularity: str | None = None,
                  criterion: str | None = None, coalesce: object = None) -> list[str]:
        """Change one layer's plan (and its linked layers under channel granularity). Returns changed names."""
        cur = self.plan.get(name)
        new = LayerPlan(cur.sparsity if sparsity is None else sparsity,
                        cur.granularity if granularity is None else granularity,
                        cur.criterion if criterion is None else criterion)
        if granularity is not None and sparsity is None:
            g = get_granularity(granularity)
            if isinstance(g, NM) and new.sparsity == 0.0:
                new = LayerPlan(g.pattern_sparsity, new.granularity, new.criterion)
        new = self.check_layer_plan(name, new)
        names = [name]
        old_gran = get_granularity(cur.granularity)
        if isinstance(get_granularity(new.granularity), Channel) or isinstance(old_gran, Channel):
            names = list(self.linked_layers(name))
        plan = self.plan
        for n in names:
            lp = new
            if n != name and not isinstance(get_granularity(new.granularity), Channel):
                # leaving channel: linked layers fall back to the same granularity if it fits, else element
                g = get_granularity(new.granularity)
                lp = new if g.fits(self.layer(n)) else LayerPlan(new.sparsity, "element", new.criterion)
            plan = plan.with_layer(n, lp)
        if plan.layers == self.plan.layers:
            return []
        self._push_undo(coalesce)
        plan.scope, plan.target_sparsity = "local", None   # a hand edit makes the plan per-layer
        self.plan = plan
        self.plan_changed.emit(names)
        self.history_changed.emit()
        return names

    def set_uniform(self, names: list[str], sparsity: float, granularity: str = "element",
                    criterion: str = "l1") -> dict[str, str]:
        """Same plan for many layers. Layers the granularity does not fit are left dense; returns why."""
        LayerPlan(sparsity, granularity, criterion).validated()   # bad values are errors, not "does not fit"
        skipped: dict[str, str] = {}
        plan = self.plan.copy()
        plan.scope, plan.target_sparsity = "local", sparsity
        for n in names:
            lp = LayerPlan(sparsity, granularity, criterion)
            try:
                plan.layers[n] = self.check_layer_plan(n, lp)
            except PlanError as e:
                skipped[n] = e.message
                plan.layers.pop(n, None)
        self.set_plan(plan)
        return skipped

    def set_global(self, names: list[str], sparsity: float, granularity: str = "element", criterion: str = "l1",
                   max_layer_sparsity: float = 0.95) -> dict[str, str]:
        """One threshold on comparable scores across ``names``; per-layer cap so no layer is emptied."""
        from .prune.scope import global_sparsities

        LayerPlan(sparsity, granularity, criterion).validated()
        skipped: dict[str, str] = {}
        ok = []
        for n in names:
            try:
                self.check_layer_plan(n, LayerPlan(0.0, granularity, criterion))
                ok.append(n)
            except PlanError as e:
                skipped[n] = e.message
        per_layer = global_sparsities(self, ok, sparsity, granularity, criterion, max_layer_sparsity)
        plan = self.plan.copy()
        for n in names:
            plan.layers.pop(n, None)
        for n, s in per_layer.items():
            plan.layers[n] = LayerPlan(s, get_granularity(granularity).name, criterion)
        plan.scope, plan.target_sparsity = "global", sparsity
        self.set_plan(plan)
        return skipped

    def set_plan(self, plan: Plan, record: bool = True) -> None:
        plan = self.linked_plan(plan.validated(self.layer_names))
        for n, lp in plan.layers.items():
            self.check_layer_plan(n, lp)
        if record:
            self._push_undo()
        self.plan = plan
        self.plan_changed.emit(None)
        self.history_changed.emit()

    def linked_plan(self, plan: Plan) -> Plan:
        """Channel plans cover whole channel groups: a linked layer without the same channel plan gets it
        (the group's most pruned member wins), so masks, counts and compaction agree."""
        out = plan.copy()
        for n, lp in plan.layers.items():
            if lp.granularity != "channel" or lp.is_dense:
                continue
            for m in self.linked_layers(n):
                cur = out.layers.get(m)
                if cur is None or cur.granularity != "channel" or cur.sparsity < lp.sparsity:
                    out.layers[m] = lp
        return out

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> bool:
        return self._step(self._undo, self._redo)

    def redo(self) -> bool:
        return self._step(self._redo, self._undo)

    def _step(self, source: list[Plan], target: list[Plan]) -> bool:
        if not source:
            return False
        target.append(self.plan.copy())
        self.plan = source.pop()
        self._coalesce = None
        self.plan_changed.emit(None)
        self.history_changed.emit()
        return True

    def reset(self) -> None:
        """Back to the dense loaded weights and an empty plan (undoable for the plan)."""
        self._push_undo()
        self.plan = Plan()
        if self._base is not self._original and self.base_label != "loaded weights":
            self.set_base(self._original, label="loaded weights", copy=False)
        self.apply()
        self.plan_changed.emit(None)
        self.history_changed.emit()

    @property
    def pending(self) -> bool:
        """The plan differs from what the model's weights reflect (Apply needed)."""
        return self.plan != self.applied_plan

    @property
    def modified(self) -> bool:
        """Something differs from the last export (or from the loaded model if never exported)."""
        return self.plan != (self.saved_plan or Plan()) or self.base_label != "loaded weights"

    # ------------------------------------------------------------------ masks & counts
    def layer_mask(self, name: str, lp: LayerPlan | None = None) -> LayerMask:
        lp = lp or self.plan.get(name)
        return self.engine.view(name, lp.criterion, lp.granularity)

    def needs_build(self, name: str, lp: LayerPlan | None = None) -> bool:
        lp = lp or self.plan.get(name)
        return not self.engine.is_cached(name, lp.criterion, lp.granularity)

    def uncached(self, plan: Plan | None = None, extra: list[str] | None = None) -> list[str]:
        """Layers whose ranking for the plan is not built yet (the GUI builds big ones in a worker)."""
        plan = plan or self.plan
        names = [n for n, lp in plan.active().items() if self.needs_build(n, lp)]
        for n in extra or []:
            if n not in names and self.needs_build(n, plan.get(n)):
                names.append(n)
        return names

    def build_views(self, names: list[str], plan: Plan | None = None, progress=None, cancel=None) -> None:
        """Build rankings for ``names`` (a job: slow on huge layers)."""
        from .jobs import ProgressMeter

        plan = plan or self.plan
        layers = {l.name: l for l in self.layers}
        total = sum(layers[n].params for n in names) or 1
        meter = ProgressMeter(progress, total, "indexing weights")
        for n in names:
            if cancel is not None:
                cancel.check()
            meter.note(f"indexing {n} ({layers[n].params:,} weights)")
            self.layer_mask(n, plan.get(n))
            meter.step(layers[n].params)

    def layer_counts(self, name: str, lp: LayerPlan | None = None) -> LayerCounts:
        lp = lp or self.plan.get(name)
        layer = self.layer(name)
        if lp.is_dense:
            nz = self._dense_nonzero[name]
            return LayerCounts(layer.params, nz, layer.matrix_shape[0], layer.macs, nz * layer.uses)
        return self.layer_mask(name, lp).counts(lp.sparsity)

    def totals(self, plan: Plan | None = None) -> Totals:
        plan = plan or self.plan
        counts = [self.layer_counts(l.name, plan.get(l.name)) for l in self.layers]
        prof = self.profile
        return totals(counts, prof.total_params, self._param_bytes, prof.total_macs,
                      other_nonzero=self._other_nonzero(plan))

    def _other_nonzero(self, plan: Plan) -> int:
        """Nonzero non-prunable parameters (biases, BatchNorm), with channel-pruned entries zeroed."""
        if self._other_nz is None:
            prunable = {f"{n}.weight" for n in self.layer_names}
            params = {n for n, _ in self.module.named_parameters()}
            self._other_nz = sum(int(torch.count_nonzero(v)) for k, v in self._base.items()
                                 if k in params and k not in prunable)
        removed = 0
        seen = set()
        for name, lp in plan.active().items():
            if lp.granularity != "channel":
                continue
            view = self.layer_mask(name, lp)
            if view.group is None or view.group.id in seen:
                continue
            seen.add(view.group.id)
            keep = view.ranking.keep(view.units_for(lp.sparsity))
            for pname, idx in view.group.aux:
                base = self._base.get(pname)
                if base is not None:
                    removed += int(torch.count_nonzero(base[torch.as_tensor(idx)][~keep]))
        return self._other_nz - removed

    def masks_for_state(self, plan: Plan, state: dict[str, torch.Tensor]):
        """Masks of ``plan`` ranked on other weights (e.g. mid-fine-tuning); a throwaway engine, thread-safe."""
        engine = MaskEngine({l.name: l for l in self.layers}, weight=lambda n: state[f"{n}.weight"],
                            channel_group=self.channel_group, gradient=self._gradient, seed=self.seed)
        return self.materialize(plan, engine=engine, base=state)

    def materialize(self, plan: Plan | None = None, engine: MaskEngine | None = None,
                    base: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Full masks of a plan: ({layer: bool weight mask}, {aux param: bool mask}) for pruned layers only."""
        plan = plan or self.plan
        engine = engine or self.engine
        base = base if base is not None else self._base
        masks: dict[str, torch.Tensor] = {}
        aux: dict[str, torch.Tensor] = {}
        for name, lp in plan.active().items():
            view = engine.view(name, lp.criterion, lp.granularity)
            masks[name] = view.element_mask(lp.sparsity)
            if isinstance(view.granularity, Channel) and view.group is not None:
                # zero the BatchNorm / bias entries of pruned channels so the channel output is exactly 0
                keep_shared = view.ranking.keep(view.units_for(lp.sparsity))
                for pname, idx in view.group.aux:
                    t = base.get(pname)
                    if t is None:
                        continue
                    m = aux.get(pname, torch.ones(t.shape[0], dtype=torch.bool))
                    m[torch.as_tensor(idx)] &= keep_shared
                    aux[pname] = m
        return masks, aux

    def masked_state(self, plan: Plan | None = None) -> dict[str, torch.Tensor]:
        """base * mask for every parameter/buffer: what the pruned model's state_dict is."""
        return _masked(self._base, *self.materialize(plan))

    def apply(self, plan: Plan | None = None) -> None:
        """Write base * mask into the model's weights; the model now reflects ``plan``."""
        plan = (plan or self.plan).copy()
        self.apply_state(plan, self.masked_state(plan))

    def apply_state(self, plan: Plan, state: dict[str, torch.Tensor]) -> None:
        """Write a masked state computed elsewhere (a worker) into the model."""
        with torch.no_grad(), self.lock:
            own = self.module.state_dict()
            for k, v in state.items():
                if k in own:
                    own[k].copy_(v)
            self.applied_plan = plan
            self.version += 1
        self.weights_changed.emit()

    def _count_base(self) -> None:
        """Nonzero counts of the kept weights (dense layers' counts; the rest lazily)."""
        self._dense_nonzero = {l.name: int(torch.count_nonzero(self.base_weight(l.name))) for l in self.layers}
        self._other_nz = None

    def set_base(self, state: dict[str, torch.Tensor], label: str, copy: bool = True) -> None:
        """New kept weights (after fine-tuning, or the originals on reset); rankings are rebuilt lazily."""
        with self.lock:
            self._base = {k: v.detach().clone() for k, v in state.items()} if copy else state
            self._count_base()
            self._grads = None
            self.base_label = label
            self.version += 1
            if self.engine:
                self.engine.invalidate()
        self.weights_changed.emit()

    # ------------------------------------------------------------------ history (Pareto view)
    def record(self, label: str, accuracy: float | None = None, latency_ms: float | None = None) -> HistoryEntry:
        """Remember the applied state with what was measured there; an existing entry for the same
        state is updated instead of duplicated."""
        t = self.totals(self.applied_plan)
        for e in self.history:
            if e.plan == self.applied_plan and e.base is self._base:
                if accuracy is not None:
                    e.accuracy = accuracy
                if latency_ms is not None:
                    e.latency_ms = latency_ms
                self.history_changed.emit()
                return e
        e = HistoryEntry(id=len(self.history) + 1, label=label, plan=self.applied_plan.copy(), base=self._base,
                         base_label=self.base_label, sparsity=t.sparsity, compression_ratio=t.compression_ratio,
                         nonzero_macs=t.nonzero_macs, accuracy=accuracy, latency_ms=latency_ms)
        self.history.append(e)
        self.history_changed.emit()
        return e

    def entry_state(self, entry: HistoryEntry) -> dict[str, torch.Tensor]:
        """The model state of a remembered entry (its kept weights under its plan); thread-safe, may be slow."""
        if entry.base is self._base:
            return self.masked_state(entry.plan)
        masks = self.masks_for_state(entry.plan, entry.base)
        return _masked(entry.base, *masks)

    def restore(self, entry: HistoryEntry, state: dict[str, torch.Tensor] | None = None) -> None:
        """Return to a remembered state (its kept weights and plan); undoable for the plan. ``state`` is
        :meth:`entry_state`, when a worker computed it already."""
        if state is None:
            state = self.entry_state(entry)
        if entry.base is not self._base:
            self.set_base(entry.base, entry.base_label, copy=False)
        self._push_undo()
        self.plan = entry.plan.copy()
        self.apply_state(self.plan.copy(), state)
        self.plan_changed.emit(None)
        self.history_changed.emit()

    def adopt(self, state: dict[str, torch.Tensor], plan: Plan, label: str) -> None:
        """Take weights that already realise ``plan`` (fine-tuned with masks enforced) as the new kept
        weights and the model's state, without re-masking; rankings are rebuilt lazily (in a worker
        for big layers)."""
        self.set_base(state, label)
        with torch.no_grad(), self.lock:
            own = self.module.state_dict()
            for k, v in state.items():
                if k in own:
                    own[k].copy_(v)
            self.applied_plan = plan.copy()
            self.version += 1
        self.weights_changed.emit()

    def nonfinite_layers(self) -> dict[str, int]:
        out = {}
        for l in self.layers:
            w = self.base_weight(l.name)
            n = int((~torch.isfinite(w)).sum())
            if n:
                out[l.name] = n
        return out


def _masked(base: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
            aux: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of ``base`` with masked weights and channel entries set to +0.0 (never -0.0)."""
    state = {k: v.clone() for k, v in base.items()}
    for name, m in masks.items():
        key = f"{name}.weight"
        state[key] = torch.where(m, state[key], torch.zeros((), dtype=state[key].dtype))
    for pname, m in aux.items():
        shape = (-1,) + (1,) * (state[pname].dim() - 1)
        state[pname] = torch.where(m.reshape(shape), state[pname], torch.zeros((), dtype=state[pname].dtype))
    return state


def resolve_dataset_for(r: LoadResult, spec: str) -> LoadResult:
    """Re-resolve only the dataset for an already-loaded model (keeps the module object)."""
    lm = r.model
    ds = data_mod.load_dataset(spec, input_shape=r.input_shape if spec.split(":")[0] in ("synthetic", "imagefolder")
                               else lm.input_shape)
    shape = ds.input_shape
    try:
        example = ds.example_input(1)
    except ExplorerError:
        example = torch.zeros(1, *shape)
    try:
        profile = profile_model(lm.module, shape, example=example)
    except ShapeMismatchError as e:
        raise ShapeMismatchError(f"{lm.name} does not fit the dataset {ds.spec} (inputs {tuple(shape)}): {e.message}",
                                 "Choose a dataset of the model's input shape.") from None
    if [l.name for l in profile.layers] != [l.name for l in r.profile.layers]:
        raise ShapeMismatchError(f"{lm.name} uses different layers on {ds.spec}; reload the model instead.")
    notes = [n for n in r.notes if not n.startswith("model outputs")]
    return LoadResult(model=lm, dataset=ds, profile=profile, groups=channel_groups(lm.module, profile, example),
                      input_shape=tuple(shape), notes=notes)


def compute_gradients(session: Session, batches: int = 4, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """dL/dW of every prunable weight, accumulated over a few training batches (for the taylor criterion)."""
    ds = session.dataset
    if not ds.has_labels:
        return {}
    import copy

    with session.lock:
        module = copy.deepcopy(session.module)
    # gradients at the kept (unmasked) weights: the same plan always gives the same taylor masks,
    # whatever was applied before
    module.load_state_dict(session.base_state())
    module.eval()
    names = session.layer_names
    mods = dict(module.named_modules())
    params = [mods[n].weight for n in names]
    grads = [torch.zeros_like(p) for p in params]
    loss_fn = nn.CrossEntropyLoss()
    for i, (x, y) in enumerate(ds.batches("train", batch_size=batch_size, shuffle=True, seed=session.seed)):
        if i >= batches:
            break
        out = module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        loss = loss_fn(out[:, :ds.num_classes] if ds.num_classes and out.shape[1] > ds.num_classes else out, y)
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        for acc, g in zip(grads, gs):
            if g is not None:
                acc += g.detach()
    return dict(zip(names, grads))
