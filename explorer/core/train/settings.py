"""Fine-tune settings, resolved in one place for every door.

The CLI's ``prune``, ``compress`` and ``finetune``, the window's Fine-tune tab, the search, the criteria comparison,
lessons and benchmarks all turn "this model, these overrides" into a :class:`~.finetune.FinetuneConfig` here, so the
same request fine-tunes the same way whichever door it came in by (issue 20). The starting point is what a recipe
recorded, else the model's own defaults (:mod:`.defaults`: optimizer and learning rate by model size and type);
every override that is given (not None) replaces its field. An optimizer given without a learning rate gets the
model's rate for that optimizer, not the other optimizer's.
"""
from __future__ import annotations

from dataclasses import fields, replace

from ..errors import PlanError
from .defaults import finetune_defaults
from .finetune import FinetuneConfig

DEFAULT_EPOCHS = 3
_FIELDS = {f.name for f in fields(FinetuneConfig)}


def finetune_settings(profile=None, recorded: FinetuneConfig | dict | None = None, **overrides) -> FinetuneConfig:
    """The fine-tune settings for a model (``profile``: its ModelProfile, for the defaults) with ``overrides``
    (FinetuneConfig field names; None means "not given"). ``recorded``: a recipe's recorded settings, which take
    the place of the model's defaults."""
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise TypeError(f"unknown fine-tune settings: {', '.join(unknown)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    d = finetune_defaults(profile)
    if recorded is not None:
        base = recorded if isinstance(recorded, FinetuneConfig) else FinetuneConfig.from_recorded(recorded)
        if "optimizer" in given and given["optimizer"] != base.optimizer and "lr" not in given:
            given["lr"] = d.lr(given["optimizer"], total_epochs(base, given), given.get("schedule", base.schedule))
    else:
        optimizer = given.get("optimizer", d.optimizer)
        base = FinetuneConfig(epochs=DEFAULT_EPOCHS, optimizer=optimizer)
        if "lr" not in given:
            given["lr"] = d.lr(optimizer, total_epochs(base, given), given.get("schedule", base.schedule))
    if "step_sparsities" in given:
        given["step_sparsities"] = tuple(float(v) for v in given["step_sparsities"])
        if given["step_sparsities"] and "steps" not in given:
            given["steps"] = len(given["step_sparsities"])
    try:
        return replace(base, **given).validated()
    except TypeError as e:      # a value of the wrong type in a recorded entry
        raise PlanError(f"Invalid fine-tune settings ({e}).") from None


def total_epochs(base: FinetuneConfig, given: dict) -> int:
    """Epochs of the whole run (an iterative run's steps times its epochs per step)."""
    epochs, schedule = given.get("epochs", base.epochs), given.get("schedule", base.schedule)
    steps = given.get("steps") or len(given.get("step_sparsities") or ()) or base.steps
    return epochs * (steps if schedule == "iterative" else 1)
