"""A big layer's first ranking by selection while its sort runs (issue 24, item 2): every answer bit-identical to
the full stable ranking's -- the round(s*N) count, the threshold, ties broken by position, zeros and non-finite
weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.core.prune import lazy_ranking
from explorer.core.prune.lazy_ranking import LazyRanking
from explorer.core.prune.masks import MaskEngine
from explorer.core.prune.oneoff import magnitude_keys
from explorer.core.prune.ranking import pruned_units


def _weight(n: int = 60_000) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(n, generator=g)
    w = torch.round(w * 64) / 64          # many exact ties of |w| (both signs too)
    w[::97] = 0.0
    w[5] = -0.0
    w[7], w[11], w[13] = float("nan"), float("inf"), -float("inf")
    w[17] = 1e-44                          # a subnormal
    return w


SPARSITIES = [0.0, 1e-5, 0.0102, 0.25, 0.5, 0.5 + 1e-4, 0.77, 0.9999, 0.99995, 1.0]


def test_selection_equals_the_sorted_ranking():
    w = _weight()
    keys = magnitude_keys(w)
    lazy = LazyRanking(keys.clone(), start=False)
    n = w.numel()
    units = np.random.default_rng(0).integers(0, n, 5000)
    units = np.concatenate([units, np.arange(40)])          # the zeros, the non-finite, the subnormal
    answers = {}
    for s in SPARSITIES:
        k = pruned_units(s, n)
        answers[s] = (lazy.kept(units, k), lazy.threshold(k))
    assert not lazy.ready                                   # all of the above were selections
    lazy.finish()
    sorted_keys, order = torch.sort(keys, stable=True)      # the full ranking, as ranking.rank_scores makes it
    rank = torch.empty(n, dtype=torch.int32)
    rank[order] = torch.arange(n, dtype=torch.int32)
    assert torch.equal(lazy.rank, rank) and torch.equal(lazy.sorted_keys, sorted_keys)
    assert lazy.nonfinite == 3
    for s, (kept, thr) in answers.items():
        k = pruned_units(s, n)
        np.testing.assert_array_equal(kept, rank.numpy()[units] >= k)
        assert int(kept.size - kept.sum()) == int((rank.numpy()[units] < k).sum())
        assert thr == lazy.threshold(k)                      # same value from the sorted keys
        assert (thr is None) == (k == 0)


def test_engine_view_is_exact_before_and_after_the_sort(monkeypatch):
    """A layer over the size limit: counts, threshold, heatmap and histogram while the ranking is pending equal
    those of the engine that sorts at once; the element mask keeps exactly N - round(s*N) weights."""
    from explorer.core.model.layers import profile_model

    model = torch.nn.Sequential(torch.nn.Linear(300, 200))
    with torch.no_grad():
        model[0].weight.copy_(_weight(60_000).reshape(200, 300))      # zeros, ties, NaN, +-inf
    layers = {li.name: li for li in profile_model(model, (300,)).layers}
    name = next(iter(layers))
    w = model[0].weight.detach()
    monkeypatch.setattr(lazy_ranking, "MIN_PARAMS", 1000)
    lazy = MaskEngine(layers, weight=lambda n: w)
    full = MaskEngine(layers, weight=lambda n: w, lazy=False)
    # keep the lazy one pending: no background thread, sort only when asked
    monkeypatch.setattr(lazy_ranking.LazyRanking, "__init__",
                        _no_start(lazy_ranking.LazyRanking.__init__))
    a, b = lazy.view(name), full.view(name)
    assert isinstance(a.ranking, LazyRanking) and not a.ranking.ready
    assert not isinstance(b.ranking, LazyRanking)
    assert a.ranking.nonfinite == b.ranking.nonfinite == 3
    level = 1.0
    for s in SPARSITIES:
        assert a.threshold(s) == b.threshold(s)
        assert a.counts(s) == b.counts(s)
        np.testing.assert_array_equal(a.display_image(s, level), b.display_image(s, level))
        for x, y in zip(a.histogram(s), b.histogram(s)):
            np.testing.assert_array_equal(x, y)
    assert not a.ranking.ready
    for s in (0.3, 0.9):
        m = a.element_mask(s)                                   # waits for (here: runs) the full sort
        assert torch.equal(m, b.element_mask(s))
        assert int((~m).sum()) == pruned_units(s, w.numel())
    assert a.ranking.ready
    np.testing.assert_array_equal(a.display_image(0.6, level), b.display_image(0.6, level))


def _no_start(init):
    def wrapped(self, keys, comparable_fn=None, start=True):
        init(self, keys, comparable_fn, start=False)
    return wrapped


@pytest.mark.parametrize("criterion", ["l2", "taylor"])
def test_only_magnitude_element_layers_go_lazy(criterion):
    assert lazy_ranking.lazy_supported(criterion, "element", 1, 10**8, torch.float32) == (criterion == "l2")
    assert not lazy_ranking.lazy_supported("l1", "element", 1, 10**8, torch.float16)
    assert not lazy_ranking.lazy_supported("l1", "channel", 1, 10**8, torch.float32)
