"""A recipe's ``finetune`` entry: the limits of its values (the CLI's fine-tuning flags keep the same ones) and
the :class:`FinetuneConfig` it records, checked as strictly as the flags."""
from __future__ import annotations

from ..checks import checked_fields
from .finetune import FinetuneConfig

# what a recipe's "finetune" entry may hold (the CLI's flags have the same limits)
FINETUNE_LIMITS = {"epochs": (1, 10_000), "lr": (0.0, 10.0, "open"), "momentum": (0.0, 1.0),
                   "weight_decay": (0.0, 1.0), "batch_size": (1, 65_536), "seed": (0, 2**31 - 1),
                   "steps": (1, 1_000), "max_batches": (1, 10**9), "optimizer": ("sgd", "adam"),
                   "schedule": ("oneshot", "iterative", "agp"), "eval_split": ("val", "test"),
                   "spacing": ("geometric", "linear"), "step_sparsities": (0.0, 1.0), "agp_end": (0.0, 1.0, "open"),
                   "agp_updates": (1, 10_000)}


def finetune_from_recipe(entry):
    """The FinetuneConfig a recipe recorded, checked as strictly as the CLI's flags."""
    if entry is None:
        return None
    return FinetuneConfig.from_recorded(checked_fields(FinetuneConfig, entry, "The recipe's 'finetune' entry",
                                                       FINETUNE_LIMITS))
