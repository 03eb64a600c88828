"""Fine-tuning with masks enforced: one-shot, iterative, AGP, best epoch, cancel, validation, recovery."""
from __future__ import annotations

import copy

import pytest
import torch

import explorer.core.train.finetune as ft
from explorer.core.errors import Cancelled, ExplorerError, PlanError
from explorer.core.jobs import CancelToken, Progress
from explorer.core.prune.plan import Plan
from explorer.core.session import Session
from explorer.core.train.evaluate import EvalResult, evaluate
from explorer.core.train.finetune import EpochRecord, FinetuneConfig, MaskEnforcer, finetune
from tests.helpers import assert_bit_identical

# ---------------------------------------------------------------------------- helpers


def clone_state(module_or_state) -> dict:
    sd = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) else module_or_state
    return {k: v.detach().clone() for k, v in sd.items()}


def model_copy(session: Session, state: dict) -> torch.nn.Module:
    m = copy.deepcopy(session.module)
    m.load_state_dict(state)
    return m


def uniform_plan(session: Session, sparsity: float, granularity: str = "element", names=None) -> Plan:
    """A fresh plan (nothing left over from earlier tests) with one setting for ``names``."""
    session.set_plan(Plan(), record=False)
    session.set_uniform(names or session.layer_names, sparsity, granularity)
    return session.plan


def zeros(state: dict, layer: str) -> int:
    return int((state[f"{layer}.weight"] == 0).sum())


def numel(state: dict, layer: str) -> int:
    return state[f"{layer}.weight"].numel()


def quick(**kw) -> FinetuneConfig:
    base = dict(epochs=1, max_batches=6)
    base.update(kw)
    return FinetuneConfig(**base)


class ZeroWatcher:
    """Forward pre-hooks (copied along with the module by finetune's deepcopy) that check, before every
    training forward -- i.e. after the previous optimizer step and mask enforcement -- that the pruned
    weights (and the BatchNorm/bias entries of pruned channels) are exactly zero."""

    def __init__(self, module: torch.nn.Module, masks: dict, aux: dict):
        self.checks = 0
        self.violations: list[str] = []
        mods = dict(module.named_modules())
        by_module: dict[str, list[tuple[str, torch.Tensor]]] = {}
        for key, m in masks.items():      # keyed by the weights' state_dict keys
            mod_name, _, attr = key.rpartition(".")
            by_module.setdefault(mod_name, []).append((attr, ~m))
        for pname, m in aux.items():
            mod_name, _, attr = pname.rpartition(".")
            by_module.setdefault(mod_name, []).append((attr, ~m))
        for mod_name, entries in by_module.items():
            mods[mod_name].register_forward_pre_hook(self._hook(mod_name, entries))

    def _hook(self, mod_name, entries):
        def hook(mod, inputs):
            if not mod.training:
                return
            self.checks += 1
            for attr, pruned in entries:
                p = getattr(mod, attr).detach()
                if pruned.shape != p.shape:       # per-channel mask of a multi-dim parameter
                    pruned = pruned.reshape((-1,) + (1,) * (p.dim() - 1)).expand_as(p)
                bad = (p != 0) & pruned
                if bool(bad.any()):
                    self.violations.append(f"{mod_name}.{attr}: {int(bad.sum())} pruned entries nonzero")
        return hook


# ---------------------------------------------------------------------------- masks enforced

def mixed_plan(session: Session) -> Plan:
    """channel on two convs (zeroes BatchNorm entries), element elsewhere."""
    session.set_plan(Plan(), record=False)
    session.set_uniform(["backbone.conv0", "backbone.conv3", "classifier"], 0.7, "element")
    session.set_uniform(["backbone.conv1", "backbone.conv2"], 0.5, "channel")
    return session.plan


