"""Fine-tuning defaults per model size and type.

The lab's recipe (SGD, lr 0.01, momentum 0.9, weight decay 1e-4, cosine) suits the ImageNet/CIFAR networks it was
written for; on the small built-in digits models it is too timid: one-shot at 95 % recovers to 96.9 % with it and
to 98.2 % at lr 0.05 (digits-cnn, 12 epochs), and the gradual schedules need the larger rate even more, since
they prune while they train. Measured with ``benchmarks/bench_schedules.py`` (see benchmarks/README.md).

A short fine-tune is another matter: at lr 0.05 a 3-epoch cosine run does not settle. ``prune --model digits-cnn
--sparsity 0.8 --finetune-epochs 3`` recovers to 98.61 % test at 0.05 and to 99.17 % at 0.02 (0.01: 99.17 %,
0.03: 98.89 %; dense 99.72 %); 6 epochs: 98.61 % at 0.05, 99.17 % at 0.02. So a small CNN's one-shot SGD rate is
0.02 for runs shorter than ``LONG_EPOCHS`` and 0.05 from there on; the gradual schedules (iterative, AGP), which
prune while they train, keep 0.05 at every length.
"""
from __future__ import annotations

from dataclasses import dataclass

SMALL_MODEL = 1_000_000   # prunable weights: below this a model counts as small
LONG_EPOCHS = 12          # a fine-tune of at least this many epochs in all counts as long (see the module's doc)


@dataclass(frozen=True)
class FinetuneDefaults:
    kind: str                 # "small-mlp" | "small-cnn" | "default"
    optimizer: str
    lrs: dict                 # per optimizer
    note: str
    short_lrs: tuple = ()     # (optimizer, rate) pairs for one-shot runs of fewer than LONG_EPOCHS epochs

    def lr(self, optimizer: str | None = None, epochs: int | None = None, schedule: str = "oneshot") -> float:
        """The rate for ``optimizer`` (default: this model's); ``epochs``: the run's length, when known."""
        optimizer = optimizer or self.optimizer
        short = dict(self.short_lrs)
        if schedule == "oneshot" and epochs is not None and epochs < LONG_EPOCHS and optimizer in short:
            return short[optimizer]
        return self.lrs.get(optimizer, self.lrs["sgd"])


LAB = FinetuneDefaults("default", "sgd", {"sgd": 0.01, "adam": 1e-3},
                       "the lab's recipe: SGD lr 0.01, momentum 0.9, weight decay 1e-4, cosine")
SMALL_MLP = FinetuneDefaults("small-mlp", "adam", {"sgd": 0.1, "adam": 1e-2},
                             "small MLP: Adam lr 0.01 (SGD 0.1)")
SMALL_CNN = FinetuneDefaults("small-cnn", "sgd", {"sgd": 0.05, "adam": 3e-3},
                             "small CNN: SGD lr 0.05 (0.02 for one-shot runs under 12 epochs; Adam 3e-3)",
                             short_lrs=(("sgd", 0.02),))


def model_kind(profile) -> str:
    """ "small-mlp" (only Linear layers), "small-cnn" (convolutions) or "default" (large, or unknown)."""
    if profile is None or not profile.layers:
        return "default"
    prunable = sum(l.params for l in profile.layers)
    if prunable >= SMALL_MODEL:
        return "default"
    if not any(l.is_conv for l in profile.layers):
        return "small-mlp"
    return "small-cnn"


def finetune_defaults(profile) -> FinetuneDefaults:
    """The optimizer and learning rates a fine-tune of this model starts from (``profile``: a ModelProfile)."""
    return {"small-mlp": SMALL_MLP, "small-cnn": SMALL_CNN}.get(model_kind(profile), LAB)
