"""1-D k-means for weight sharing (Deep Compression, Han, Mao & Dally 2016).

A layer's kept weights are clustered into at most k shared values. In one dimension every cluster of an
optimal assignment is a contiguous run of the sorted values (the boundaries are the midpoints between
neighbouring centroids), so each Lloyd iteration is a ``searchsorted`` of k-1 midpoints and k range sums
from one prefix sum: O(k log n) per iteration after a single sort. Exact Lloyd, not an approximation; 10 M
values cluster in about a second (the sort).

Initialisations (the paper compares them; linear is its best):

- ``linear``: k values evenly spaced between the smallest and the largest weight;
- ``density``: the values at evenly spaced quantiles of the weights (the CDF spaced evenly on the y-axis);
- ``random`` (Forgy): k distinct weights drawn at random (seeded).

Clusters that end up empty are dropped, so the result may have fewer than k centroids.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PlanError

INITS = ("linear", "density", "random")
INIT_TIPS = {
    "linear": "Centroids evenly spaced between the smallest and largest weight (the paper's best: keeps the few "
              "large weights, which matter most)",
    "density": "Centroids at evenly spaced quantiles of the weights (dense where the weights are dense)",
    "random": "Forgy: k distinct weights drawn at random (seeded)",
}
MAX_ITER = 1000
TOL = 1e-7           # stop when no centroid moves more than TOL x the value range (or nothing changes)


@dataclass
class KMeansResult:
    centroids: np.ndarray    # float32, ascending, one per non-empty cluster
    labels: np.ndarray       # int32 per input value (input order): index into ``centroids``
    iterations: int
    converged: bool

    @property
    def k(self) -> int:
        return len(self.centroids)


def check_init(init: str) -> str:
    if init not in INITS:
        raise PlanError(f"Unknown k-means initialisation '{init}'; use {', '.join(INITS)}.")
    return init


def initial_centroids(sorted_values: np.ndarray, k: int, init: str = "linear", seed: int = 0) -> np.ndarray:
    """k starting centroids (float64, ascending, distinct) for sorted values."""
    check_init(init)
    x = sorted_values
    n = len(x)
    if init == "linear":
        c = np.linspace(float(x[0]), float(x[-1]), k)
    elif init == "density":
        c = x[np.minimum(((np.arange(k) + 0.5) * n / k).astype(np.int64), n - 1)].astype(np.float64)
    else:
        rng = np.random.default_rng(seed)
        c = x[np.sort(rng.choice(n, size=min(k, n), replace=False))].astype(np.float64)
    return np.unique(c)


def _segments(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """End index of each centroid's run in sorted ``x`` (nearest centroid; a tie goes to the lower one)."""
    mids = (c[:-1] + c[1:]) / 2.0
    return np.append(np.searchsorted(x, mids, side="right"), len(x))


def _means(cs: np.ndarray, ends: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = np.concatenate(([0], ends[:-1]))
    counts = ends - starts
    sums = cs[ends] - cs[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), c)
    return means, counts


def kmeans_1d(values: np.ndarray, k: int, init: str = "linear", seed: int = 0,
              max_iter: int = MAX_ITER, tol: float = TOL) -> KMeansResult:
    """Cluster 1-D ``values`` into at most ``k`` shared values (Lloyd's algorithm on the sorted values).

    At convergence every value is assigned to its nearest centroid and every centroid is the mean of its
    values (computed in float64, stored as float32; the final assignment is redone against the float32
    centroids, so it is exactly optimal for what is stored). Iterations stop when the assignment no longer
    changes or no centroid moves more than ``tol`` times the range of the values.
    """
    check_init(init)
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    if k < 1:
        raise PlanError(f"k-means needs at least one cluster (got k={k}).")
    if v.size == 0:
        return KMeansResult(np.zeros(0, np.float32), np.zeros(0, np.int32), 0, True)
    if not np.isfinite(v).all():
        raise PlanError("Weights with NaN or inf cannot be clustered; fix or reload the model first.")
    order = np.argsort(v, kind="stable")
    x = v[order]
    first = np.concatenate(([True], x[1:] != x[:-1]))
    if int(first.sum()) <= k:                 # few distinct values: each is its own shared value, exactly
        uniq = x[first]
        labels = np.empty(v.size, np.int32)
        labels[order] = np.searchsorted(uniq, x).astype(np.int32)
        return KMeansResult(uniq.astype(np.float32), labels, 0, True)
    cs = np.concatenate(([0.0], np.cumsum(x, dtype=np.float64)))
    c = initial_centroids(x, k, init, seed)
    prev = None
    converged = False
    it = 0
    step_tol = tol * float(x[-1] - x[0])
    for it in range(1, max_iter + 1):
        ends = _segments(x, c)
        c_new, _ = _means(cs, ends, c)
        c_new = np.sort(c_new)
        moved = float(np.abs(c_new - c).max())
        c = c_new
        if (prev is not None and np.array_equal(ends, prev)) or moved <= step_tol:
            converged = True
            break
        prev = ends
    # store float32, drop empty clusters, and assign against exactly what is stored
    c32 = np.unique(c.astype(np.float32))
    ends = _segments(x, c32.astype(np.float64))
    starts = np.concatenate(([0], ends[:-1]))
    keep = ends > starts
    c32 = c32[keep]
    counts = (ends - starts)[keep]
    labels = np.empty(v.size, np.int32)
    labels[order] = np.repeat(np.arange(len(c32), dtype=np.int32), counts)
    return KMeansResult(c32, labels, it, converged)
