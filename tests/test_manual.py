"""Pruning by hand: the manual criterion, its recipe form and its exact replay."""
from __future__ import annotations

import json

import pytest
import torch

from explorer.cli import main
from explorer.core.errors import PlanError
from explorer.core.prune.plan import LayerPlan, Plan
from explorer.core.prune.recipe import plan_to_recipe, recipe_to_plan
from explorer.core.train.schedules import plan_at
from tests.helpers import assert_bit_identical


def live_rows(state, name):
    w = state[f"{name}.weight"]
    return [i for i in range(w.shape[0]) if bool(w[i].abs().sum() > 0)]


def test_manual_channels_prune_exactly_those(cnn):
    cnn.editor.set_manual("backbone.conv1", [9, 0, 5, 5])
    lp = cnn.plan.get("backbone.conv1")
    assert lp.criterion == "manual" and lp.units == (0, 5, 9)
    assert lp.sparsity == pytest.approx(3 / 32)
    st = cnn.masked_state()
    assert set(range(32)) - set(live_rows(st, "backbone.conv1")) == {0, 5, 9}
    bn = st["backbone.bn1.weight"]      # the channels' BatchNorm entries go with them
    assert [i for i in range(32) if bn[i] == 0] == [0, 5, 9]
    assert cnn.layer_counts("backbone.conv1").nonzero == 29 * 32 * 9
    # the recipe entry is exactly the form
    entry = plan_to_recipe(cnn.plan, "digits-cnn")["layers"]["backbone.conv1"]
    assert entry == {"sparsity": 3 / 32, "granularity": "channel", "criterion": "manual", "channels": [0, 5, 9]}


def test_toggle_restores_a_channel_the_criterion_pruned_and_undo(cnn):
    cnn.set_layer("backbone.conv2", 0.5, "channel")
    before = cnn.editor.manual_units("backbone.conv2", "channel")
    assert len(before) == 32
    victim = before[3]
    assert cnn.editor.toggle_manual("backbone.conv2", victim) is False     # restored
    lp = cnn.plan.get("backbone.conv2")
    assert lp.is_manual and victim not in lp.units and len(lp.units) == 31
    kept = next(c for c in range(64) if c not in before)
    assert cnn.editor.toggle_manual("backbone.conv2", kept) is True          # pruned by hand
    assert kept in cnn.plan.get("backbone.conv2").units
    assert cnn.undo() and cnn.undo()
    assert cnn.plan.get("backbone.conv2") == LayerPlan(0.5, "channel", "l1")
    assert cnn.redo()
    assert cnn.plan.get("backbone.conv2").units == tuple(u for u in before if u != victim)
    # a slider edit leaves the hand-made choice for a ranked one
    cnn.set_layer("backbone.conv2", 0.25)
    assert cnn.plan.get("backbone.conv2") == LayerPlan(0.25, "channel", "l1")


def test_kernels_and_weights(cnn):
    cnn.editor.toggle_manual("backbone.conv2", (1, 2), "kernel")
    cnn.editor.toggle_manual("backbone.conv2", (3, 4), "kernel")
    w = cnn.masked_state()["backbone.conv2.weight"]
    zero = [(o, i) for o in range(64) for i in range(32) if bool((w[o, i] == 0).all())]
    assert zero == [(1, 2), (3, 4)]
    cnn.editor.toggle_manual("classifier", (4, 17), "element")
    cnn.editor.toggle_manual("classifier", (0, 255), "element")
    w = cnn.masked_state()["classifier.weight"]
    assert [tuple(x) for x in torch.nonzero(w == 0).tolist()] == [(0, 255), (4, 17)]
    d = plan_to_recipe(cnn.plan, "digits-cnn")["layers"]
    assert d["backbone.conv2"]["kernels"] == [[1, 2], [3, 4]]
    assert d["classifier"]["weights"] == [[0, 255], [4, 17]]
    assert recipe_to_plan(json.loads(json.dumps(plan_to_recipe(cnn.plan, "digits-cnn")))) == cnn.plan


