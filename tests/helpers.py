"""Small assertions shared by the test modules."""
from __future__ import annotations

import torch


def bits(t: torch.Tensor) -> torch.Tensor:
    """Integer view of a tensor's bits (so +0.0 != -0.0 and NaN payloads compare)."""
    if t.is_floating_point():
        return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])
    return t


def assert_bit_identical(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and tuple(a[k].shape) == tuple(b[k].shape), k
        assert torch.equal(bits(a[k]), bits(b[k])), f"tensor {k} is not bit-identical"
