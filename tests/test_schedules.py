"""Pruning schedules (issue 15): the sparsity sequences (geometric steps, user-chosen steps, AGP's cubic), the
learning-rate phases (rewinding), pruned weights and their optimizer state at zero with SGD and Adam, the
records a chart needs (dip after each pruning step), and recipes that replay every schedule bit for bit."""
from __future__ import annotations

import json
import math

import pytest
import torch

import explorer.core.train.finetune as ft
from explorer import cli
from explorer.core.errors import PlanError
from explorer.core.prune.plan import LayerPlan, Plan
from explorer.core.train.evaluate import evaluate, evaluate_recalibrated
from explorer.core.train.finetune import EpochRecord, FinetuneConfig, MaskEnforcer, finetune
from explorer.core.train.masking import optimizer_state_nonzero
from explorer.core.train.schedules import (
    agp_fraction,
    agp_timetable,
    iterative_plans,
    lr_phases,
    overall_sparsity,
    plan_at,
)
from tests.helpers import assert_bit_identical
from tests.test_finetune import model_copy, numel, quick, uniform_plan, zeros

# ---------------------------------------------------------------------------- the sequences, pinned


def uniform(names, s):
    return Plan({n: LayerPlan(s) for n in names})


def test_geometric_steps_remove_the_same_share_of_what_is_left():
    names = ["a", "b"]
    plans = iterative_plans(uniform(names, 0.95), Plan(), 3, "geometric")
    seq = [p.get("a").sparsity for p in plans]
    # keep ratio 0.05 ** (j/3): 36.84 %, 13.57 %, 5 % of the weights
    assert seq == pytest.approx([0.63159685, 0.86427912, 0.95], abs=1e-8)
    assert seq[-1] == 0.95                                       # the target exactly, not via exp(log(.))
    kept = [1.0] + [1 - s for s in seq]
    shares = [1 - b / a for a, b in zip(kept, kept[1:])]
    assert shares == pytest.approx([shares[0]] * 3, rel=1e-9)    # every step removes 63.2 % of the survivors
    assert all(p.get("b").sparsity == p.get("a").sparsity for p in plans)


def test_linear_steps_are_equal_in_sparsity():
    plans = iterative_plans(uniform(["a"], 0.95), Plan(), 3, "linear")
    assert [p.get("a").sparsity for p in plans] == pytest.approx([0.95 / 3, 2 * 0.95 / 3, 0.95])
    # ... and their last step removes 86 % of the weights that survived step 2 (the cause)
    assert 1 - 0.05 / (1 - 2 * 0.95 / 3) == pytest.approx(0.8636, abs=1e-4)


def test_geometric_steps_of_a_per_layer_plan_and_from_a_sparse_start():
    target = Plan({"a": LayerPlan(0.9), "b": LayerPlan(0.6)})
    start = Plan({"a": LayerPlan(0.5)})
    plans = iterative_plans(target, start, 2, "geometric")
    # a: keep 0.5 -> sqrt(0.5 * 0.1) -> 0.1; b: keep 1 -> sqrt(0.4) -> 0.4
    assert plans[0].get("a").sparsity == pytest.approx(1 - math.sqrt(0.05))
    assert plans[0].get("b").sparsity == pytest.approx(1 - math.sqrt(0.4))
    assert plans[1] == target


def test_user_chosen_steps_land_on_the_levels_and_end_at_the_plan():
    sizes = {"a": 100, "b": 300}
    plans = iterative_plans(uniform(["a", "b"], 0.95), Plan(), 0, levels=(0.5, 0.8, 0.9), sizes=sizes)
    assert [p.get("a").sparsity for p in plans] == [0.5, 0.8, 0.9, 0.95]
    assert [p.get("b").sparsity for p in plans] == [0.5, 0.8, 0.9, 0.95]
    # a per-layer plan: the overall sparsity (weighted by layer size) follows the levels
    target = Plan({"a": LayerPlan(0.7), "b": LayerPlan(0.95)})
    plans = iterative_plans(target, Plan(), 0, levels=(0.5, 0.8), sizes=sizes)
    assert [overall_sparsity(p, sizes) for p in plans[:2]] == pytest.approx([0.5, 0.8], abs=0.02)
    assert plans[-1] == target and len(plans) == 3
    with pytest.raises(PlanError, match="above"):
        iterative_plans(uniform(["a", "b"], 0.8), Plan(), 0, levels=(0.5, 0.9), sizes=sizes)


