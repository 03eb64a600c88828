"""The sensitivity scan that decides instead of measuring (issue 24): a sequential evaluation per point.

A scan exists to choose per-layer sparsities, and ``prune --from-sensitivity`` only asks of each point whether its
accuracy is within the allowed drop of dense (0.5, 1 and 2 points unless told). So each point is evaluated on a
growing sample of the split -- a seeded permutation, in fixed stages (1/8, 1/4, 1/2, all) -- and stops as soon as
its accuracy's interval is clear of every threshold ``dense - drop``. The interval is not a statistical one: after
``n`` of ``N`` samples with ``c`` correct, the accuracy on the whole split lies in ``[c/N, (c + N - n)/N]``
whatever the rest holds, so a decided point's estimate (``c/n``, inside that interval) is on the same side of
every threshold as the exact value: the allocation at those drops is the exact scan's. A point never decided is
evaluated on the whole split and is the exact value.

Optionally (``monotone``) the sparsities above a point that fails even the loosest threshold are not evaluated
(``None``, "not measured": an allocation never goes past them), which is exact when a layer's curve does not
recover at higher sparsity.

Every stage is its own suffix replayer (``replay.Replayer`` on that slice of the permuted split), so a stage
replays all of a layer's undecided points together, as the exact scan does for the whole split. Where the
hardware has native bfloat16 the stages replay in bfloat16 and certify each sample's prediction (screen.py).
"""
from __future__ import annotations

import torch

from ..errors import PlanError
from .replay import Replayer
from .screen import SCREENED, Screen

STAGES = (1 / 8, 1 / 4, 1 / 2, 1.0)
DEFAULT_DROPS = (0.5, 1.0, 2.0)
_EPS = 1e-9


def parse_drops(text) -> tuple[float, ...]:
    """``"0.5,1,2"`` -> (0.5, 1.0, 2.0): the allowed drops (points) a sequential scan decides exactly."""
    items = [t for t in str(text).replace(" ", "").split(",") if t]
    out = []
    for t in items:
        try:
            v = float(t)
        except ValueError:
            raise PlanError(f"'{t}' in the list of allowed drops is not a number.") from None
        if not 0.0 <= v < float("inf"):
            raise PlanError(f"The allowed drop {t} is not a non-negative number of points.")
        out.append(v)
    if not out:
        raise PlanError("The list of allowed drops is empty.", "Give points of accuracy, e.g. 0.5,1,2.")
    return tuple(sorted(set(out)))


def order(N: int, seed: int, device=None) -> torch.Tensor:
    """The scan's seeded order of the split's N samples."""
    return torch.randperm(N, generator=torch.Generator().manual_seed(seed)).to(device)


class StagedSplit:
    """The split in a seeded order (one permuted copy of the whole split's replay cache) with the stages' bounds;
    ``part(a, b)`` replays samples a..b of that order as a view of the cache (no copy, no new trace).
    With a ``screen`` (screen.py) the cache is its bfloat16 one, already in this order, and ``evaluate`` counts
    certified cheap predictions, recomputing the rest in float32."""

    def __init__(self, module, x: torch.Tensor, y: torch.Tensor, seed: int = 0, stages=STAGES,
                 replayer: Replayer | None = None, screen: Screen | None = None):
        """``replayer``: the whole split's (same ``x``); without it (and without a screen) one is built here."""
        N = x.shape[0]
        self.bounds = sorted({max(1, min(N, int(round(f * N)))) for f in stages} | {N})
        self.N = N
        self.screen = screen
        self._parts: dict[tuple[int, int], tuple[Replayer, torch.Tensor, dict]] = {}
        if screen is not None:
            self.full, self.module, self.x, self.y = screen.replayer, None, None, screen.y
            return
        perm = order(N, seed, x.device)
        replayer = replayer if replayer is not None else Replayer(module, x)
        # a cache that cannot be cut (a value like x.size(0) that a later node uses): each range is traced anew
        self.full = replayer.subset(perm) if replayer.sliceable() else None
        self.module, self.x = (None, None) if self.full is not None else (module, x[perm])
        self.y = y[perm]

    def part(self, a: int, b: int) -> tuple[Replayer, torch.Tensor, dict]:
        """(replayer of samples a..b, their labels, a dict for its variants-per-pass)."""
        if (a, b) not in self._parts:
            r = self.full.subset(slice(a, b)) if self.full is not None else Replayer(self.module, self.x[a:b])
            self._parts[(a, b)] = (r, self.y[a:b], {})
        return self._parts[(a, b)]

    def per_pass(self, a: int, b: int, k: int) -> int:
        replayer, _, memo = self.part(a, b)
        if k not in memo:
            memo[k] = replayer.variants_per_pass(k)
        return memo[k]

    def prepared(self, variant: dict) -> tuple[dict, dict]:
        """(the point's parameters, what the replay runs: the same, or their bfloat16 copies with a screen)."""
        return variant, (self.screen.cheap(variant) if self.screen is not None else variant)

    def evaluate(self, a: int, b: int, variants: list[tuple[dict, dict]], correct_of, loss_of) -> list:
        """Per prepared variant on samples a..b of the order, in one replay: (correct predictions, summed loss,
        positions left uncertified, how many of those the cheap logits call correct). Without a screen nothing
        is left uncertified."""
        replayer, y, _ = self.part(a, b)
        n = b - a
        logits = replayer.run_variants({k.rsplit(".", 1)[0] for v, _ in variants for k in v},
                                       [run for _, run in variants])
        if self.screen is not None:
            return self.screen.score(logits, a, len(variants))
        out = []
        for j in range(len(variants)):
            chunk = logits[j * n:(j + 1) * n]
            out.append((int(correct_of(chunk, y)), loss_of(chunk, y) * n, None, 0))
        return out

    def resolve(self, items: list[tuple[torch.Tensor, dict]]) -> list[int]:
        """Correct float32 predictions per (positions of the order, the point's unprepared variant), one layer's."""
        return self.screen.resolve_many(items)

    def next_bound(self, n: int) -> int:
        return next(b for b in self.bounds if b > n)

    @property
    def sizes(self) -> list[int]:
        return [b - a for a, b in zip([0] + self.bounds[:-1], self.bounds)]