def test_pruned_weights_and_bn_entries_stay_zero_after_every_step(cnn):
    plan = mixed_plan(cnn)
    masks, aux = cnn.materialize(plan)
    assert {"backbone.bn1.weight", "backbone.bn1.bias", "backbone.bn2.weight", "backbone.bn2.bias"} <= set(aux)
    # start from the dense weights: the enforcer itself has to zero them before the first step
    module = model_copy(cnn, cnn.original_state())
    watcher = ZeroWatcher(module, masks, aux)
    cfg = quick(epochs=2, max_batches=5)
    result = finetune(module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state, cfg)
    # one check per hooked module per training batch: 2 epochs x 5 batches x (5 layers + 2 BatchNorms)
    assert watcher.checks == 2 * 5 * (len(masks) + 2)
    assert watcher.violations == []
    # ... and after training (the state that is returned, and the snapshot)
    for state in (result.state, result.snapshots[-1].state):
        for name, m in masks.items():
            w = state[name]
            assert bool((w[~m] == 0).all()), name
            assert int((w == 0).sum()) == int((~m).sum()), f"{name}: unexpected extra zeros / pruned weights"
        for pname, m in aux.items():
            assert bool((state[pname][~m] == 0).all()), pname
            assert bool((state[pname][m] != 0).all()), f"{pname}: kept channels must stay alive"
    # channel-pruned: exactly half of the BatchNorm entries are zero
    assert int((result.state["backbone.bn1.weight"] == 0).sum()) == 16
    assert int((result.state["backbone.bn2.bias"] == 0).sum()) == 32


def test_zero_watcher_detects_a_missing_enforcer(cnn, monkeypatch):
    """The check above can fail: without MaskEnforcer.apply the pruned weights come back to life."""
    plan = uniform_plan(cnn, 0.7, "element")
    masks, aux = cnn.materialize(plan)
    module = model_copy(cnn, cnn.masked_state(plan))   # masked at the start, so only later steps can break it
    watcher = ZeroWatcher(module, masks, aux)
    monkeypatch.setattr(MaskEnforcer, "apply", lambda self: None)
    result = finetune(module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state, quick(max_batches=3))
    assert watcher.violations
    assert any(int((result.state[n][~m] != 0).sum()) > 0 for n, m in masks.items())


def test_linear_bias_of_pruned_channels_stays_zero(mlp):
    plan = uniform_plan(mlp, 0.5, "channel", ["fc1", "fc2"])
    masks, aux = mlp.materialize(plan)
    assert set(aux) == {"fc1.bias", "fc2.bias"}
    module = model_copy(mlp, mlp.original_state())
    assert bool((module.fc1.bias != 0).all())          # the dense biases are alive: zeroing is observable
    watcher = ZeroWatcher(module, masks, aux)
    result = finetune(module, mlp.dataset, mlp.layer_names, plan, plan, mlp.masks_for_state, quick(max_batches=4))
    assert watcher.checks > 0 and watcher.violations == []
    assert int((result.state["fc1.bias"] == 0).sum()) == 150
    assert int((result.state["fc2.bias"] == 0).sum()) == 50
    rows_zero = (result.state["fc1.weight"] == 0).all(dim=1)
    assert torch.equal(rows_zero, result.state["fc1.bias"] == 0)


def test_adam_keeps_masks_too(cnn):
    plan = uniform_plan(cnn, 0.6, "element")
    masks, _ = cnn.materialize(plan)
    module = model_copy(cnn, cnn.original_state())
    result = finetune(module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state,
                      quick(optimizer="adam", lr=1e-3, max_batches=4))
    for n, m in masks.items():
        assert int((result.state[n] == 0).sum()) == round(0.6 * m.numel()), n
        assert bool((result.state[n][~m] == 0).all()), n


# ---------------------------------------------------------------------------- schedules

def test_iterative_snapshots_rise_to_the_exact_target(cnn):
    target = uniform_plan(cnn, 0.8, "element")
    module = model_copy(cnn, cnn.original_state())     # start: dense
    result = finetune(module, cnn.dataset, cnn.layer_names, target, Plan(), cnn.masks_for_state,
                      quick(schedule="iterative", steps=3, max_batches=4, spacing="linear"))
    snaps = result.snapshots
    assert [s.label for s in snaps] == ["step 1/3", "step 2/3", "step 3/3"]
    sps = [s.sparsity for s in snaps]
    assert sps[0] < sps[1] < sps[2]
    for k, snap in enumerate(snaps, start=1):
        for n in cnn.layer_names:
            planned = snap.plan.get(n).sparsity
            assert planned == pytest.approx(0.8 * k / 3)
            # each snapshot keeps its own step's weights (not aliased by later steps)
            assert zeros(snap.state, n) == round(planned * numel(snap.state, n)), (snap.label, n)
    # the last step is exactly the target plan, counted as round(s * N) per layer
    for n in cnn.layer_names:
        assert zeros(snaps[-1].state, n) == round(0.8 * numel(snaps[-1].state, n))
        assert zeros(result.state, n) == round(0.8 * numel(result.state, n))
    assert result.plan == target
    assert [r.step for r in result.history] == [1, 2, 3]
    hist = [r.sparsity for r in result.history]
    assert hist == sorted(hist) and hist[-1] == pytest.approx(0.8, abs=1e-4)