def test_agp_timetable_follows_the_cubic():
    tt = agp_timetable(total=480, end=0.5, updates=10)       # 12 epochs x 40 batches: pruning over 240 batches
    its = [it for it, _ in tt.updates]
    assert its == list(range(24, 241, 24))
    for it, frac in tt.updates:
        assert frac == pytest.approx(1 - (1 - it / 240) ** 3)
    assert tt.updates[0][1] == pytest.approx(0.271) and tt.updates[4][1] == pytest.approx(0.875)
    assert tt.updates[-1] == (240, 1.0) and tt.end_iteration == 240
    # 90 % target: the sparsity after each update
    assert [round(0.9 * f, 4) for _, f in tt.updates] == [0.2439, 0.4392, 0.5913, 0.7056, 0.7875, 0.8424, 0.8757,
                                                          0.8928, 0.8991, 0.9]
    assert agp_fraction(0.0) == 0.0 and agp_fraction(0.25, 0.5) == pytest.approx(0.875) and agp_fraction(0.7) == 1.0


def test_agp_timetable_reaches_the_target_before_the_last_batch():
    for total in (2, 7, 13, 40, 101):
        for end in (0.1, 0.5, 0.9):
            tt = agp_timetable(total, end, 10)
            assert tt.updates[-1][1] == 1.0 and 1 <= tt.end_iteration <= total - 1
            fr = [f for _, f in tt.updates]
            assert fr == sorted(fr)


def test_learning_rate_phases():
    assert lr_phases("iterative", 3, 2, 10, rewind=True) == [(0, 20, True), (20, 20, True), (40, 20, True)]
    assert lr_phases("iterative", 3, 2, 10, rewind=False) == [(0, 60, True)]
    assert lr_phases("agp", 1, 4, 10, rewind=True, agp_end_iteration=20) == [(0, 20, False), (20, 20, True)]
    assert lr_phases("agp", 1, 4, 10, rewind=False, agp_end_iteration=20) == [(0, 40, True)]
    assert lr_phases("oneshot", 1, 4, 10, rewind=True) == [(0, 40, True)]


def test_plan_at_ends_and_granularity_change():
    target = Plan({"a": LayerPlan(0.8, "channel"), "b": LayerPlan(0.6)})
    start = Plan({"a": LayerPlan(0.5), "b": LayerPlan(0.2)})
    assert plan_at(target, start, 1.0, "geometric") == target
    half = plan_at(target, start, 0.5, "linear")
    assert half.get("a").sparsity == pytest.approx(0.4)       # element -> channel starts from dense
    assert half.get("b").sparsity == pytest.approx(0.4)


# ---------------------------------------------------------------------------- the schedules in a run


def test_iterative_run_prunes_along_the_geometric_steps(cnn):
    target = uniform_plan(cnn, 0.9, "element")
    result = finetune(model_copy(cnn, cnn.original_state()), cnn.dataset, cnn.layer_names, target, Plan(),
                      cnn.masks_for_state, quick(schedule="iterative", steps=3, max_batches=3))
    expected = [1 - 0.1 ** (1 / 3), 1 - 0.1 ** (2 / 3), 0.9]
    for snap, s in zip(result.snapshots, expected):
        for n in cnn.layer_names:
            assert snap.plan.get(n).sparsity == pytest.approx(s)
            assert zeros(snap.state, n) == round(snap.plan.get(n).sparsity * numel(snap.state, n))
    recs = result.history
    assert [r.step_sparsity is not None for r in recs] == [True, True, True]
    assert [r.mask_updates for r in recs] == [1, 1, 1]
    assert recs[0].sparsity_before == 0.0
    for a, b in zip(recs, recs[1:]):
        assert b.sparsity_before == a.sparsity
    for r in recs:       # the dip: just pruned (BatchNorm statistics re-estimated), before training
        assert r.pruned_accuracy is not None and r.step_sparsity == pytest.approx(r.sparsity)


