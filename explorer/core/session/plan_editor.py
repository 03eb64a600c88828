"""The plan editor (a part of the session): the plan the user edits, every rule an edit goes through, the undo
stack, pruning by hand, and the plan last exported.

It owns ``plan``, ``saved_plan`` and ``undo_stack``; what it needs of the rest of the session (layers, channel
groups, the dataset, the calibration's refusals, the mask views, the applied plan) it asks through the session's
public methods. Its own events are narrow -- ``changed(names)`` (a new plan; the session forwards it as
``plan_changed``), ``undo_changed`` (what undo/redo can do) and ``saved_changed`` (the 'modified' marker) -- so a
view that shows one of them is not woken by the others.
Pruning by hand (a click on the heatmap prunes or restores one channel, kernel or weight) is an ordinary, undoable
plan entry with the ``manual`` criterion (``prune/manual.py``), recorded in the recipe and replayed exactly.
"""
from __future__ import annotations

from psygnal import Signal

from ..errors import PlanError
from ..prune import manual
from ..prune import plan_rules as rules
from ..prune.granularity import NM, Channel
from ..prune.plan import LayerPlan, Plan
from ..undo import Edit, UndoStack


class PlanEditor:
    changed = Signal(object)          # names of the layers whose plan changed (list), or None for all
    undo_changed = Signal()           # undo/redo availability
    saved_changed = Signal()          # the plan last exported

    def __init__(self, owner):
        self.owner = owner                     # the Session (public methods and events only)
        self.plan = Plan()
        self.saved_plan: Plan | None = Plan()  # the plan last exported (for the 'modified' marker)
        self.undo_stack = UndoStack()

    def clear(self) -> None:
        self.plan, self.saved_plan = Plan(), Plan()
        self.undo_stack.clear()

    # ------------------------------------------------------------------ undo steps
    def edit(self) -> Edit:
        """The current (plan, applied plan): what an undo step returns to."""
        return Edit(self.plan, self.owner.applied_plan)

    def push(self, coalesce: object = None) -> None:
        self.undo_stack.push(self.edit(), coalesce)

    def replace(self, plan: Plan, names=None, coalesce: object = None, record: bool = True) -> None:
        """The plan becomes ``plan`` (an undo step unless ``record`` is False); the session's events fire."""
        if record:
            self.push(coalesce)
        self.plan = plan
        self.changed.emit(names)
        self.undo_changed.emit()

    @property
    def can_undo(self) -> bool:
        return self.undo_stack.can_undo

    @property
    def can_redo(self) -> bool:
        return self.undo_stack.can_redo

    def end_edit(self) -> None:
        """Close a coalesced edit (e.g. on slider release): the next edit is a new undo step."""
        self.undo_stack.end_edit()

    # ------------------------------------------------------------------ the rules
    def check_layer_plan(self, name: str, lp: LayerPlan) -> LayerPlan:
        """Validate one layer's plan: values, that the granularity fits the layer, that the criterion can score it."""
        o = self.owner
        lp = rules.check_layer_plan(name, lp, o.layer(name), lambda: o.channel_group(name), o.dataset)
        o.calibration.check_criterion(name, lp, lambda: o.linked_layers(name))
        return lp

    def linked_plan(self, plan: Plan) -> Plan:
        return rules.linked_plan(plan, self.owner.linked_layers)

    def _check_many(self, names: list[str], proto: LayerPlan) -> LayerPlan:
        """Bad values and a criterion the dataset cannot serve are errors for all layers, not 'does not fit'."""
        proto = proto.validated()
        rules.check_criterion_data(proto, self.owner.dataset)
        for n in names:
            self.owner.layer(n)
        return proto

    # ------------------------------------------------------------------ edits
    def set_layer(self, name: str, sparsity: float | None = None, granularity: str | None = None,
                  criterion: str | None = None, coalesce: object = None) -> list[str]:
        """Change one layer's plan (and its linked layers under channel granularity). Returns changed names."""
        o = self.owner
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
        names = list(o.linked_layers(name)) if channel or isinstance(cur.granularity, Channel) else [name]
        plan = self.plan
        for n in names:
            lp = new
            if n != name and not channel:
                # leaving channel: linked layers fall back to the same granularity if it fits, else element
                lp = new if new.granularity.fits(o.layer(n)) else LayerPlan(new.sparsity, "element", new.criterion)
            plan = plan.with_layer(n, lp)
        if plan.layers == self.plan.layers:
            return []
        plan = plan.replaced(scope="local", target_sparsity=None)   # a hand edit makes the plan per-layer
        self.replace(plan, names, coalesce)
        return names

    def set_uniform(self, names: list[str], sparsity: float, granularity: str = "element",
                    criterion: str = "l1") -> dict[str, str]:
        """Same plan for many layers. Layers the granularity does not fit are left dense; returns why."""
        proto = self._check_many(names, LayerPlan(sparsity, granularity, criterion))
        skipped: dict[str, str] = {}
        changes: dict[str, LayerPlan | None] = {}
        for n in names:
            try:
                changes[n] = self.check_layer_plan(n, proto)
            except PlanError as e:
                skipped[n] = e.message
                changes[n] = None
        rules.refuse_if_none_fit(names, skipped, proto)
        self.set_plan(self.plan.replaced(changes, scope="local", target_sparsity=sparsity))
        return skipped

    def global_layers(self, names: list[str], sparsity: float, granularity: str = "element",
                      criterion: str = "l1") -> tuple[list[str], dict[str, str]]:
        """The layers of ``names`` a global edit can cover, and why the others are left dense; bad values, or no
        layer that fits, are refused. Quick (no score is read): the window asks before it computes the threshold."""
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
        return ok, skipped

    def set_global(self, names: list[str], sparsity: float, granularity: str = "element", criterion: str = "l1",
                   max_layer_sparsity: float = 0.95, per_layer: dict[str, float] | None = None) -> dict[str, str]:
        """One threshold on comparable scores across ``names``; per-layer cap so no layer is emptied. ``per_layer``:
        the layers' sparsities as ``prune.scope.global_sparsities`` gave them for :meth:`global_layers` (computed
        on a snapshot in a worker, for big models); computed here when None."""
        from ..prune.scope import global_sparsities

        ok, skipped = self.global_layers(names, sparsity, granularity, criterion)
        proto = LayerPlan(sparsity, granularity, criterion).validated()
        if per_layer is None:
            per_layer = global_sparsities(self.owner, ok, sparsity, proto.granularity, proto.criterion,
                                          max_layer_sparsity)
        changes: dict[str, LayerPlan | None] = dict.fromkeys(names)
        changes.update({n: LayerPlan(s, proto.granularity, proto.criterion) for n, s in per_layer.items()})
        self.set_plan(self.plan.replaced(changes, scope="global", target_sparsity=sparsity))
        return skipped

    def set_plan(self, plan: Plan, record: bool = True) -> None:
        plan = self.linked_plan(plan.validated(self.owner.layer_names))
        plan = plan.replaced({n: self.check_layer_plan(n, lp) for n, lp in plan.layers.items()})
        self.replace(plan, record=record)

    # ------------------------------------------------------------------ the 'modified' marker
    @property
    def modified(self) -> bool:
        """The plan differs from the last export (or from the empty plan if never exported)."""
        return self.plan != (self.saved_plan or Plan())

    def mark_saved(self, plan: Plan | None = None) -> None:
        """The plan (default: the current one) was just exported: the 'modified' marker clears."""
        self.saved_plan = plan or self.plan
        self.saved_changed.emit()

    # ------------------------------------------------------------------ pruning by hand
    def manual_units(self, name: str, granularity: str = "channel") -> tuple:
        """The units of ``name`` that its plan prunes now, in manual form (channels, (out, in) kernels or full
        weight indices): a hand edit starts from what the heatmap shows as pruned."""
        lp = self.plan.get(name)
        key = manual.recipe_key(granularity)
        if lp.is_dense or lp.granularity.name != granularity:
            return ()
        if lp.is_manual:
            return lp.units
        view = self.owner.layer_mask(name, lp)
        if view.units_for(lp.sparsity) > manual.MAX_UNITS:
            raise PlanError(f"Layer {name} has {view.units_for(lp.sparsity):,} pruned {key} under its plan: too "
                            f"many to edit one by one (at most {manual.MAX_UNITS:,}).",
                            "Use the sparsity slider for this layer, or prune by hand at a coarser granularity.")
        return manual.units_of_mask(view, lp.sparsity)

    def set_manual(self, name: str, units, granularity: str = "channel", coalesce: object = None) -> list[str]:
        """Prune exactly ``units`` of layer ``name`` (channel indices, [out, in] kernels or full weight indices)
        as one undoable plan edit; linked layers get the same channels. Returns the changed layer names."""
        o = self.owner
        lp = self.check_layer_plan(name, LayerPlan(0.0, granularity, "manual", units))
        names = [name]
        plan = self.plan.with_layer(name, lp)
        if lp.granularity.name == "channel":
            group = o.channel_group(name)
            for m in o.linked_layers(name):
                if m != name:
                    rows = manual.linked_rows(group, name, lp.units, m)
                    plan = plan.with_layer(m, self.check_layer_plan(m, LayerPlan(0.0, "channel", "manual", rows)))
                    names.append(m)
        elif self.plan.get(name).granularity.name == "channel":
            for m in o.linked_layers(name):   # leaving channel: linked layers return to dense
                if m != name:
                    plan = plan.with_layer(m, LayerPlan())
                    names.append(m)
        if plan.layers == self.plan.layers:
            return []
        self.replace(plan.replaced(scope="local", target_sparsity=None), names, coalesce)
        return names

    def toggle_manual(self, name: str, index, granularity: str = "channel") -> bool:
        """Prune the unit ``index`` of layer ``name`` if it is kept, restore it if it is pruned (one undo step).
        Returns True when it is now pruned."""
        unit = manual.normalize_units(granularity, [index], f" of layer {name}")[0]
        units = manual.toggled(self.manual_units(name, granularity), unit)
        self.set_manual(name, units, granularity)
        return unit in units