def interval(correct: int, n: int, N: int) -> tuple[float, float]:
    """Accuracy (percent) on the whole split of N samples, given ``correct`` of the first ``n``: always inside."""
    return 100.0 * correct / N, 100.0 * (correct + N - n) / N


def states(lo: float, hi: float, dense: float, drops) -> list[int]:
    """Per drop: +1 the point is within it for sure, -1 it is not, 0 undecided (the interval straddles
    ``dense - d``)."""
    out = []
    for d in drops:
        t = dense - d
        out.append(1 if lo > t + _EPS else (-1 if hi < t - _EPS else 0))
    return out


def needed(correct: int, n: int, N: int, t: float) -> int:
    """Samples a point is expected to need before its interval clears threshold ``t`` (percent), if the rest of
    the split behaves like its first ``n`` (at most N)."""
    p, t = correct / n, t / 100.0
    if p > t:                                 # likely within: needs c/N > t, with c growing like p per sample
        return min(N, int(t * N / p) + 1)
    if p < t:                                 # likely not: needs (c + N - n)/N < t
        return min(N, int(N * (1 - t) / max(1e-12, 1 - p)) + 1)
    return N


def scan_layer(staged: StagedSplit, variants_at, n_points: int, dense: float, drops, monotone: bool,
               correct_of, loss_of, eligible=None):
    """Evaluate one layer's points on growing prefixes of the seeded order. ``variants_at(i)``: the parameter
    variant of point i; ``correct_of(logits, y)``: correct predictions; ``loss_of(logits, y)``: mean loss;
    ``eligible[i]``: point i may be allocated (its sparsity is within the allocation's cap). Returns per point
    (accuracy, loss, samples used, [lo, hi]) -- all None for a point not evaluated (``monotone`` only).

    An allocation at drop d takes the highest eligible point within d. So a point needs more samples only while
    some drop d leaves it undecided and no point above it is known to be within d: in the end the highest point
    within d and every eligible point above it are decided exactly; the points below keep the estimate of the
    samples they had (their interval says how wide it is). Every point gets the first stage; then the points
    that the estimates say will decide (the highest likely within d, and those above it) go first, each straight
    to the stage bound its estimate says it needs (``needed``: a point near the threshold goes to the whole
    split at once instead of stage by stage; a wrong guess costs samples, never a decision). Points with the
    same range of samples run together. With a bfloat16 screen (screen.py) a sample it leaves uncertified counts
    as unknown in the interval until it is recomputed in float32: at once where that alone could decide the
    point, else when the point ends on the whole split (whose accuracy is then the float32 one)."""
    N = staged.N
    eligible = list(eligible) if eligible is not None else [True] * n_points
    correct = [0] * n_points               # estimate: certified correct + uncertified the cheap logits call correct
    sure = [0] * n_points                  # certified (or float32) correct
    pending: list[list] = [[] for _ in range(n_points)]     # positions left uncertified by the screen
    pending_correct: list[list[int]] = [[] for _ in range(n_points)]    # ... of which the cheap logits call right
    loss_sum = [0.0] * n_points
    used = [0] * n_points
    state = [[0] * len(drops) for _ in range(n_points)]
    dropped: set[int] = set()              # monotone: above a point that fails the loosest drop
    cache: dict[int, dict] = {}

    def bounds(i: int, extra: int = 0, unknown: int | None = None) -> tuple[float, float]:
        """Point i's interval: its uncertified samples count as unknown (or ``extra`` of ``unknown`` correct)."""
        u = sum(len(p) for p in pending[i]) if unknown is None else unknown
        return 100.0 * (sure[i] + extra) / N, 100.0 * (sure[i] + extra + u + N - used[i]) / N

    def settle(i: int) -> None:
        state[i] = states(*bounds(i), dense, drops)
        if monotone and all(v == -1 for v in state[i]):
            dropped.update(range(i + 1, n_points))

    def resolvable(i: int) -> bool:
        """Should i's uncertified samples be recomputed now, rather than after more samples? When i is on the
        whole split and undecided, or when they alone could decide every drop (all right or all wrong)."""
        u = sum(len(p) for p in pending[i])
        if not u or 0 not in state[i]:
            return False
        return used[i] == N or 0 not in states(*bounds(i, u, 0), dense, drops) \
            or 0 not in states(*bounds(i, 0, 0), dense, drops)

    def resolve(points: list[int]) -> None:
        counts = staged.resolve([(torch.cat(pending[i]), variants_at(i) if i not in cache else cache[i][0])
                                 for i in points])
        for i, c in zip(points, counts):
            correct[i] += c - sum(pending_correct[i])
            sure[i] += c
            pending[i], pending_correct[i] = [], []
            settle(i)

    def run(points: list[int], a: int, b: int) -> None:
        n = b - a
        per_pass = staged.per_pass(a, b, len(points))
        for j0 in range(0, len(points), per_pass):
            idx = points[j0:j0 + per_pass]
            variants = []
            for i in idx:
                if i not in cache:
                    cache[i] = staged.prepared(variants_at(i))
                variants.append(cache[i])
            for i, (c, l, unsure, unsure_correct) in zip(idx, staged.evaluate(a, b, variants, correct_of, loss_of)):
                correct[i] += c + unsure_correct
                sure[i] += c
                loss_sum[i] += l
                used[i] += n
                if unsure is not None and unsure.numel():
                    pending[i].append(unsure)
                    pending_correct[i].append(unsure_correct)
                settle(i)

    def relevant(i: int) -> bool:
        """Does some drop leave point i undecided while no eligible point above it is known to be within it?"""
        return i not in dropped and any(
            state[i][di] == 0 and not any(eligible[j] and state[j][di] == 1 and j not in dropped
                                          for j in range(i + 1, n_points)) for di in range(len(drops)))

    run(list(range(n_points)), 0, staged.bounds[0])
    while True:
        # uncertified samples are recomputed only where their float32 predictions could change a decision
        # that matters to the allocation
        ahead = [i for i in range(n_points) if relevant(i) and resolvable(i)]
        if ahead:
            resolve(ahead)
            continue
        live = [i for i in range(n_points) if i not in dropped and used[i] < N]
        need, first, target = [], [], {}
        for i in live:
            est = 100.0 * correct[i] / used[i]
            for di, d in enumerate(drops):
                if state[i][di] != 0 or any(eligible[j] and state[j][di] == 1 and j not in dropped
                                            for j in range(i + 1, n_points)):
                    continue
                need.append(i)
                target[i] = max(staged.next_bound(used[i]), min(
                    (b for b in staged.bounds if b >= needed(correct[i], used[i], N, dense - d)), default=N))
                # the highest point whose estimate is within d: it and those above it decide the allocation
                likely = [j for j in range(n_points) if eligible[j] and j not in dropped and used[j]
                          and (state[j][di] == 1 or (state[j][di] == 0
                                                     and 100.0 * correct[j] / used[j] >= dense - d))]
                if not likely or i >= max(likely) or est < dense - d:
                    first.append(i)
                break
        todo = first or need
        if not todo:
            break
        a = min(used[i] for i in todo)          # batch the points with the same range of samples
        b = min(target[i] for i in todo if used[i] == a)
        run([i for i in todo if used[i] == a and target[i] == b], a, b)
        for i in list(cache):
            if i not in need:
                cache.pop(i)
    late = [i for i in range(n_points) if i not in dropped and used[i] == N and pending[i]]
    if late:                                   # a point on the whole split is the exact value
        resolve(late)
    out = []
    for i in range(n_points):
        if i in dropped or not used[i]:
            out.append((None, None, None, None))
            continue
        acc = 100.0 * correct[i] / (N if used[i] == N else used[i])
        out.append((acc, loss_sum[i] / used[i], used[i], list(bounds(i))))
    return out