@pytest.mark.parametrize("entry, words", [
    ({"granularity": "channel", "criterion": "manual"}, "needs a 'channels' list"),
    ({"granularity": "channel", "criterion": "manual", "kernels": [[0, 1]]}, "needs a 'channels' list"),
    ({"granularity": "channel", "criterion": "l1", "channels": [1]}, "only the manual criterion"),
    ({"granularity": "2:4", "criterion": "manual", "channels": [1]}, "channel, kernel or element"),
    ({"granularity": "channel", "criterion": "manual", "channels": [1.5]}, "whole numbers"),
    ({"granularity": "channel", "criterion": "manual", "channels": [-1]}, "whole numbers"),
    ({"granularity": "kernel", "criterion": "manual", "kernels": [[1, 2, 3]]}, "[output channel, input channel]"),
])
def test_bad_manual_recipe_entries_are_refused(entry, words):
    with pytest.raises(PlanError) as e:
        recipe_to_plan({"layers": {"backbone.conv1": entry}})
    assert words in e.value.message


def test_out_of_range_units_are_refused(cnn):
    with pytest.raises(PlanError, match="index 32"):
        cnn.set_plan(recipe_to_plan({"layers": {"backbone.conv1": {
            "granularity": "channel", "criterion": "manual", "channels": [32]}}}))
    with pytest.raises(PlanError, match="output layer"):
        cnn.editor.toggle_manual("classifier", 1, "channel")
    assert cnn.plan == Plan()


def test_schedules_keep_the_chosen_units(cnn):
    cnn.editor.set_manual("backbone.conv1", [1, 2])
    half = plan_at(cnn.plan, Plan(), 0.5)
    assert half.get("backbone.conv1").units == (1, 2)


def test_manual_plan_replays_through_prune_recipe(tmp_path, capsys):
    recipe = {"format": "pruning-explorer-recipe", "version": 1, "model": "digits-cnn", "dataset": "digits",
              "layers": {"backbone.conv1": {"granularity": "channel", "criterion": "manual", "channels": [0, 5, 9]},
                         "backbone.conv3": {"granularity": "kernel", "criterion": "manual",
                                            "kernels": [[0, 3], [2, 1]]},
                         "classifier": {"granularity": "element", "criterion": "manual", "weights": [[4, 17]]}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe))
    assert main(["prune", "--recipe", str(path), "--out", str(tmp_path / "a"), "--no-latency", "--compact"]) == 0
    written = json.loads((tmp_path / "a" / "recipe.json").read_text())
    assert written["layers"]["backbone.conv1"]["channels"] == [0, 5, 9]
    assert written["layers"]["backbone.conv3"]["kernels"] == [[0, 3], [2, 1]]
    assert written["layers"]["classifier"]["weights"] == [[4, 17]]
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert set(range(32)) - set(live_rows(a, "backbone.conv1")) == {0, 5, 9}
    assert bool((a["backbone.conv3.weight"][0, 3] == 0).all()) and bool((a["backbone.conv3.weight"][2, 1] == 0).all())
    assert int((a["classifier.weight"] == 0).sum()) == 1 and float(a["classifier.weight"][4, 17]) == 0.0
    compact = torch.load(tmp_path / "a" / "model_compact.pt", weights_only=False)   # our own file: a module
    sd = compact.state_dict() if hasattr(compact, "state_dict") else compact
    assert sd["backbone.conv1.weight"].shape[0] == 29
    # the written recipe replays to the same model, bit for bit
    assert main(["prune", "--recipe", str(tmp_path / "a" / "recipe.json"), "--out", str(tmp_path / "b"),
                 "--no-latency"]) == 0
    assert_bit_identical(a, torch.load(tmp_path / "b" / "model.pt", weights_only=True))
    capsys.readouterr()
