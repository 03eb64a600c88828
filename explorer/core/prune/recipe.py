"""The pruning plan (per-layer sparsity, granularity, criterion) and its JSON form, the recipe.

A recipe is what reproduces a pruned model: the model spec plus, for every
layer, the sparsity/granularity/criterion that was applied. Global scope is
resolved into per-layer sparsities before it is written, so replaying a
recipe gives bit-identical masks.
"""
from __future__ import annotations

from pathlib import Path

from explorer import __version__

from ..checks import number
from ..errors import PlanError
from .manual import RECIPE_KEYS
from .plan import SCOPES, LayerPlan, Plan

MANUAL_KEYS = tuple(RECIPE_KEYS.values())

RECIPE_FORMAT = "pruning-explorer-recipe"
RECIPE_VERSION = 1


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
        "layers": {n: p.to_dict() for n, p in plan.layers.items() if not p.is_dense},
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
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            spec = {"sparsity": spec}
        if not isinstance(spec, dict):
            raise PlanError(f"The recipe entry for layer {name} must be an object, not {spec!r}.")
        bad = set(spec) - {"sparsity", "granularity", "criterion", "params", "nonzero", "macs", *MANUAL_KEYS}
        if bad:
            raise PlanError(f"The recipe entry for layer {name} has unknown key(s): {', '.join(sorted(bad))}.")
        sparsity = number(spec.get("sparsity", 0.0), f"The sparsity of layer {name}", 0.0, 1.0)
        lp = LayerPlan(sparsity, spec.get("granularity", "element"), spec.get("criterion", "l1"),
                       manual_units(name, spec))
        plan_layers[name] = lp.validated(name)
    scope = d.get("scope", "local") or "local"
    if scope not in SCOPES:
        raise PlanError(f"Unknown scope '{scope}' in the recipe; use local or global.")
    target = d.get("target_sparsity")
    if target is not None:
        target = number(target, "The recipe's target_sparsity", 0.0, 1.0)
    if d.get("seed") is not None:
        number(d["seed"], "The recipe's seed", 0, 2**31 - 1, integer=True)
    return Plan(plan_layers, scope, target)


def manual_units(name: str, spec: dict):
    """A manual entry's units (its ``channels``, ``kernels`` or ``weights`` list), checked; None otherwise."""
    from .manual import normalize_units, recipe_key

    given = [k for k in MANUAL_KEYS if k in spec]
    if str(spec.get("criterion", "l1")).strip().lower() != "manual":
        if given:
            raise PlanError(f"The recipe entry for layer {name} lists '{given[0]}', which only the manual "
                            "criterion takes.")
        return None
    gran = str(spec.get("granularity", "element"))
    key = recipe_key(gran)
    if given != [key]:
        raise PlanError(f"The manual recipe entry for layer {name} ({gran} granularity) needs a '{key}' list "
                        f"and no other" + (f" (it has: {', '.join(given)})." if given else "."),
                        'For example {"granularity": "channel", "criterion": "manual", "channels": [0, 5, 9]}.')
    return normalize_units(gran, spec[key], f" of layer {name}")


def read_recipe(path: str | Path) -> tuple[Plan, dict]:
    from ..safe_read import read_json

    d = read_json(path, "recipe", "A recipe is the recipe.json the app exports.")
    return recipe_to_plan(d), d