def sequential_row(staged: StagedSplit, row: str, members, params: int, sparsities, dense: float, spec,
                   num_classes: int | None, loss_fn, variant_at) -> dict:
    """One layer's row of the sequential scan (the scan's layer entry), with every point's samples and interval.
    ``loss_fn(logits, y, num_classes)``: mean loss; ``variant_at(i)``: the masked parameters at point i."""
    def correct(logits, y):
        if num_classes and logits.shape[1] > num_classes:
            logits = logits[:, :num_classes]
        return int((logits.argmax(1) == y).sum())

    screen = staged.screen
    before = (screen.screened, screen.recomputed) if screen is not None else None
    points = scan_layer(staged, variant_at, len(sparsities), dense, spec.drops, spec.monotone, correct,
                        lambda lg, y: loss_fn(lg, y, num_classes),
                        eligible=[s <= spec.cap + 1e-12 for s in sparsities])
    entry = {"name": row, "params": params, "accuracy": [p[0] for p in points], "loss": [p[1] for p in points],
             "samples": [p[2] for p in points], "interval": [p[3] for p in points]}
    if screen is not None:      # this row's share of the screen's counts (gathered with the rows under torchrun)
        entry[SCREENED] = (screen.screened - before[0], screen.recomputed - before[1])
    if len(members) > 1:
        entry["group"] = list(members)
    return entry
