"""Issue 13 (goals 1-2): start-up defers what the first frame does not need; big models keep one copy of their
weights (shared, rebound on apply), one-off masks equal the ranking's, the window opens on a ready layer."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from explorer.core.model.layers import LayerInfo
from explorer.core.model.sharing import shares_storage, twin, unshare
from explorer.core.prune import oneoff
from explorer.core.prune.masks import MaskEngine, masked_tensors
from explorer.core.prune.plan import LayerPlan, Plan
from explorer.core.session import READY_LAYER_PARAMS, Session

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torchvision", "torch_pruning", "timm", "scipy", "sklearn", "matplotlib", "pyqtgraph", "sympy")


FIRST_FRAME = """
    import sys
    sys.path.insert(0, '.')
    from explorer.gui.window.app import make_app
    from explorer.gui.window.main_window import MainWindow
    from explorer.core.session import Session
    from explorer.core.model.loading import resolve
    app = make_app(plots=False)
    s = Session(); s.apply_load(resolve('digits-cnn', defer_groups=True))
    w = MainWindow(s, deferred=True); w.show(); w.repaint(); app.processEvents()
    assert not w.started and not s.groups_ready and w.weight_view.view is None
    assert 'measuring' in w.weight_view.title.text()
"""


@pytest.fixture(scope="module")
def modules_after():
    """One fresh process for both checks: the top-level modules loaded after importing the window's modules, and
    after the first frame besides (a line of JSON each)."""
    dump = "\nimport sys, json\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    code = "import explorer.gui.window.app, explorer.gui.window.main_window" + dump + textwrap.dedent(FIRST_FRAME) + dump
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr[-2000:]
    imported, first_frame = out.stdout.strip().splitlines()[-2:]
    return {"import": set(json.loads(imported)), "first_frame": set(json.loads(first_frame))}


def test_gui_import_is_light(modules_after):
    mods = modules_after["import"]
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_first_frame_needs_no_heavy_module(modules_after):
    """The deferred window, loaded and painted once, has imported none of the heavy modules; filling it in
    (finish_start) brings the plots and, in the background, the channel groups."""
    mods = modules_after["first_frame"]
    assert not mods & set(HEAVY), mods & set(HEAVY)


def test_deferred_window_fills_in(qtbot):
    import gc as gc_module

    from PySide6.QtWidgets import QApplication

    from explorer.core.model.loading import resolve
    from explorer.gui.window import startup
    from explorer.gui.window.app import wait_idle
    from explorer.gui.window.main_window import MainWindow

    startup.pause_gc()                  # as `pruning-explorer gui` does, until the first frame
    assert not gc_module.isenabled()
    s = Session()
    s.apply_load(resolve("digits-cnn", defer_groups=True))
    assert not s.groups_ready
    win = MainWindow(s, deferred=True)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.started, timeout=20000)   # the first paint queues finish_start
    wait_idle(QApplication.instance(), win)
    assert s.groups_ready
    assert win.weight_view.view is not None and win.weight_view.view.layer.name == s.selected
    assert [win.tabs.tabText(i) for i in range(win.tabs.count())][:3] == ["Weights", "Fine-tune", "Latency"]
    assert win.tabs.widget(1) is win.finetune_panel
    # channel-coupled layers are marked once the groups are known (digits-cnn: none, but the channel choice
    # is checked now: the output layer refuses it)
    out = [l.name for l in s.layers if l.is_output][0]
    gc = win.table._editors[out][1]
    idx = gc.findText("channel")
    assert not gc.model().item(idx).isEnabled()
    # the dense baseline measured on open (before the History tab existed) is its first point, the star
    assert s.measurements.dense is not None and len(s.history) == 1
    win.tabs.setCurrentWidget(win.history_panel)      # the History tab draws itself once it is on show
    qtbot.waitUntil(lambda: win.history_panel.table.rowCount() == 1, timeout=2000)
    assert len(win.history_panel.dense_mark.points()) == 1
    assert gc_module.isenabled()        # finish() turned automatic collection back on


def test_default_layer_is_ready():
    s = Session.open("digits-cnn")
    # digits-cnn: every layer is small, so the largest as before
    assert s.selected == max(s.layers, key=lambda l: l.params).name
    big = LayerInfo("big", "Linear", (4096, 1024), 4096 * 1024, False, 1, 0)
    small = LayerInfo("small", "Linear", (64, 64), 4096, False, 1, 1)
    s.result.profile.layers = [big, small]
    assert big.params > READY_LAYER_PARAMS
    assert s.default_layer() == "small"
    s.result.profile.layers = [big]
    assert s.default_layer() == "big"        # nothing smaller: the smallest there is


def test_apply_does_not_copy_the_loaded_weights():
    s = Session.open("digits-cnn")
    orig = s.original_state()
    module_state = s.module.state_dict()
    for k, v in orig.items():                      # loaded weights are the module's tensors, not clones
        assert shares_storage(v, module_state[k]), k
    before = {k: v.clone() for k, v in orig.items()}
    name = s.layer_names[1]
    s.set_layer(name, sparsity=0.6)
    s.apply()
    after = s.module.state_dict()
    assert not shares_storage(after[f"{name}.weight"], orig[f"{name}.weight"])    # a new masked tensor
    for k in orig:                                                               # unchanged: still shared
        if k != f"{name}.weight":
            assert shares_storage(after[k], orig[k]), k
    assert int((after[f"{name}.weight"] == 0).sum()) >= round(0.6 * s.layer(name).params)
    for k, v in orig.items():                      # the loaded weights were never written
        assert torch.equal(v, before[k]), k
    s.reset()
    for k, v in s.module.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_masks_identical_to_the_copying_apply():
    """The shared masked state equals the full masked state bit for bit, and the model holds it after apply."""
    s = Session.open("digits-cnn")
    plan = Plan({n: LayerPlan(0.7, "element", "l1") for n in s.layer_names})
    plan = plan.with_layer(s.layer_names[0], LayerPlan(0.5, "channel", "l2"))
    s.set_plan(plan)
    full = s.masked_state(s.plan)
    shared = s.masked_state(s.plan, share=True)
    assert set(full) == set(shared)
    for k in full:
        assert torch.equal(full[k].view(torch.int32) if full[k].is_floating_point() else full[k],
                           shared[k].view(torch.int32) if shared[k].is_floating_point() else shared[k]), k
    s.apply()
    assert s.masks.mismatches(s.plan, s.module.state_dict()) == []
    assert s.masks.mismatches(Plan(), s.module.state_dict())   # a dense plan does not reproduce a pruned model


def _ranked(w: torch.Tensor, s: float, crit: str) -> torch.Tensor:
    layer = LayerInfo("l", "Linear", tuple(w.shape), w.numel(), False, w.numel(), 0)
    eng = MaskEngine({"l": layer}, weight=lambda _: w)
    return masked_tensors({"l.weight": w}, {"l.weight": eng.view("l", crit, "element").element_mask(s)}, {})["l.weight"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_off_mask_equals_the_ranking(monkeypatch, dtype):
    monkeypatch.setattr(oneoff, "CHUNK", 777)     # several chunks, ties across chunk borders
    g = torch.Generator().manual_seed(3)
    w = torch.randn(300, 17, generator=g)
    w[torch.rand(w.shape, generator=g) < 0.2] = 0.0
    w[torch.rand(w.shape, generator=g) < 0.1] = 0.25           # many exact ties
    w[torch.rand(w.shape, generator=g) < 0.05] = -0.25
    w[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    w = w.to(dtype)
    iv = torch.int64 if dtype == torch.float64 else torch.int32
    for s in (0.0, 0.05, 0.2, 0.31, 0.5, 0.777, 0.99, 1.0):
        for crit in ("l1", "l2"):
            assert torch.equal(oneoff.masked_weight(w, s).view(iv), _ranked(w, s, crit).view(iv)), (s, crit)
        # the chunked comparison (the recipe check of `prune`) agrees, and sees a single changed bit
        ranked = _ranked(w, s, "l1")
        assert oneoff.matches(w, s, ranked)
        flipped = ranked.clone()
        flipped.view(-1)[-1] = -flipped.view(-1)[-1] if flipped.view(-1)[-1] != 0 else -0.0
        assert not oneoff.matches(w, s, flipped), s


def test_one_off_path_is_used_for_big_layers(monkeypatch):
    s = Session.open("digits-cnn")
    name = max(s.layers, key=lambda l: l.params).name
    monkeypatch.setattr(oneoff, "MIN_PARAMS", 1)
    calls = []
    real = oneoff.masked_weight
    monkeypatch.setattr(oneoff, "masked_weight", lambda w, sp: calls.append(sp) or real(w, sp))
    s.set_layer(name, sparsity=0.8)
    state = s.masked_state(s.plan, share=True)
    assert calls == [0.8]
    assert s.needs_build(name)                      # no ranking was built for it
    assert torch.equal(state[f"{name}.weight"], s.masked_state(s.plan)[f"{name}.weight"])


def test_twin_shares_and_unshare_copies():
    m = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()
    state = {k: v.detach() for k, v in m.state_dict().items()}
    t = twin(m, state)
    for k, v in t.state_dict().items():
        assert shares_storage(v, state[k]), k
    x = torch.randn(2, 4)
    assert torch.equal(t(x), m(x))
    assert unshare(m, [state]) == len(state)
    for k, v in m.state_dict().items():
        assert not shares_storage(v, state[k]) and torch.equal(v, state[k]), k


def test_finetune_in_the_prune_flow_leaves_the_loaded_weights(tmp_path):
    from explorer.core.flows.prune import run as run_prune
    from explorer.core.train.finetune import FinetuneConfig

    s = Session.open("digits-cnn")
    before = {k: v.clone() for k, v in s.original_state().items()}
    s.set_uniform(s.layer_names, 0.5)
    run_prune(s.snapshot(), tmp_path / "out", finetune_cfg=FinetuneConfig(epochs=1), measure=False)
    for k, v in s.original_state().items():
        assert torch.equal(v, before[k]), k
    assert (tmp_path / "out" / "model.pt").exists()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_off_mask_in_place_equals_the_copy(monkeypatch, dtype):
    monkeypatch.setattr(oneoff, "CHUNK", 777)     # ties across chunk borders: each chunk is read before written
    g = torch.Generator().manual_seed(5)
    w = torch.randn(300, 17, generator=g)
    w[torch.rand(w.shape, generator=g) < 0.2] = 0.0
    w[torch.rand(w.shape, generator=g) < 0.1] = 0.25
    w[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    w = w.to(dtype)
    iv = torch.int64 if dtype == torch.float64 else torch.int32
    for s in (0.0, 0.05, 0.31, 0.5, 0.99, 1.0):
        expect = oneoff.masked_weight(w, s)
        for t in (w.clone(), w.t().clone().t()):            # contiguous, and a transposed (non-contiguous) view
            ptr = t.data_ptr()
            oneoff.mask_in_place(t, s)
            assert t.data_ptr() == ptr
            assert torch.equal(t.view(iv) if t.is_contiguous() else t.contiguous().view(iv), expect.view(iv)), s
            again = t.contiguous().clone()
            oneoff.mask_in_place(again, s)                 # idempotent: the recipe check holds on the result
            assert torch.equal(again.view(iv), t.contiguous().view(iv)), s


def _prune_bundle(tmp_path, name, keep_loaded):
    from explorer.core.flows.prune import run as run_prune

    s = Session.open("digits-mlp")
    plan = Plan({n: LayerPlan(0.8, "element", "l1") for n in s.layer_names})
    plan = plan.with_layer(s.layer_names[-1], LayerPlan(0.3, "element", "l2"))
    s.set_plan(plan)
    out = run_prune(s.snapshot(), tmp_path / name, latency_runs=2, own_loaded=not keep_loaded, sparse_archive=True)
    s.mark_pruned_in_place(out.plan, out.in_place)      # as the prune command does
    return s, out.report, torch.load(tmp_path / name / "model.pt", weights_only=True)


def test_prune_in_place_writes_the_same_bundle_with_one_copy(tmp_path, monkeypatch):
    """own_loaded=True (the prune command): big one-off layers are pruned in the loaded tensors themselves,
    the exported model and every count are those of the copying path, and the session refuses to go on."""
    from explorer.core.deploy import bundle
    from explorer.core.errors import ExplorerError

    monkeypatch.setattr(oneoff, "MIN_PARAMS", 1000)      # digits-mlp's three layers count as big
    monkeypatch.setattr(bundle, "IN_PLACE_MIN_BYTES", 0)
    s_copy, r_copy, sd_copy = _prune_bundle(tmp_path, "copy", keep_loaded=True)
    s, r, sd = _prune_bundle(tmp_path, "in_place", keep_loaded=False)
    assert s_copy.pruned_in_place is None and r_copy["latency"]["interleaved"] is True
    assert r["latency"]["interleaved"] is False and r["latency"]["dense"] and r["latency"]["pruned"]
    assert set(sd) == set(sd_copy)
    for k in sd:
        assert torch.equal(sd[k], sd_copy[k]), k
    for block in ("dense", "pruned"):
        a = {k: v for k, v in r[block].items() if k != "latency_ms"}
        b = {k: v for k, v in r_copy[block].items() if k != "latency_ms"}
        assert a == b, block
    assert r["dense"]["nonzero_params"] > r["pruned"]["nonzero_params"]   # dense counted before pruning
    assert r["layers"] == r_copy["layers"] and r["compression_ratio"] == r_copy["compression_ratio"]
    # the loaded tensors are the pruned ones now: no second copy of the big layers
    orig, module_state = s.original_state(), s.module.state_dict()
    for n in s.layer_names:
        k = f"{n}.weight"
        assert shares_storage(orig[k], module_state[k]) and torch.equal(orig[k], sd[k]), k
    assert sorted(s.masks.in_place) == sorted(s.layer_names)
    with pytest.raises(ExplorerError, match="pruned in place"):
        s.apply(Plan())
    plan, undo = s.plan, s.editor.can_undo
    with pytest.raises(ExplorerError, match="pruned in place"):
        s.reset()
    assert s.plan == plan and s.editor.can_undo == undo        # refused before anything changed
    s.apply(s.pruned_in_place)                          # the same plan again is harmless


def test_prune_in_place_only_where_it_pays(tmp_path, monkeypatch):
    """Small models (below IN_PLACE_MIN_BYTES) and fine-tuning keep the loaded weights, even from the CLI path."""
    from explorer.core.deploy import bundle
    from explorer.core.flows import prune as flows_prune
    from explorer.core.train.finetune import FinetuneConfig

    s, r, sd = _prune_bundle(tmp_path, "small", keep_loaded=False)
    assert s.pruned_in_place is None and r["latency"]["interleaved"] is True
    # a one-command session builds no ranking: every element/|w| mask was computed one-off (same masks)
    assert all(s.needs_build(n, s.plan.get(n)) for n in s.layer_names)
    ranked = Session.open("digits-mlp")
    ranked.set_plan(s.plan)
    full = ranked.masked_state(ranked.plan)
    assert all(torch.equal(full[k], sd[k]) for k in sd)
    monkeypatch.setattr(oneoff, "MIN_PARAMS", 1000)
    monkeypatch.setattr(bundle, "IN_PLACE_MIN_BYTES", 0)
    s = Session.open("digits-mlp")
    before = {k: v.clone() for k, v in s.original_state().items()}
    s.set_uniform(s.layer_names, 0.5)
    out = flows_prune.run(s.snapshot(), tmp_path / "ft", finetune_cfg=FinetuneConfig(epochs=1), measure=False,
                          own_loaded=True)
    s.mark_pruned_in_place(out.plan, out.in_place)
    assert s.pruned_in_place is None                   # fine-tuning trains copies: the loaded weights stay
    for k, v in s.original_state().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("criterion", ["wanda", "taylor"])
def test_prune_in_place_keeps_data_aware_masks(tmp_path, monkeypatch, criterion):
    """Layers scored on activations or gradients are ranked on the dense model before any layer is pruned in
    place: the in-place bundle equals the copying one (and the recipe's replay)."""
    from explorer.core.deploy import bundle
    from explorer.core.errors import ExplorerError
    from explorer.core.flows import prune as flows_prune

    monkeypatch.setattr(bundle, "IN_PLACE_MIN_BYTES", 0)

    def run(keep_loaded):
        s = Session.open("digits-mlp")
        names = s.layer_names
        plan = Plan({names[0]: LayerPlan(0.9, "element", "l1")})
        plan = plan.replaced({n: LayerPlan(0.5, "element", criterion) for n in names[1:]})
        s.set_plan(plan)
        out = tmp_path / f"{criterion}-{keep_loaded}"
        done = flows_prune.run(s.snapshot(), out, measure=False, own_loaded=not keep_loaded)
        s.mark_pruned_in_place(done.plan, done.in_place)
        return s, torch.load(out / "model.pt", weights_only=True)

    _, ref = run(True)
    s, sd = run(False)
    assert sorted(s.masks.in_place) == [s.layer_names[0]]
    for k in ref:
        assert torch.equal(ref[k], sd[k]), k
    assert s.editor.can_undo
    with pytest.raises(ExplorerError, match="pruned in place"):
        s.undo()
    assert s.editor.can_undo and not s.editor.can_redo               # refused before the undo stack moved
    with pytest.raises(ExplorerError, match="pruned in place"):
        s.masked_state(Plan())                          # no silent re-masking of pruned weights either


def test_invalidate_never_waits_for_a_build():
    """A build in a worker may wait for the session's lock (calibration statistics copy the model) while the
    GUI thread holds that lock and invalidates (new weights): invalidate must not wait for the build (the
    soak's deadlock), and the build's result, computed on the old weights, is not cached."""
    import threading

    w = torch.randn(8, 6)
    layer = LayerInfo("l", "Linear", (8, 6), w.numel(), False, w.numel(), 0)
    session_lock, building = threading.RLock(), threading.Event()

    def statistic(kind, name):
        building.set()
        with session_lock:                 # as Session.model_copy does
            return torch.ones(6)

    eng = MaskEngine({"l": layer}, weight=lambda _: w, statistic=statistic)
    views = []
    with session_lock:
        worker = threading.Thread(target=lambda: views.append(eng.view("l", "wanda", "element")), daemon=True)
        worker.start()
        assert building.wait(5)
        inval = threading.Thread(target=eng.invalidate, daemon=True)
        inval.start()
        inval.join(5)
        assert not inval.is_alive(), "invalidate waited for the build: deadlock"
    worker.join(5)
    assert not worker.is_alive() and len(views) == 1
    assert not eng.is_cached("l", "wanda", "element")        # built on the old weights: not kept
    eng.view("l", "wanda", "element")
    assert eng.is_cached("l", "wanda", "element")