def test_agp_rises_monotonically_and_ends_at_the_target(cnn):
    target = uniform_plan(cnn, 0.8, "element")
    module = model_copy(cnn, cnn.original_state())
    seen: list[float] = []

    def watch(mod, inputs):
        if mod.training:
            seen.append(ft.sparsity_of(mod, cnn.layer_names))
    module.register_forward_pre_hook(watch)
    records: list[EpochRecord] = []
    cfg = quick(schedule="agp", epochs=2, max_batches=6)
    result = finetune(module, cnn.dataset, cnn.layer_names, target, Plan(), cnn.masks_for_state, cfg,
                      progress=lambda p: records.append(p.data) if isinstance(p.data, EpochRecord) else None)
    assert len(seen) == 2 * 6
    assert seen == sorted(seen), "sparsity went down during AGP"
    assert seen[0] == 0.0                             # starts from the (dense) start plan
    assert len(set(seen)) > 3                          # and rises in several steps, not in one jump
    assert [r.sparsity for r in records] == sorted(r.sparsity for r in records)
    assert records[0].sparsity < 0.8
    assert records[-1].sparsity == pytest.approx(0.8, abs=1e-4)
    for n in cnn.layer_names:
        assert zeros(result.state, n) == round(0.8 * numel(result.state, n)), n
    assert result.plan == target
    # best epoch only among epochs at the final sparsity
    assert result.best_epoch in [r.epoch for r in records if r.sparsity == pytest.approx(0.8, abs=1e-4)]


def test_progress_records_one_epoch_record_per_epoch(cnn):
    plan = uniform_plan(cnn, 0.5, "element")
    got: list[Progress] = []
    result = finetune(model_copy(cnn, cnn.masked_state(plan)), cnn.dataset, cnn.layer_names, plan, plan,
                      cnn.masks_for_state, quick(epochs=3, max_batches=3), progress=got.append)
    recs = [p.data for p in got if p.data is not None]
    assert all(isinstance(r, EpochRecord) for r in recs)
    assert [r.epoch for r in recs] == [1, 2, 3]
    assert recs == result.history
    fr = [p.fraction for p in got]
    assert all(0.0 <= f <= 1.0 for f in fr) and fr == sorted(fr) and fr[-1] == pytest.approx(1.0)
    for r in recs:
        assert r.val_accuracy is not None and 0.0 <= r.val_accuracy <= 100.0
        assert r.train_loss > 0 and r.sparsity == pytest.approx(0.5, abs=1e-4)
    lrs = [r.lr for r in recs]
    assert lrs[0] > 0 and lrs == sorted(lrs, reverse=True)       # cosine schedule: the rate falls


def test_best_epoch_weights_are_kept(cnn, monkeypatch):
    """Scripted val accuracies 50, 90, 70: epoch 2's weights must come back, not the last epoch's."""
    plan = uniform_plan(cnn, 0.5, "element")
    scripted = iter([50.0, 90.0, 70.0])
    states: list[dict] = []

    def fake_evaluate(module, dataset, split="test", **kw):
        states.append(clone_state(module))
        return EvalResult(split, dataset.size(split), next(scripted), 0.1)
    monkeypatch.setattr(ft, "evaluate", fake_evaluate)
    result = finetune(model_copy(cnn, cnn.masked_state(plan)), cnn.dataset, cnn.layer_names, plan, plan,
                      cnn.masks_for_state, quick(epochs=3, max_batches=3))
    assert [r.val_accuracy for r in result.history] == [50.0, 90.0, 70.0]
    assert result.best_epoch == 2
    assert result.best_accuracy == 90.0
    assert len(states) == 3
    assert_bit_identical(result.state, states[1])
    assert not all(torch.equal(result.state[k], states[2][k]) for k in states[2])
    assert result.snapshots[-1].val_accuracy == 90.0


