"""One engine, many doors (issue 20): the same request gives bit-identical fine-tuned weights through the CLI's
prune, finetune --recipe and compress, the window's Fine-tune tab, the search and the criteria comparison; and a
flow returns the result of its snapshot while the session is changed on another thread."""
from __future__ import annotations

import threading

import pytest
import torch

from explorer.cli import main
from explorer.core.fileio import bit_equal
from explorer.core.flows import finetune as finetune_flow
from explorer.core.flows import measure
from explorer.core.session import Session
from explorer.core.train.evaluate import evaluate
from explorer.core.train.settings import finetune_settings

MODEL, SPARSITY, EPOCHS = "digits-mlp", 0.9, 3     # the compress request


def same_state(a: dict, b: dict) -> bool:
    keys = [k for k in a if torch.is_floating_point(a[k])]
    return set(keys) <= set(b) and all(bit_equal(a[k], b[k]) for k in keys)


def load(path) -> dict:
    return torch.load(path, weights_only=True)


def planned(model: str = MODEL) -> Session:
    s = Session.open(model)
    s.set_uniform(s.layer_names, SPARSITY)
    return s


@pytest.fixture(scope="module")
def prune_door(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "run"
    assert main(["prune", "--model", MODEL, "--sparsity", str(SPARSITY), "--finetune-epochs", str(EPOCHS),
                 "--no-latency", "--out", str(out)]) == 0
    return out


def test_settings_are_the_models_defaults_by_every_door():
    s = Session.open(MODEL)
    cfg = finetune_settings(s.profile, epochs=EPOCHS)
    assert (cfg.optimizer, cfg.lr) == ("adam", 1e-2)          # the small-MLP defaults, not the lab's SGD
    assert finetune_settings(s.profile, epochs=EPOCHS, optimizer="sgd").lr == 0.1   # the model's SGD rate
    assert finetune_settings(s.profile, recorded=cfg.as_dict(), epochs=5).lr == cfg.lr


def test_prune_and_finetune_recipe_give_the_same_weights(prune_door, tmp_path):
    out = tmp_path / "ft"
    assert main(["finetune", "--recipe", str(prune_door / "recipe.json"), "--out", str(out)]) == 0
    assert same_state(load(prune_door / "model.pt"), load(out / "model.pt"))


def test_compress_fine_tunes_like_prune(prune_door, tmp_path, monkeypatch):
    from explorer.core.flows import compress as flow

    seen = {}
    real = flow.compress_state

    def spy(module, ds, pruned, *a, **kw):
        seen["pruned"] = {k: v.clone() for k, v in pruned.items()}
        return real(module, ds, pruned, *a, **kw)

    monkeypatch.setattr(flow, "compress_state", spy)
    assert main(["compress", "--model", MODEL, "--sparsity", str(SPARSITY), "--finetune-epochs", str(EPOCHS),
                 "--quantize-epochs", "2", "--out", str(tmp_path / "c")]) == 0
    assert same_state(load(prune_door / "model.pt"), seen["pruned"])
    # the same fine-tuning as prune (the model's Adam 0.01, not SGD 0.01): every stage within a point of dense
    import json
    stages = {st["name"]: st["accuracy"] for st in json.loads((tmp_path / "c" / "compression.json").read_text())["stages"]}
    assert all(stages["dense"] - stages[k] <= 1.0 for k in ("pruned", "quantized", "huffman")), stages


def test_the_fine_tune_flow_on_a_snapshot_gives_the_same_weights(prune_door):
    s = planned()
    r = finetune_flow.run(s.snapshot(), finetune_settings(s.profile, epochs=EPOCHS))
    assert same_state(load(prune_door / "model.pt"), r.state)


def test_the_window_fine_tune_tab_gives_the_same_weights(prune_door, qtbot, tmp_path):
    pytest.importorskip("pytestqt")
    from .gui_helpers import open_window, wait_jobs

    with open_window(qtbot, tmp_path, planned()) as win:
        p = win.finetune_panel
        p.epochs.setValue(EPOCHS)
        p.start()
        wait_jobs(qtbot, win, 180_000)
        assert win.session.base_label == "fine-tuned"
        assert same_state(load(prune_door / "model.pt"), win.session.base_state())


def test_search_fine_tunes_like_prune(prune_door):
    from explorer.core.analyse.search import search_allocation
    from explorer.core.analyse.sensitivity import ScanSpec, scan

    s = Session.open(MODEL)
    result = scan(s, ScanSpec([SPARSITY]))
    cfg = finetune_settings(s.profile, epochs=EPOCHS)
    found = search_allocation(s.snapshot(), result, 100.0, cfg, targets=[SPARSITY], method="uniform")
    assert {n: lp.sparsity for n, lp in found.plan.active().items()} == {n: SPARSITY for n in s.layer_names}
    assert same_state(load(prune_door / "model.pt"), found.state)


def test_compare_fine_tunes_like_the_flow():
    from explorer.core.analyse.compare import compare_criteria

    s = planned()
    cfg = finetune_settings(s.profile, epochs=1)     # one epoch: the kept epoch is the last whatever the split
    r = finetune_flow.run(s.snapshot(), cfg)
    expect = evaluate(s.snapshot().model(r.state), s.dataset, "val").accuracy
    got = compare_criteria(Session.open(MODEL).snapshot(), ["l1"], [SPARSITY], finetune=cfg)
    assert got.criteria[0]["accuracy_finetuned"] == [pytest.approx(expect, abs=0)]


# ---------------------------------------------------------------------------- flows vs a changing session

def churn(session: Session, stop: threading.Event) -> int:
    """Change everything a user can while a flow runs; returns how many rounds it did."""
    rounds = 0
    while not stop.is_set() or rounds < 2:
        session.set_uniform(session.layer_names, 0.3 + 0.1 * (rounds % 5), "element", "random")
        session.apply()
        session.set_seed(rounds + 1)
        session.set_calibration_samples(16 + rounds % 3)
        session.undo()
        session.reset()
        rounds += 1
    session.load("digits-cnn")
    return rounds


def run_while_churning(fn, session):
    stop, out = threading.Event(), {}

    def worker():
        try:
            out["result"] = fn()
        except BaseException as e:      # surfaced below
            out["error"] = e
        finally:
            stop.set()

    t = threading.Thread(target=worker)
    t.start()
    rounds = churn(session, stop)
    t.join(120)
    assert not t.is_alive()
    if "error" in out:
        raise out["error"]
    assert rounds >= 2
    return out["result"]


@pytest.mark.parametrize("criterion", ["l1", "wanda"])
def test_flows_return_the_result_of_their_snapshot(criterion):
    quiet = Session.open(MODEL)
    quiet.set_uniform(quiet.layer_names, SPARSITY, "element", criterion)
    cfg = finetune_settings(quiet.profile, epochs=1)
    expect_eval = measure.evaluate_plan(quiet.snapshot(), need_dense=True)
    expect_ft = finetune_flow.run(quiet.snapshot(), cfg).state

    busy = Session.open(MODEL)
    busy.set_uniform(busy.layer_names, SPARSITY, "element", criterion)
    snap = busy.snapshot()
    cur, dense = run_while_churning(lambda: measure.evaluate_plan(snap, need_dense=True), busy)
    assert (cur.accuracy, dense.accuracy) == (expect_eval[0].accuracy, expect_eval[1].accuracy)

    busy = Session.open(MODEL)
    busy.set_uniform(busy.layer_names, SPARSITY, "element", criterion)
    snap = busy.snapshot()
    state = run_while_churning(lambda: finetune_flow.run(snap, cfg).state, busy)
    assert same_state(expect_ft, state)


# ---------------------------------------------------------------------------- defaults for the everyday case

def test_a_short_fine_tune_of_a_small_cnn_takes_the_lower_rate():
    s = Session.open("digits-cnn")
    assert finetune_settings(s.profile, epochs=3).lr == 0.02                  # the everyday case
    assert finetune_settings(s.profile, epochs=12).lr == 0.05                 # where the schedules were tuned
    assert finetune_settings(s.profile, epochs=4, schedule="iterative", steps=3).lr == 0.05   # gradual schedules
    assert finetune_settings(s.profile, epochs=2, schedule="agp").lr == 0.05                  # prune while training
    assert finetune_settings(s.profile, epochs=3, lr=0.1).lr == 0.1           # a given rate wins


def test_everyday_prune_recovers_within_a_point(tmp_path):
    """`prune --model digits-cnn --sparsity 0.8 --finetune-epochs 3` (issue 20): within 1 point of dense on test."""
    import json

    assert main(["prune", "--model", "digits-cnn", "--sparsity", "0.8", "--finetune-epochs", "3", "--no-latency",
                 "--out", str(tmp_path / "p")]) == 0
    r = json.loads((tmp_path / "p" / "report.json").read_text())
    assert r["finetune"]["lr"] == 0.02
    assert r["dense"]["accuracy"] - r["pruned"]["accuracy"] <= 1.0


def test_the_window_rate_follows_the_run_length_until_the_user_types_one(qtbot, tmp_path):
    pytest.importorskip("pytestqt")
    from .gui_helpers import open_window

    with open_window(qtbot, tmp_path, Session.open("digits-cnn")) as win:
        p = win.finetune_panel
        p.epochs.setValue(3)
        assert p.lr.value() == pytest.approx(0.02) and p.config().lr == pytest.approx(0.02)
        p.epochs.setValue(12)
        assert p.lr.value() == pytest.approx(0.05)
        p.lr.setValue(0.04)                       # the user's own rate stays
        p.epochs.setValue(3)
        assert p.lr.value() == pytest.approx(0.04)
