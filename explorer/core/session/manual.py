"""Pruning by hand (a part of :class:`Session`): a click on the heatmap prunes or restores one channel, kernel or
weight. The result is an ordinary, undoable plan entry with the ``manual`` criterion (see ``prune/manual.py``),
recorded in the recipe and replayed exactly by ``prune --recipe``."""
from __future__ import annotations

from ..errors import PlanError
from ..prune import manual
from ..prune.plan import LayerPlan


class SessionManual:
    """Mixed into :class:`Session`; uses its plan, layers, channel groups and plan editing."""

    def manual_units(self, name: str, granularity: str = "channel") -> tuple:
        """The units of ``name`` that its plan prunes now, in manual form (channels, (out, in) kernels or full
        weight indices): a hand edit starts from what the heatmap shows as pruned."""
        lp = self.plan.get(name)
        key = manual.recipe_key(granularity)
        if lp.is_dense or lp.granularity.name != granularity:
            return ()
        if lp.is_manual:
            return lp.units
        view = self.layer_mask(name, lp)
        if view.units_for(lp.sparsity) > manual.MAX_UNITS:
            raise PlanError(f"Layer {name} has {view.units_for(lp.sparsity):,} pruned {key} under its plan: too "
                            f"many to edit one by one (at most {manual.MAX_UNITS:,}).",
                            "Use the sparsity slider for this layer, or prune by hand at a coarser granularity.")
        return manual.units_of_mask(view, lp.sparsity)

    def set_manual(self, name: str, units, granularity: str = "channel", coalesce: object = None) -> list[str]:
        """Prune exactly ``units`` of layer ``name`` (channel indices, [out, in] kernels or full weight indices)
        as one undoable plan edit; linked layers get the same channels. Returns the changed layer names."""
        lp = self.check_layer_plan(name, LayerPlan(0.0, granularity, "manual", units))
        names = [name]
        plan = self.plan.with_layer(name, lp)
        if lp.granularity.name == "channel":
            group = self.channel_group(name)
            for m in self.linked_layers(name):
                if m != name:
                    rows = manual.linked_rows(group, name, lp.units, m)
                    plan = plan.with_layer(m, self.check_layer_plan(m, LayerPlan(0.0, "channel", "manual", rows)))
                    names.append(m)
        elif self.plan.get(name).granularity.name == "channel":
            for m in self.linked_layers(name):   # leaving channel: linked layers return to dense
                if m != name:
                    plan = plan.with_layer(m, LayerPlan())
                    names.append(m)
        if plan.layers == self.plan.layers:
            return []
        plan.scope, plan.target_sparsity = "local", None
        self._replace_plan(plan, names, coalesce)
        return names

    def toggle_manual(self, name: str, index, granularity: str = "channel") -> bool:
        """Prune the unit ``index`` of layer ``name`` if it is kept, restore it if it is pruned (one undo step).
        ``index``: a channel number, an (out, in) kernel or a full weight index. Returns True when it is now
        pruned."""
        unit = manual.normalize_units(granularity, [index], f" of layer {name}")[0]
        units = manual.toggled(self.manual_units(name, granularity), unit)
        self.set_manual(name, units, granularity)
        return unit in units