def test_seeded_runs_are_reproducible(cnn):
    plan = uniform_plan(cnn, 0.5, "element")
    start = cnn.masked_state(plan)
    a = finetune(model_copy(cnn, start), cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state,
                 quick(max_batches=3, seed=5))
    b = finetune(model_copy(cnn, start), cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state,
                 quick(max_batches=3, seed=5))
    c = finetune(model_copy(cnn, start), cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state,
                 quick(max_batches=3, seed=6))
    assert_bit_identical(a.state, b.state)
    assert not all(torch.equal(a.state[k], c.state[k]) for k in a.state)


# ---------------------------------------------------------------------------- cancel / copy

def test_finetune_works_on_a_copy(cnn):
    plan = uniform_plan(cnn, 0.5, "element")
    module = model_copy(cnn, cnn.masked_state(plan))
    module.eval()
    before = clone_state(module)
    result = finetune(module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state, quick(max_batches=3))
    assert_bit_identical(clone_state(module), before)
    assert not module.training
    assert not all(torch.equal(result.state[k], before[k]) for k in before)   # training did change the copy


def test_cancel_raises_and_leaves_the_module_unchanged(cnn):
    plan = uniform_plan(cnn, 0.5, "element")
    module = model_copy(cnn, cnn.original_state())
    before = clone_state(module)
    token = CancelToken()
    calls = []

    def progress(p):
        calls.append(p)
        if len(calls) == 2:          # mid-epoch (after a few optimizer steps)
            token.cancel()
    with pytest.raises(Cancelled):
        finetune(module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state, quick(max_batches=8),
                 progress=progress, cancel=token)
    assert_bit_identical(clone_state(module), before)


def test_cancel_in_step_two_keeps_the_finished_step(cnn):
    target = uniform_plan(cnn, 0.6, "element")
    module = model_copy(cnn, cnn.original_state())
    before = clone_state(module)
    token = CancelToken()
    partial: dict = {}

    def progress(p):
        if p.message.startswith("fine-tuning: step 2/"):
            token.cancel()
    with pytest.raises(Cancelled):
        finetune(module, cnn.dataset, cnn.layer_names, target, Plan(), cnn.masks_for_state,
                 quick(schedule="iterative", steps=3, max_batches=4, spacing="linear"), progress=progress,
                 cancel=token,
                 partial=partial)
    snaps = partial["snapshots"]
    assert [s.label for s in snaps] == ["step 1/3"]
    for n in cnn.layer_names:
        planned = snaps[0].plan.get(n).sparsity
        assert planned == pytest.approx(0.2)
        assert zeros(snaps[0].state, n) == round(planned * numel(snaps[0].state, n)), n
    assert_bit_identical(clone_state(module), before)
    # the snapshot can be returned to through the session
    s = Session.open("digits-cnn")
    s.set_base(snaps[0].state, "step 1")
    s.apply(snaps[0].plan)
    assert_bit_identical(clone_state(s.module), snaps[0].state)


def test_iterative_snapshots_can_be_returned_to_through_the_history():
    """What the window does with the snapshots: record each step, then restore any of them exactly."""
    s = Session.open("digits-cnn")
    target = uniform_plan(s, 0.6, "element")
    result = finetune(model_copy(s, s.original_state()), s.dataset, s.layer_names, target, Plan(),
                      s.masks_for_state, quick(schedule="iterative", steps=2, max_batches=3, spacing="linear"))
    assert len(result.snapshots) == 2
    for snap in result.snapshots:
        s.set_base(snap.state, f"fine-tuned ({snap.label})")
        s.apply(snap.plan)
        s.results.record(snap.label, accuracy=snap.val_accuracy)
    assert [e.label for e in s.history] == ["step 1/2", "step 2/2"]
    assert s.history[0].sparsity == pytest.approx(0.3, abs=1e-3)
    assert s.history[1].sparsity == pytest.approx(0.6, abs=1e-3)
    assert s.history[0].compression_ratio < s.history[1].compression_ratio
    s.results.restore(s.history[0])
    assert_bit_identical(clone_state(s.module), result.snapshots[0].state)
    assert s.applied_plan == result.snapshots[0].plan
    s.results.restore(s.history[1])
    assert_bit_identical(clone_state(s.module), result.snapshots[1].state)
    assert s.applied_plan == target


