"""The quality metric of a task, in one place: its name, label, direction and formatting.

Classifiers are measured by top-1 **accuracy** (percent, higher is better); causal language models by
**perplexity** (exp of the mean next-token cross-entropy, lower is better); regression (float targets of a
``tensors:PATH`` dataset) by the **mean squared error** (lower is better). Everything that compares,
plots or reports quality -- the dashboard, sensitivity curves, allocation, History, fine-tuning's
choice of its best epoch, report.json -- asks the dataset's :class:`Metric` instead of assuming accuracy.

A *drop* is always "how much worse" as a positive number: accuracy points lost, or for perplexity the
increase in percent of the dense model's perplexity or mean squared error (perplexities of different models span orders of
magnitude, so an absolute budget would mean nothing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str                  # the JSON key: "accuracy" | "perplexity"
    label: str                 # axis / column label
    higher_is_better: bool
    unit: str                  # "%" or ""
    drop_label: str            # what a drop (positive = worse) is measured in
    tooltip: str

    def value(self, ev) -> float | None:
        """The metric of an evaluate() result (None without labels)."""
        return getattr(ev, self.name, None) if ev is not None else None

    def format(self, v: float | None, digits: int = 2) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "n/a"
        if self.name == "mse":               # errors span orders of magnitude: significant digits
            return f"{v:.{digits + 1}g}"
        return f"{v:.{digits}f}{self.unit}"

    def drop(self, dense: float, v: float) -> float:
        """How much worse ``v`` is than ``dense`` (positive = worse)."""
        if self.higher_is_better:
            return dense - v
        return (v / dense - 1.0) * 100.0 if dense > 0 else math.inf

    def floor(self, dense: float, max_drop: float) -> float:
        """The worst value a budget of ``max_drop`` allows (inverse of :meth:`drop`)."""
        return dense - max_drop if self.higher_is_better else dense * (1.0 + max_drop / 100.0)

    def ok(self, v: float | None, limit: float) -> bool:
        """Is ``v`` at least as good as ``limit``?"""
        if v is None:
            return False
        return v >= limit if self.higher_is_better else v <= limit

    def score(self, v: float | None) -> float:
        """A higher-is-better number for max()/sorting (-inf for None)."""
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return -math.inf
        return v if self.higher_is_better else -v

    def better(self, a: float | None, b: float | None) -> bool:
        return self.score(a) > self.score(b)

    def result(self, split: str, samples: int, value: float | None):
        """An evaluate() result holding ``value`` as this metric (for values measured elsewhere, e.g. a search)."""
        from .evaluate import EvalResult

        if self.name == "accuracy":
            return EvalResult(split, samples, value, None)
        return EvalResult(split, samples, None, None, **{self.name: value})


ACCURACY = Metric("accuracy", "accuracy (%)", True, "%", "accuracy drop (points)",
                  "Top-1 accuracy: the share of samples whose highest score is the right class (higher is better).")
PERPLEXITY = Metric("perplexity", "perplexity", False, "", "perplexity increase (%)",
                    "Perplexity: exp of the mean cross-entropy of the next token -- how many tokens the model is "
                    "as unsure as choosing among (lower is better).")
MSE = Metric("mse", "mean squared error", False, "", "error increase (%)",
             "Mean squared error: the mean over samples and outputs of (output - target)^2 (lower is better).")
METRICS = {m.name: m for m in (ACCURACY, PERPLEXITY, MSE)}


def metric_of(dataset) -> Metric:
    """The metric a dataset is measured by (its ``metric`` name; accuracy by default)."""
    return METRICS.get(getattr(dataset, "metric", "accuracy") if dataset is not None else "accuracy", ACCURACY)
