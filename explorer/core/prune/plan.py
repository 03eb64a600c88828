"""The pruning plan: per-layer sparsity, granularity and criterion (layers not listed stay dense).

Edits make plans; Apply writes one into the model's weights. Its JSON form is the recipe (recipe.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import PlanError
from .criteria import Criterion, get_criterion
from .granularity import Granularity, get_granularity

SCOPES = ("local", "global")


@dataclass(frozen=True)
class LayerPlan:
    """One layer's plan. ``granularity`` and ``criterion`` are parsed on construction (names in, objects that
    are also their names out), so the rest of the app never parses strings again."""

    sparsity: float = 0.0
    granularity: Granularity = "element"
    criterion: Criterion = "l1"
    units: tuple | None = None   # the ``manual`` criterion's pruned units (see manual.py); None otherwise

    def __post_init__(self):
        object.__setattr__(self, "granularity", get_granularity(self.granularity))
        object.__setattr__(self, "criterion", get_criterion(self.criterion))
        if self.units is not None:
            from .manual import normalize_units
            object.__setattr__(self, "units", normalize_units(self.granularity, self.units))

    @property
    def is_manual(self) -> bool:
        return self.criterion == "manual"

    def to_dict(self) -> dict:
        d = {"sparsity": self.sparsity, "granularity": self.granularity.name, "criterion": self.criterion.name}
        if self.is_manual:
            from .manual import recipe_key
            d[recipe_key(self.granularity)] = [list(u) if isinstance(u, tuple) else u for u in self.units or ()]
        return d

    def at_sparsity(self, sparsity: float) -> "LayerPlan":
        """This plan at another sparsity (a schedule's step); a manual plan is its chosen units at every step."""
        return self if self.is_manual else LayerPlan(sparsity, self.granularity, self.criterion)

    def validated(self, layer: str = "") -> "LayerPlan":
        where = f" for layer {layer}" if layer else ""
        try:
            s = float(self.sparsity)
        except (TypeError, ValueError):
            raise PlanError(f"Sparsity{where} must be a number, not {self.sparsity!r}.") from None
        if math.isnan(s) or not 0.0 <= s <= 1.0:
            raise PlanError(f"Sparsity{where} is {self.sparsity}, outside [0, 1].",
                            "Sparsity is the fraction of weights removed: 0 keeps all, 1 removes all.")
        if self.is_manual and self.units is None:
            raise PlanError(f"The manual criterion{where} needs the units it prunes.",
                            "Click channel rows of the heatmap (or kernels / weights in Detail view) instead.")
        if self.units is not None and not self.is_manual:
            raise PlanError(f"Only the manual criterion lists pruned units{where} (here: {self.criterion}).")
        return LayerPlan(s, self.granularity, self.criterion, self.units)

    @property
    def is_dense(self) -> bool:
        return self.sparsity == 0.0 and not self.units


class _Layers(dict):
    """A plan's layers: a dict that refuses changes (a plan is a value; edits make new plans)."""

    def _refuse(self, *a, **k):
        raise TypeError("a Plan cannot be changed: make a new one (Plan.with_layer, Plan.replaced)")

    __setitem__ = __delitem__ = pop = popitem = clear = update = setdefault = __ior__ = _refuse

    def __reduce__(self):
        return (_Layers, (dict(self),))


_KEEP = object()


@dataclass(frozen=True, eq=False)
class Plan:
    """Per-layer plan; layers not listed stay dense. Immutable: edits make new plans (no defensive copies)."""

    layers: dict[str, LayerPlan] = field(default_factory=dict)
    scope: str = "local"
    target_sparsity: float | None = None   # what global scope aimed at (for the record)

    def __post_init__(self):
        object.__setattr__(self, "layers", _Layers(self.layers))

    def replaced(self, layers: dict[str, LayerPlan | None] | None = None, scope=_KEEP, target_sparsity=_KEEP) -> "Plan":
        """A new plan: ``layers`` changed (a value of None removes the layer), and scope/target if given."""
        new = dict(self.layers)
        for n, lp in (layers or {}).items():
            if lp is None:
                new.pop(n, None)
            else:
                new[n] = lp
        return Plan(new, self.scope if scope is _KEEP else scope,
                    self.target_sparsity if target_sparsity is _KEEP else target_sparsity)

    def get(self, name: str) -> LayerPlan:
        return self.layers.get(name, LayerPlan())

    def with_layer(self, name: str, lp: LayerPlan) -> "Plan":
        return self.replaced({name: lp})

    def copy(self) -> "Plan":
        """The plan itself: plans are immutable (kept for callers of the mutable plan's days)."""
        return self

    def active(self) -> dict[str, LayerPlan]:
        return {n: p for n, p in self.layers.items() if not p.is_dense}

    def __eq__(self, other) -> bool:
        if not isinstance(other, Plan):
            return NotImplemented
        return self.active() == other.active()

    def validated(self, layer_names: list[str]) -> "Plan":
        known = set(layer_names)
        unknown = [n for n in self.layers if n not in known]
        if unknown:
            raise PlanError(f"The plan names {len(unknown)} layer(s) this model does not have: "
                            + ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "") + ".",
                            "Check that the recipe was written for this model (see `pruning-explorer info`).")
        if self.scope not in SCOPES:
            raise PlanError(f"Unknown scope '{self.scope}'; use local or global.")
        return Plan({n: p.validated(n) for n, p in self.layers.items()}, self.scope, self.target_sparsity)