# ---------------------------------------------------------------------------- validation

@pytest.mark.parametrize("bad", [dict(epochs=0), dict(lr=-1.0), dict(lr=0.0), dict(lr=float("nan")),
                                 dict(optimizer="rmsprop"), dict(schedule="cyclic"), dict(steps=0),
                                 dict(batch_size=0)],
                         ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_bad_config_is_a_plan_error(cnn, bad):
    plan = uniform_plan(cnn, 0.5, "element")
    module = model_copy(cnn, cnn.masked_state(plan))
    with pytest.raises(PlanError):
        finetune(module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state, FinetuneConfig(**bad))
    with pytest.raises(PlanError):
        FinetuneConfig(**bad).validated()


def test_valid_configs_pass_validation():
    for cfg in (FinetuneConfig(), FinetuneConfig(optimizer="adam", schedule="agp"),
                FinetuneConfig(schedule="iterative", steps=4, epochs=1, lr=1e-4, batch_size=1)):
        assert cfg.validated() == cfg


def test_unlabelled_dataset_is_refused():
    s = Session.open("digits-cnn", "synthetic")
    assert not s.dataset.has_labels
    s.set_uniform(s.layer_names, 0.5, "element")
    plan = s.plan
    with pytest.raises(ExplorerError, match="labels"):
        finetune(s.module, s.dataset, s.layer_names, plan, plan, s.masks_for_state, quick())


# ---------------------------------------------------------------------------- recovery (the "done")

def test_digits_cnn_at_80_percent_recovers_within_one_point():
    """80% element sparsity, 3 epochs with the CLI defaults (SGD lr 0.01, batch 32, cosine) -> within 1 point of
    the dense test accuracy (99.72%)."""
    s = Session.open("digits-cnn")
    dense = evaluate(s.module, s.dataset, "test").accuracy
    assert dense == pytest.approx(99.72, abs=0.01)
    cfg = FinetuneConfig()
    assert (cfg.epochs, cfg.lr, cfg.optimizer, cfg.batch_size, cfg.cosine) == (3, 0.01, "sgd", 32, True)
    s.set_uniform(s.layer_names, 0.8, "element")
    plan = s.plan
    s.apply(plan)
    pruned = evaluate(s.module, s.dataset, "test").accuracy
    assert pruned < dense - 1.0                         # the pruning really hurt before fine-tuning
    records = []
    result = finetune(s.module, s.dataset, s.layer_names, plan, plan, s.masks_for_state, cfg,
                      progress=lambda p: records.append(p.data) if p.data is not None else None)
    assert len(records) == 3
    vals = [r.val_accuracy for r in result.history]
    assert result.best_accuracy == max(vals)
    assert result.best_epoch == 1 + vals.index(max(vals))
    s.set_base(result.state, "fine-tuned")
    s.apply(result.plan)
    assert_bit_identical(clone_state(s.module), result.state)   # re-applying the plan changes nothing
    # the kept weights are the best epoch's
    assert evaluate(s.module, s.dataset, "val").accuracy == pytest.approx(result.best_accuracy)
    for n in s.layer_names:
        assert zeros(result.state, n) == round(0.8 * numel(result.state, n))
    tuned = evaluate(s.module, s.dataset, "test").accuracy
    assert tuned >= dense - 1.0, f"fine-tuned {tuned:.2f}% vs dense {dense:.2f}%"


@pytest.mark.parametrize("criterion", ["random", "taylor", "l1"])
def test_reapplying_the_plan_after_finetuning_keeps_the_trained_mask(criterion):
    """Zero weights rank first under every criterion, so Apply on fine-tuned weights reproduces them."""
    s = Session.open("digits-cnn")
    s.set_uniform(s.layer_names, 0.6, "element", criterion)
    s.apply()
    r = finetune(s.module, s.dataset, s.layer_names, s.plan, s.plan, s.masks_for_state, FinetuneConfig(epochs=1))
    s.results.adopt(r.state, s.plan, "fine-tuned")
    adopted = {k: v.clone() for k, v in s.module.state_dict().items()}
    s.apply(s.plan)                      # rankings rebuilt on the fine-tuned weights
    assert_bit_identical(adopted, {k: v for k, v in s.module.state_dict().items()})
    assert s.totals().sparsity == pytest.approx(0.6, abs=1e-3)
