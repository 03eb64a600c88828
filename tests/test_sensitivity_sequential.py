"""The sequential sensitivity scan (issue 24, item 1): each point on a growing seeded sample until the allocation
at the allowed drops is decided. Its allocations equal the exact scan's on the built-ins; every point records the
samples it used and an interval that holds the exact accuracy."""
from __future__ import annotations

import pytest

from explorer.core.analyse.allocate import allocate_by_drop
from explorer.core.analyse.sensitivity import ScanResult, ScanSpec, scan
from explorer.core.analyse.sequential import interval, states
from explorer.core.session import Session

DROPS = (0.5, 1.0, 2.0)
SPARSITIES = [0.5, 0.8, 0.9]


@pytest.mark.parametrize("model", ["digits-cnn", "digits-mlp"])
def test_same_allocation_as_the_exact_scan(model):
    s = Session.open(model)
    exact = scan(s, ScanSpec(SPARSITIES))
    fast = scan(s, ScanSpec(SPARSITIES, exact=False, drops=DROPS))
    assert fast.sequential["drops"] == list(DROPS) and sum(fast.sequential["stages"]) == exact.samples
    assert exact.sequential is None
    for d in DROPS:
        assert allocate_by_drop(s, fast, d).sparsities == allocate_by_drop(s, exact, d).sparsities, d
    N = exact.samples
    for lf, le in zip(fast.layers, exact.layers):
        assert lf["name"] == le["name"]
        for acc, n, (lo, hi), true in zip(lf["accuracy"], lf["samples"], lf["interval"], le["accuracy"]):
            assert 0 < n <= N
            assert lo - 1e-9 <= true <= hi + 1e-9              # the interval holds the exact value
            assert lo - 1e-9 <= acc <= hi + 1e-9
            if n == N:
                assert acc == pytest.approx(true, abs=1e-9) and lo == pytest.approx(hi)
    # it evaluated fewer samples than the exact scan
    assert sum(n for l in fast.layers for n in l["samples"]) < N * len(SPARSITIES) * len(fast.layers)
    # the JSON keeps what each point used
    again = ScanResult.from_json(fast.to_json())
    assert again.layers[0]["samples"] == fast.layers[0]["samples"] and again.sequential == fast.sequential


def test_interval_and_decisions():
    assert interval(30, 40, 100) == (30.0, 90.0)
    assert interval(90, 100, 100) == (90.0, 90.0)
    assert states(*interval(95, 96, 100), 99.5, DROPS) == [0, 0, 0]     # 95..99 straddles 99, 98.5 and 97.5
    assert states(*interval(98, 99, 100), 99.5, DROPS) == [0, 0, 1]     # 98..99: within 2 for sure
    assert states(50.0, 60.0, 99.0, DROPS) == [-1, -1, -1]
    assert states(99.0, 99.0, 99.0, DROPS) == [1, 1, 1]
