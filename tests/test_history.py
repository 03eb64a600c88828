"""The History keeps the weights to return to, within a memory budget (issue 16: every fine-tune used to keep
a full copy of the model in memory until the model was reloaded)."""
from __future__ import annotations

import torch

from explorer.core.history import WeightStore, state_bytes
from explorer.core.prune.plan import LayerPlan, Plan
from tests.helpers import assert_bit_identical


def _state(seed: int, n: int = 65536) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(n, generator=g), "b": torch.randn(16, generator=g)}


def test_weight_store_keeps_its_budget_and_loads_spilled_states_back():
    size = state_bytes(_state(0))
    store = WeightStore(budget_bytes=int(2.5 * size))
    pinned = store.add(_state(99), pinned=True)
    ids = [store.add(_state(i)) for i in range(6)]
    assert store.memory_bytes <= store.budget
    mem, disk = store.counts
    assert mem == 2 and disk == 4 and store.disk_bytes == 4 * size
    for i in (0, 3, 5, 1):                        # any state comes back bit for bit, spilled or not
        assert_bit_identical(store.get(ids[i]), _state(i))
        assert store.memory_bytes <= store.budget
    assert_bit_identical(store.get(pinned), _state(99))   # pinned: never spilled, never counted
    folder = store._dir
    assert folder is not None and any(folder.iterdir())
    store.clear()
    assert not folder.exists() and store.counts == (0, 0)


def test_live_state_is_not_spilled_or_counted():
    size = state_bytes(_state(0))
    store = WeightStore(budget_bytes=size)
    a, b = store.add(_state(1)), store.add(_state(2))
    store.use(b)
    assert store.memory_bytes <= size and b not in store._disk
    store.use(a)
    assert store.get(a) is store.get(a)          # the live one stays in memory


def test_session_fine_tune_states_are_bounded_and_can_be_returned_to(cnn):
    s = cnn
    s.weights.budget = state_bytes(s.original_state())     # room for one extra state in memory
    plan = Plan({"backbone.conv2": LayerPlan(0.5)})
    entries, states = [], []
    for i in range(5):                            # five "fine-tunes", each a new set of kept weights
        st = {k: v.clone() for k, v in s.masked_state(plan).items()}
        st["classifier.bias"] = st["classifier.bias"] + (i + 1)
        s.results.adopt(st, plan, f"fine-tuned {i}")
        entries.append(s.results.record(f"step {i}", accuracy=float(i)))
        states.append(st)
    mem, disk = s.weights.counts
    assert s.weights.memory_bytes <= s.weights.budget and disk >= 2
    for i in (0, 2, 4):                           # returning to an early state loads its weights from disk
        s.results.restore(entries[i])
        assert s.base_label == f"fine-tuned {i}"
        assert_bit_identical(s.module.state_dict(), states[i])
    assert s.weights.memory_bytes <= s.weights.budget
    s.apply_load(s.result)                        # a new model: the store is emptied
    assert s.weights.counts == (0, 0)
