"""A cheap screening precision with exact certification, for the sequential scan (issue 24).

The sequential scan only needs, per sample, whether the prediction is right. So a point's samples are replayed in
bfloat16 (a bfloat16 copy of the model and of the whole split's replay cache; on CPUs with AMX / AVX512-BF16 a
channels-last bfloat16 convolution runs several times faster than float32), and a sample's cheap top-1 counts as
the float32 one only when its margin (top-1 minus top-2 logit) exceeds twice a bound on the cheap path's logit
error: if no logit moves by more than ``bound``, the order of the top two cannot change. The other samples are
left "uncertified": the point's interval counts them as unknown, and they are recomputed in float32 (a plain
forward of the scan's float32 model on those samples, with the point's weights swapped in) only where that could
change a decision the allocation needs, and for every point evaluated on the whole split (whose accuracy is then
the float32 one). The dense accuracy is certified the same way.

The bound is calibrated per scan on the dense model: ``SAFETY`` x the largest |float32 - bfloat16| logit over the
first quarter of the seeded order (at least ``PROBE`` samples; the bfloat16 side being the full bfloat16 forward and
the suffix replay of the first scanned layer), and never below ``SAFETY`` x 2^-8 x the largest |logit| (bfloat16's
relative precision). It is an empirical bound, not a proof: a pruned variant whose error exceeds ``SAFETY`` times
the dense one could be miscounted. On the built-ins the pruned variants' errors stay within 1.3x the dense one
(measured per layer and sparsity on digits-cnn and digits-vgg), and the tests and the benchmark check that the
allocations, and the accuracies of the points on the whole split, are the float32 scan's. Loss values from this
path are estimates (cross-entropy of the bfloat16 logits); the JSON says so (``sequential.precision``).

The cheap path is used only on a device with native bfloat16 (``fast_bfloat16``: CPU flags amx_bf16 /
avx512_bf16 / bf16, or CUDA's own answer): emulated bfloat16 is several times slower than float32. A model the
bfloat16 replay cannot trace, cut by samples or reproduce falls back to the float32 sequential scan, and the JSON
says why (``sequential.precision_reason``).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..model.layers import logits_of
from .replay import Replayer

CHEAP = torch.bfloat16
SAFETY = 4.0                 # bound = SAFETY x the dense model's largest cheap-path logit error
CHECK = 4.0                  # the bfloat16 replay of the dense model must stay within CHECK x that error
SCREENED = "_screened"       # a row's (screened, recomputed) samples while the scan runs; not in the JSON
PROBE = 32                   # at least this many samples (or a quarter of the split) calibrate the bound


def margins(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 class, top-1 minus top-2 logit) per row; the margin is +inf with one class, NaN where not finite."""
    if logits.shape[1] < 2:
        return logits.argmax(1), torch.full((logits.shape[0],), float("inf"), device=logits.device)
    top = logits.topk(2, 1)
    return top.indices[:, 0], top.values[:, 0] - top.values[:, 1]


def certified(logits: torch.Tensor, bound: float) -> torch.Tensor:
    """Rows whose top-1 holds whatever error up to ``bound`` each logit has: margin > 2 x bound (NaN: False)."""
    _, m = margins(logits)
    return m > 2.0 * bound


def error_level(pairs) -> float:
    """The largest |exact - cheap| logit over ``pairs`` of (exact, cheap) logits, at least bfloat16's relative
    precision x the largest |logit|; inf when something is not finite."""
    err = max(float((c.float() - e.float()).abs().max()) for e, c in pairs)
    floor = 2.0 ** -8 * max(float(e.float().abs().max()) for e, _ in pairs)
    level = max(err, floor)
    return level if level == level and level < float("inf") else float("inf")


def calibrate(pairs) -> float:
    """The bound: ``SAFETY`` x :func:`error_level` (inf: nothing is certified)."""
    return SAFETY * error_level(pairs)


@contextmanager
def swapped(tensors: dict[str, torch.Tensor], variant: dict[str, torch.Tensor]):
    """The module whose ``tensors`` (its parameters and buffers by state_dict key) these are, with the tensors of
    ``variant`` in place of its own, restored after."""
    saved = {}
    try:
        for k, t in variant.items():
            if k in tensors:
                saved[k] = tensors[k].data
                tensors[k].data = t
        yield
    finally:
        for k, t in saved.items():
            tensors[k].data = t


