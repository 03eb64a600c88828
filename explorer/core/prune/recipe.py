"""The pruning plan (per-layer sparsity, granularity, criterion) and its JSON form, the recipe.

A recipe is what reproduces a pruned model: the model spec plus, for every
layer, the sparsity/granularity/criterion that was applied. Global scope is
resolved into per-layer sparsities before it is written, so replaying a
recipe gives bit-identical masks.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from explorer import __version__
from ..errors import PlanError
from .granularity import get_granularity
from .criteria import get_criterion

RECIPE_FORMAT = "pruning-explorer-recipe"
RECIPE_VERSION = 1
SCOPES = ("local", "global")


@dataclass(frozen=True)
class LayerPlan:
    sparsity: float = 0.0
    granularity: str = "element"
    criterion: str = "l1"

    def validated(self, layer: str = "") -> "LayerPlan":
        where = f" for layer {layer}" if layer else ""
        try:
            s = float(self.sparsity)
        except (TypeError, ValueError):
            raise PlanError(f"Sparsity{where} must be a number, not {self.sparsity!r}.") from None
        if math.isnan(s) or not 0.0 <= s <= 1.0:
            raise PlanError(f"Sparsity{where} is {self.sparsity}, outside [0, 1].",
                            "Sparsity is the fraction of weights removed: 0 keeps all, 1 removes all.")
        g = get_granularity(str(self.granularity)).name
        c = get_criterion(str(self.criterion)).name
        return LayerPlan(s, g, c)

    @property
    def is_dense(self) -> bool:
        return self.sparsity == 0.0


@dataclass
class Plan:
    """Per-layer plan; layers not listed stay dense."""

    layers: dict[str, LayerPlan] = field(default_factory=dict)
    scope: str = "local"
    target_sparsity: float | None = None   # what global scope aimed at (for the record)

    def get(self, name: str) -> LayerPlan:
        return self.layers.get(name, LayerPlan())

    def with_layer(self, name: str, lp: LayerPlan) -> "Plan":
        layers = dict(self.layers)
        layers[name] = lp
        return Plan(layers, self.scope, self.target_sparsity)

    def copy(self) -> "Plan":
        return Plan(dict(self.layers), self.scope, self.target_sparsity)

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


def plan_to_recipe(plan: Plan, model: str, dataset: str | None = None, seed: int = 0, extra: dict | None = None) -> dict:
    d = {
        "format": RECIPE_FORMAT,
        "version": RECIPE_VERSION,
        "tool_version": __version__,
        "model": model,
        "dataset": dataset,
        "scope": plan.scope,
        "target_sparsity": plan.target_sparsity,
        "seed": seed,
        "layers": {n: asdict(p) for n, p in plan.layers.items() if not p.is_dense},
    }
    if extra:
        d.update(extra)
    return d


def recipe_to_plan(d: dict) -> Plan:
    if not isinstance(d, dict):
        raise PlanError("A recipe must be a JSON object.")
    layers = d.get("layers")
    if layers is None:
        raise PlanError("The recipe has no 'layers' entry.", "A recipe maps layer names to sparsity/granularity/criterion.")
    if isinstance(layers, list):  # also accept [{"name":..., ...}]
        try:
            layers = {x["name"]: {k: v for k, v in x.items() if k != "name"} for x in layers}
        except (KeyError, TypeError):
            raise PlanError("Every layer entry of the recipe needs a 'name'.") from None
    if not isinstance(layers, dict):
        raise PlanError("The recipe's 'layers' must be an object mapping layer names to settings.")
    plan_layers = {}
    for name, spec in layers.items():
        if isinstance(spec, (int, float)):
            spec = {"sparsity": spec}
        if not isinstance(spec, dict):
            raise PlanError(f"The recipe entry for layer {name} must be an object, not {spec!r}.")
        bad = set(spec) - {"sparsity", "granularity", "criterion", "params", "nonzero", "macs"}
        if bad:
            raise PlanError(f"The recipe entry for layer {name} has unknown key(s): {', '.join(sorted(bad))}.")
        lp = LayerPlan(spec.get("sparsity", 0.0), spec.get("granularity", "element"), spec.get("criterion", "l1"))
        plan_layers[name] = lp.validated(name)
    scope = d.get("scope", "local") or "local"
    if scope not in SCOPES:
        raise PlanError(f"Unknown scope '{scope}' in the recipe; use local or global.")
    return Plan(plan_layers, scope, d.get("target_sparsity"))


def read_recipe(path: str | Path) -> tuple[Plan, dict]:
    from ..deploy.export import read_json

    d = read_json(path, "recipe", "A recipe is the recipe.json the app exports.")
    return recipe_to_plan(d), d