def test_agp_run_follows_its_timetable_batch_by_batch(mlp):
    target = uniform_plan(mlp, 0.9, "element")
    module = model_copy(mlp, mlp.original_state())
    seen: list[float] = []
    module.register_forward_pre_hook(lambda m, i: seen.append(ft.sparsity_of(m, mlp.layer_names))
                                     if m.training else None)
    cfg = quick(schedule="agp", epochs=2, max_batches=10, agp_end=0.5, agp_updates=5)
    result = finetune(module, mlp.dataset, mlp.layer_names, target, Plan(), mlp.masks_for_state, cfg)
    tt = agp_timetable(20, 0.5, 5)
    assert [it for it, _ in tt.updates] == [2, 4, 6, 8, 10]
    sizes = {n: numel(result.state, n) for n in mlp.layer_names}
    expected, frac = [], 0.0
    upd = dict(tt.updates)
    for it in range(20):
        frac = upd.get(it, frac)
        expected.append(sum(round(0.9 * frac * sizes[n]) for n in sizes) / sum(sizes.values()))
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[10:] == [pytest.approx(0.9, abs=1e-4)] * 10          # the recovery phase at the target
    assert [r.mask_updates for r in result.history] == [1 + 4, 1]   # start + 4 updates, then the last one
    assert result.best_epoch == 2


@pytest.mark.parametrize("rewind", [True, False])
def test_learning_rate_rewinding_in_records(cnn, rewind):
    target = uniform_plan(cnn, 0.6, "element")
    r = finetune(model_copy(cnn, cnn.original_state()), cnn.dataset, cnn.layer_names, target, Plan(),
                 cnn.masks_for_state, quick(schedule="iterative", steps=2, epochs=2, max_batches=3, lr=0.02,
                                            rewind=rewind))
    lrs = [rec.lr for rec in r.history]
    if rewind:     # each step starts again at the initial rate
        assert lrs[0] == lrs[2] == 0.02 and lrs[1] < 0.02
    else:          # one cosine over the run
        assert lrs == sorted(lrs, reverse=True) and len(set(lrs)) == 4


def test_agp_with_rewinding_prunes_at_the_full_rate_then_restarts(cnn):
    target = uniform_plan(cnn, 0.6, "element")
    r = finetune(model_copy(cnn, cnn.original_state()), cnn.dataset, cnn.layer_names, target, Plan(),
                 cnn.masks_for_state, quick(schedule="agp", epochs=4, max_batches=3, lr=0.02, agp_end=0.5))
    lrs = [rec.lr for rec in r.history]
    assert lrs[0] == lrs[1] == 0.02          # pruning phase: constant
    assert lrs[2] == 0.02 and lrs[3] < 0.02  # recovery: the schedule from the top


# ---------------------------------------------------------------------------- zeros, weights and optimizer state


class StateWatcher:
    """Before every training forward (after the previous step and mask enforcement): the pruned weights and the
    optimizer's state of them are exactly zero. The optimizers are caught as finetune creates them."""

    def __init__(self, monkeypatch, module, masks: dict):
        self.opts: list = []
        self.params: dict = {}
        self.checks = 0
        self.weight_violations = 0
        self.state_violations = 0
        self.masks = masks
        real = ft._optimizer

        def spy(cfg, params):
            o = real(cfg, params)
            self.opts.append(o)
            return o
        monkeypatch.setattr(ft, "_optimizer", spy)
        mods = dict(module.named_modules())
        for name in masks:
            mods[name.rpartition(".")[0]].register_forward_pre_hook(self._hook(name))

    def _hook(self, name):
        def hook(mod, inputs):
            if not mod.training or not self.opts:
                return
            pruned = ~self.masks[name]
            self.params[name] = mod.weight          # the training copy's parameter
            self.checks += 1
            self.weight_violations += int((mod.weight.detach()[pruned] != 0).sum())
            self.state_violations += optimizer_state_nonzero(self.opts[-1], mod.weight, pruned)
        return hook

    def kept_state_nonzero(self) -> int:
        opt = self.opts[-1]
        return sum(optimizer_state_nonzero(opt, p, self.masks[n]) for n, p in self.params.items())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_and_optimizer_state_stay_zero(cnn, monkeypatch, optimizer):
    plan = uniform_plan(cnn, 0.7, "element")
    masks, _ = cnn.materialize(plan)
    module = model_copy(cnn, cnn.original_state())            # dense: the enforcer zeroes them itself
    w = StateWatcher(monkeypatch, module, masks)
    result = finetune(module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state,
                      quick(optimizer=optimizer, lr=0.01 if optimizer == "sgd" else 1e-3, epochs=2, max_batches=4))
    assert w.checks == 2 * 4 * len(masks)
    assert w.weight_violations == 0 and w.state_violations == 0
    # the state exists and is nonzero where weights are kept (so the zeros above are not vacuous)
    assert w.kept_state_nonzero() > 1000
    for n, m in masks.items():
        assert bool((result.state[n][~m] == 0).all())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_state_of_weights_pruned_mid_run_is_zeroed(mlp, monkeypatch, optimizer):
    """AGP prunes while training: momentum / moment estimates built up before a weight was pruned are wiped."""
    target = uniform_plan(mlp, 0.8, "element")
    module = model_copy(mlp, mlp.original_state())
    seen = {"checks": 0, "bad": 0}
    opts: list = []
    real = ft._optimizer
    monkeypatch.setattr(ft, "_optimizer", lambda cfg, params: opts.append(real(cfg, params)) or opts[-1])

    def hook(mod, inputs):
        if not mod.training or not opts:
            return
        for name in mlp.layer_names:
            p = getattr(mod, name).weight
            pruned = p.detach() == 0
            seen["checks"] += 1
            seen["bad"] += optimizer_state_nonzero(opts[-1], p, pruned)
    module.register_forward_pre_hook(hook)
    finetune(module, mlp.dataset, mlp.layer_names, target, Plan(), mlp.masks_for_state,
             quick(schedule="agp", optimizer=optimizer, lr=0.01, epochs=2, max_batches=8, rewind=False))
    assert seen["checks"] > 0 and seen["bad"] == 0