def fast_bfloat16(device: torch.device) -> bool:
    """Can this device run bfloat16 natively (CPU: AMX or AVX512-BF16 in /proc/cpuinfo; CUDA: the driver says)?
    Where it cannot tell, True: the timing in build_screen decides."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return True
    flags = {w for line in info.splitlines() if line.startswith(("flags", "Features")) for w in line.split()}
    return bool(flags & {"amx_bf16", "avx512_bf16", "bf16"}) or not flags


class Screen:
    """The split (in the scan's seeded order) in float32 for recomputing, the bfloat16 replayer for screening,
    the bound, and counts of what was screened and recomputed."""

    def __init__(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, replayer: Replayer, bound: float,
                 num_classes: int | None):
        """``module``: the float32 model (the bfloat16 replayer holds its own copy)."""
        self.module, self.x, self.y = module, x, y
        self.replayer = replayer
        self.bound = bound
        self.num_classes = num_classes
        self.dense: tuple[float, float] | None = None
        self.screened = 0
        self.recomputed = 0
        self.tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}

    def cheap(self, variant: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: (t.to(CHEAP) if t.is_floating_point() else t) for k, t in variant.items()}

    def _classes(self, logits: torch.Tensor) -> torch.Tensor:
        nc = self.num_classes
        return logits[:, :nc] if nc and logits.shape[1] > nc else logits

    def score(self, logits: torch.Tensor, a: int, k: int = 1) -> list[tuple[int, float, torch.Tensor, int]]:
        """Cheap logits of ``k`` variants stacked (``k`` x n rows) for samples a..a+n of the order, per variant:
        (certified correct predictions, summed cross-entropy of the cheap logits -- an estimate --, positions of
        the uncertified samples, how many of those the cheap logits call correct). ``resolve`` gives the float32
        count at uncertified positions when it is needed."""
        logits = self._classes(logits.float())
        n = logits.shape[0] // k
        y = self.y[a:a + n]
        pred, m = margins(logits)
        right = (pred.view(k, n) == y).view(-1)
        sure = m > 2.0 * self.bound
        loss = F.cross_entropy(torch.nan_to_num(logits, nan=0.0, posinf=1e4, neginf=-1e4), y.repeat(k),
                               reduction="none").view(k, n).sum(1).tolist()
        good = (right & sure).view(k, n).sum(1).tolist()
        self.screened += k * n
        out = []
        for j in range(k):
            unsure = (~sure[j * n:(j + 1) * n]).nonzero().flatten()
            out.append((int(good[j]), float(loss[j]), unsure + a, int(right[j * n + unsure].sum())))
        return out

    def resolve(self, positions: torch.Tensor, variant: dict[str, torch.Tensor]) -> int:
        """Correct float32 predictions at ``positions`` of the order with the float32 ``variant`` swapped in."""
        return self.resolve_many([(positions, variant)])[0]

    def resolve_many(self, items: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> list[int]:
        """:meth:`resolve` for several (positions, variant): a plain float32 forward each (a stacked float32
        replay of the samples most likely left uncertified was measured slower: see benchmarks/README.md)."""
        self.recomputed += sum(int(p.numel()) for p, _ in items)
        out = []
        for p, v in items:
            with torch.inference_mode(), swapped(self.tensors, v):
                exact = logits_of(self.module(self.x[p]))
            out.append(int((self._classes(exact).argmax(1) == self.y[p]).sum()))
        return out

    def settings(self, layers: list[dict]) -> dict:
        """What the JSON records of this screen (``sequential.screen``), its counts summed over the scan's
        ``layers`` (rows from every process under torchrun), whose own counts are taken out."""
        counts = [l.pop(SCREENED, (0, 0)) for l in layers]
        self.screened, self.recomputed = sum(c[0] for c in counts), sum(c[1] for c in counts)
        return {"bound": self.bound, "safety": SAFETY, "screened": self.screened, "recomputed": self.recomputed,
                "recomputed_share": self.recomputed / self.screened if self.screened else 0.0}


def build_screen(module: nn.Module, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, num_classes: int | None,
                 check: dict[str, torch.Tensor], force: bool = False, key=None, budget: float = float("inf")):
    """:func:`_build` on any error, or a replay cache over ``budget`` bytes: None and why (the float32 scan)."""
    try:
        screen, why = _build(module, x, y, perm, num_classes, check, force, key)
    except Exception as e:
        return None, f"bfloat16 screen failed ({type(e).__name__})"
    if screen is not None and screen.replayer.cached_bytes() > budget:
        return None, "the bfloat16 replay cache is over the budget"
    return screen, why


def _build(module: nn.Module, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, num_classes: int | None,
           check: dict[str, torch.Tensor], force: bool = False, key=None):
    """(Screen or None, why not). ``module``: the scan's float32 copy (it recomputes; the bfloat16 replayer
    converts a copy of it); ``perm``: the scan's seeded order; ``check``: the first scanned layer's dense
    weights, replayed on the first samples of the order to check the replay; ``force``: build it even without
    native bfloat16 (tests); ``key``: the model the scan copied (replay.py's trace cache). The screen's ``dense``
    holds the dense model's (accuracy, loss): the accuracy certified like every point's, the loss an estimate."""
    if not force and not fast_bfloat16(x.device):
        return None, f"no native bfloat16 on {x.device.type}"
    xp, yp = x[perm], y[perm]
    try:
        n = min(xp.shape[0], max(PROBE, xp.shape[0] // 4))
        with torch.inference_mode():
            exact = logits_of(module(xp[:n]))
        replayer = Replayer(copy.deepcopy(module), xp, dtype=CHEAP, key=key)
        why = "" if replayer.sliceable() else "the replay cache cannot be cut by samples"
        cheap = replayer.output[:n]
        level = error_level([(exact, cheap)])
        if not why and level == float("inf"):
            why = "the dense logits are not finite"
        if not why:         # the replay (conv+BN folded) stays within a few times the forward's own error
            again = replayer.subset(slice(0, n)).run_variants({k.rsplit(".", 1)[0] for k in check},
                                                              [{k: t.to(CHEAP) for k, t in check.items()}])
            if again.shape != exact.shape or float((again.float() - exact.float()).abs().max()) > CHECK * level:
                why = "the bfloat16 replay does not reproduce the forward"
    except Exception as e:          # a model the cheap path cannot trace or run: the float32 scan
        why = f"bfloat16 replay failed ({type(e).__name__})"
    if why:
        return None, why
    screen = Screen(module, xp, yp, replayer, calibrate([(exact, cheap), (exact, again)]), num_classes)
    c, loss_sum, unsure, _ = screen.score(replayer.output, 0)[0]
    screen.dense = (100.0 * (c + screen.resolve(unsure, {})) / replayer.N, loss_sum / replayer.N)
    screen.screened = screen.recomputed = 0          # the counts are the points'
    return screen, ""