def test_state_check_detects_an_enforcer_that_leaves_the_state(cnn, monkeypatch):
    """The check above can fail: an enforcer that zeroes only the weights leaves momentum at pruned entries."""
    plan = uniform_plan(cnn, 0.7, "element")
    masks, _ = cnn.materialize(plan)
    module = model_copy(cnn, cnn.masked_state(plan))

    @torch.no_grad()
    def weights_only(self):
        for p, pruned in self.pairs:
            p.masked_fill_(pruned, 0.0)
    monkeypatch.setattr(MaskEnforcer, "apply", weights_only)
    w = StateWatcher(monkeypatch, module, masks)
    finetune(module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state, quick(max_batches=3))
    assert w.weight_violations == 0 and w.state_violations > 0


# ---------------------------------------------------------------------------- BatchNorm after a mask change


def test_recalibrated_evaluation_leaves_the_module_as_it_was(cnn):
    plan = uniform_plan(cnn, 0.8, "element")
    m = model_copy(cnn, cnn.masked_state(plan))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    stale = evaluate(m, cnn.dataset, "val").accuracy
    fresh = evaluate_recalibrated(m, cnn.dataset, "val").accuracy
    assert_bit_identical({k: v for k, v in m.state_dict().items()}, before)
    assert fresh > stale + 20     # the stored statistics describe the dense weights (stale: chance level)


# ---------------------------------------------------------------------------- config and recipes


def test_new_settings_are_validated():
    for bad in (dict(spacing="cubic"), dict(step_sparsities=(0.5, 0.4)), dict(step_sparsities=(1.2,)),
                dict(agp_end=0.0), dict(agp_end=1.0), dict(agp_updates=0)):
        with pytest.raises(PlanError):
            FinetuneConfig(**bad).validated()
    assert FinetuneConfig(step_sparsities=[0.5, 0.8]).validated().step_sparsities == (0.5, 0.8)


def test_a_recipe_from_before_the_schedules_replays_its_old_schedule():
    old = {"epochs": 2, "lr": 0.01, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32,
           "cosine": True, "seed": 0, "schedule": "iterative", "steps": 3, "eval_split": "val", "max_batches": None}
    cfg = FinetuneConfig.from_recorded(old)
    assert (cfg.spacing, cfg.rewind, cfg.agp_end) == ("linear", True, 0.75)
    agp = FinetuneConfig.from_recorded(dict(old, schedule="agp"))
    assert (agp.rewind, agp.agp_end, agp.agp_updates) == (False, 0.75, 10)
    new = FinetuneConfig(schedule="iterative", steps=3)
    assert FinetuneConfig.from_recorded(json.loads(json.dumps(new.as_dict()))) == new
    with pytest.raises(PlanError, match="unknown"):
        FinetuneConfig.from_recorded(dict(old, momentun=0.9))


def assert_same_model(pa, pb) -> None:
    """Bit-identical tensors, same keys in the same order (the files' bytes differ only by their zip-internal
    archive name, which comes from the temporary file an atomic write uses)."""
    a = torch.load(pa, map_location="cpu", weights_only=True)
    b = torch.load(pb, map_location="cpu", weights_only=True)
    assert list(a) == list(b)
    assert_bit_identical(a, b)


SCHEDULE_ARGS = {
    "oneshot": [],
    "iterative-geometric": ["--iterative-steps", "3"],
    "iterative-levels-adam": ["--step-sparsities", "0.5,0.8", "--optimizer", "adam"],
    "iterative-linear-norewind": ["--iterative-steps", "2", "--spacing", "linear", "--no-rewind"],
    "agp": ["--schedule", "agp", "--agp-end", "0.4"],
    "agp-adam": ["--schedule", "agp", "--optimizer", "adam", "--agp-updates", "4"],
}


@pytest.mark.parametrize("name", list(SCHEDULE_ARGS))
def test_recipe_replays_each_schedule_bit_for_bit(tmp_path, name):
    a, b = tmp_path / "A", tmp_path / "B"
    assert cli.main(["prune", "--model", "digits-mlp", "--sparsity", "0.9", "--finetune-epochs", "2",
                     *SCHEDULE_ARGS[name], "--no-latency", "--out", str(a)]) == 0
    recipe = json.loads((a / "recipe.json").read_text())
    assert cli.main(["prune", "--model", "digits-mlp", "--recipe", str(a / "recipe.json"), "--no-latency",
                     "--out", str(b)]) == 0
    assert_same_model(a / "model.pt", b / "model.pt")
    f = recipe["finetune"]
    cfg = FinetuneConfig.from_recorded(f)
    if name.startswith("iterative"):
        assert f["schedule"] == "iterative"
    if name == "iterative-levels-adam":
        assert f["step_sparsities"] == [0.5, 0.8] and cfg.optimizer == "adam" and cfg.lr == 1e-2
    if name == "iterative-linear-norewind":
        assert (f["spacing"], f["rewind"]) == ("linear", False)
    if name == "agp":
        assert f["agp_end"] == 0.4 and f["optimizer"] == "adam"     # digits-mlp's default optimizer
    sd = torch.load(a / "model.pt", weights_only=True)
    for n in ("fc1", "fc2", "fc3"):
        assert int((sd[f"{n}.weight"] == 0).sum()) == round(0.9 * sd[f"{n}.weight"].numel())


def test_cnn_agp_recipe_replays_bit_for_bit(tmp_path):
    """The brief's form on the default model: prune ... --out A, then prune --recipe A/recipe.json --out B."""
    a, b = tmp_path / "A", tmp_path / "B"
    assert cli.main(["prune", "--sparsity", "0.9", "--finetune-epochs", "2", "--schedule", "agp", "--no-latency",
                     "--out", str(a)]) == 0
    assert cli.main(["prune", "--recipe", str(a / "recipe.json"), "--no-latency", "--out", str(b)]) == 0
    assert_same_model(a / "model.pt", b / "model.pt")
    f = json.loads((a / "recipe.json").read_text())["finetune"]
    assert (f["schedule"], f["optimizer"], f["lr"], f["agp_end"], f["rewind"]) == ("agp", "sgd", 0.05, 0.5, True)


def test_schedule_settings_without_finetuning_exit_2(tmp_path, capsys):
    for argv in (["--spacing", "linear"], ["--step-sparsities", "0.5"], ["--agp-end", "0.3"], ["--no-rewind"]):
        rc = cli.main(["prune", "--model", "digits-mlp", "--sparsity", "0.5", *argv, "--no-latency",
                       "--out", str(tmp_path / "o")])
        assert rc == 2
        assert "--finetune-epochs" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [(["--step-sparsities", "0.5,x"], "comma-separated"),
                                        (["--step-sparsities", "0.5,0.95"], "above"),
                                        (["--step-sparsities", "0.5", "--schedule", "agp"], "iterative"),
                                        (["--schedule", "agp", "--agp-end", "1.5"], "strictly between")])
def test_bad_schedule_settings_exit_2(tmp_path, capsys, argv, match):
    rc = cli.main(["prune", "--model", "digits-mlp", "--sparsity", "0.9", "--finetune-epochs", "1", *argv,
                   "--no-latency", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "Traceback" not in err


def test_epoch_records_survive_as_dicts():
    r = EpochRecord(epoch=1, step=1, train_loss=0.5, val_accuracy=90.0, val_loss=0.3, sparsity=0.5, lr=0.01,
                    seconds=0.1, sparsity_before=0.0, step_sparsity=0.5, pruned_accuracy=40.0, mask_updates=1)
    assert r.as_dict()["pruned_accuracy"] == 40.0 and r.as_dict()["step_sparsity"] == 0.5
