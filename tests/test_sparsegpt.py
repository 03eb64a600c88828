"""SparseGPT and sequential calibration (issue 23 item 2): the sweep's update against least squares, the mask it
chooses (counts, n:m), block-by-block calibration on the pruned network's own activations, recipes replaying it
bit for bit, and a CLI run on a tiny Llama with perplexity."""
from __future__ import annotations

import json

import pytest
import torch

import explorer.core.prune.reconstruct as rec_mod
from explorer import cli
from explorer.core.errors import PlanError
from explorer.core.prune.sequential_calibration import block_stack, sequential_prune
from explorer.core.prune.sparsegpt import sparsegpt_layer

from . import tiny_models as tiny
from .helpers import assert_bit_identical, bits


def _problem(out=7, d=300, n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, n, generator=g, dtype=torch.float64) * torch.rand(d, 1, generator=g, dtype=torch.float64)
    X[: d // 2] += 0.5 * X[d // 2:]                       # correlated inputs: a non-diagonal H
    W = torch.randn(out, d, generator=g, dtype=torch.float64)
    H = X @ X.T
    lam = 0.01 * float(torch.diagonal(H).mean())
    return W, H, H + lam * torch.eye(d, dtype=torch.float64)


def _err(V, W, A):
    return float(((V - W) @ A * (V - W)).sum())


def test_sweep_is_the_least_squares_solution_when_pruned_columns_come_first():
    # pruning columns 0..c-1 and updating all later ones is exactly the constrained least-squares optimum
    W, _, A = _problem(out=5, d=40, n=200)
    keep = torch.ones_like(W, dtype=torch.bool)
    keep[:, :13] = False
    got = rec_mod._solve_obs(A, W @ A, keep, block=8)       # blocks smaller than the pruned run: lazy updates too
    expect = rec_mod._solve_exact(A, W @ A, keep)
    torch.testing.assert_close(got, expect, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sparsity", [0.5, 0.37])
def test_sparsegpt_chooses_the_layer_count_and_updates_like_the_fixed_mask_sweep(sparsity):
    W, H, A = _problem()
    Wn, keep = sparsegpt_layer(W, H, sparsity)
    out, d = W.shape
    assert int((~keep).sum()) == int(round(sparsity * out * d))    # the mask engine's count for the layer
    assert torch.equal(bits(Wn[~keep]), torch.zeros_like(bits(Wn[~keep])))        # exactly +0.0
    assert int((Wn[keep] == 0).sum()) == 0
    # given the mask it chose, the update is reconstruct's OBS sweep with that mask (one machinery)
    torch.testing.assert_close(Wn, rec_mod._solve_obs(A, W @ A, keep), rtol=1e-9, atol=1e-9)
    # ... which is never better than the exact least-squares optimum for that mask
    exact = rec_mod._solve_exact(A, W @ A, keep)
    assert _err(exact, W, A) <= _err(Wn, W, A) + 1e-9
    # and the chosen mask + update beats magnitude pruning at the same count (with no update)
    mag = torch.ones_like(keep)
    mag.view(-1)[W.abs().reshape(-1).argsort()[: int((~keep).sum())]] = False
    assert _err(Wn, W, A) < _err(W * mag, W, A)
    assert _err(Wn, W, A) < _err(W * keep, W, A)


def test_sparsegpt_with_a_diagonal_hessian_is_magnitude_times_norm():
    # no coupling: the saliency is w² (H_jj + λ) and nothing is updated
    W, H, _ = _problem(out=4, d=64)
    H = torch.diag(torch.diagonal(H))
    Wn, keep = sparsegpt_layer(W, H, 0.5, block=64)
    sal = W ** 2 * (torch.diagonal(H) + 0.01 * float(torch.diagonal(H).mean()))
    expect = torch.ones_like(keep)
    expect.view(-1)[sal.reshape(-1).argsort()[:128]] = False
    assert torch.equal(keep, expect)
    torch.testing.assert_close(Wn, W * keep)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 3)])
def test_nm_pattern_holds(n, m):
    W, H, A = _problem(out=6, d=96)
    Wn, keep = sparsegpt_layer(W, H, nm=(n, m))
    per_group = keep.reshape(6, -1, m).sum(dim=-1)
    assert torch.equal(per_group, torch.full_like(per_group, n))
    assert int((Wn[keep] == 0).sum()) == 0 and bool((Wn[~keep] == 0).all())
    torch.testing.assert_close(Wn, rec_mod._solve_obs(A, W @ A, keep), rtol=1e-9, atol=1e-9)


def _llama(tmp_path):
    from transformers import LlamaForCausalLM

    folder = tiny.llama_folder(tmp_path / "llama")
    return LlamaForCausalLM.from_pretrained(str(folder)).eval(), folder


def _input_stats(model, names, x):
    """H = XᵀX of each layer's input in one forward pass of ``model`` as it is."""
    got, hooks = {}, []
    mods = dict(model.named_modules())
    for n in names:
        hooks.append(mods[n].register_forward_pre_hook(
            lambda m, i, n=n: got.__setitem__(n, (lambda c: c.T @ c)(i[0].reshape(-1, i[0].shape[-1]).float()))))
    with torch.no_grad():
        model(x, use_cache=False)
    for h in hooks:
        h.remove()
    return got


def test_block_by_block_calibration_sees_the_pruned_network(tmp_path):
    model, _ = _llama(tmp_path)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("model.layers")]
    assert block_stack(model, names)[0] == "model.layers"
    model.config.use_cache = True        # a key/value cache must not leak between the runs of a block
    x = torch.randint(0, tiny.VOCAB, (6, 16), generator=torch.Generator().manual_seed(0))
    dense = _input_stats(model, names, x)
    seen, order = {}, []

    def step(name, m, H):          # magnitude-prune each layer in place, recording the Hessian it was given
        seen[name], _ = H.clone(), order.append(name)
        w = m.weight.detach()
        m.weight.data = w * (w.abs() > w.abs().median())

    assert sequential_prune(model, x, names, step, chunk=4) == "blocks"
    assert sorted(order) == sorted(names)
    # forward order inside each block: attention before the MLP, q/k/v before o, gate/up before down
    assert order.index("model.layers.0.self_attn.o_proj") > order.index("model.layers.0.self_attn.v_proj")
    assert order.index("model.layers.0.mlp.down_proj") > order.index("model.layers.0.mlp.up_proj")
    assert order.index("model.layers.1.self_attn.q_proj") > order.index("model.layers.0.mlp.down_proj")
    # a layer's input never depends on itself or on later layers: what each step saw is its input in the final,
    # fully pruned network -- block 1 (and block 0's later layers) saw the pruned prefix, not the dense one
    final = _input_stats(model, names, x)
    for n in names:
        torch.testing.assert_close(seen[n], final[n], rtol=1e-4, atol=1e-3)
    for n in ("model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        assert not torch.allclose(seen[n], dense[n], rtol=1e-3, atol=1e-3), n
    torch.testing.assert_close(seen["model.layers.0.self_attn.q_proj"], dense["model.layers.0.self_attn.q_proj"],
                               rtol=1e-4, atol=1e-3)


def _prune(tmp_path, name, *args):
    out = tmp_path / name
    assert cli.main(["prune", *args, "--no-latency", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("extra", [["--criterion", "sparsegpt", "-g", "2:4"],
                                   ["--criterion", "sparsegpt", "--sparsity", "0.7"],
                                   ["--criterion", "wanda", "--sparsity", "0.6", "--sequential-calibration"]])
def test_recipe_replays_bit_for_bit(tmp_path, extra):
    args = ["--model", "digits-mlp", "--calibration-samples", "48", "--seed", "2"]
    if "--sparsity" not in extra:
        extra = [*extra, "--sparsity", "0.5"]
    a = _prune(tmp_path, "a", *args, *extra)
    recipe = json.loads((a / "recipe.json").read_text())
    assert recipe["sequential_calibration"] is ("--sequential-calibration" in extra)
    report = json.loads((a / "report.json").read_text())
    assert report["one_shot"]["order"] == "layers"
    b = _prune(tmp_path, "b", "--model", "digits-mlp", "--recipe", str(a / "recipe.json"))
    assert json.loads((b / "recipe.json").read_text())["sequential_calibration"] is recipe["sequential_calibration"]
    sa, sb = (torch.load(p / "model.pt", weights_only=True) for p in (a, b))
    assert_bit_identical(sa, sb)
    if "sparsegpt" in extra:      # the kept weights moved (the sweep's update), not just masked
        base = torch.load(_prune(tmp_path, "l1", *args, *[e if e != "sparsegpt" else "l1" for e in extra])
                          / "model.pt", weights_only=True)
        assert not torch.equal(sa["fc2.weight"] != 0, base["fc2.weight"] != 0) or \
            not torch.equal(sa["fc2.weight"], base["fc2.weight"])


def test_sequential_wanda_differs_from_dense_wanda(tmp_path):
    args = ["--model", "digits-mlp", "--calibration-samples", "48", "--criterion", "wanda", "--sparsity", "0.8"]
    a = torch.load(_prune(tmp_path, "a", *args) / "model.pt", weights_only=True)
    b = torch.load(_prune(tmp_path, "b", *args, "--sequential-calibration") / "model.pt", weights_only=True)
    assert torch.equal(a["fc1.weight"], b["fc1.weight"])           # the first layer sees the same inputs
    assert not torch.equal(a["fc2.weight"] != 0, b["fc2.weight"] != 0)    # later ones see the pruned network


def test_sparsegpt_refusals(mlp, tmp_path, capsys):
    with pytest.raises(PlanError, match="element or n:m"):
        mlp.set_uniform(mlp.layer_names, 0.5, "channel", "sparsegpt")
    assert cli.main(["prune", "--model", "digits-mlp", "--sparsity", "0.5", "--criterion", "sparsegpt",
                     "--reconstruct", "--no-latency", "--out", str(tmp_path / "x")]) != 0
    assert "already updates the kept weights" in capsys.readouterr().err


def test_cli_on_a_tiny_llama_gives_perplexity(tmp_path):
    folder = tiny.llama_folder(tmp_path / "llama")
    text = tiny.write_text(tmp_path / "t.txt")
    out = _prune(tmp_path, "p", "--model", f"hf:{folder}", "--dataset", f"text:{text}", "--criterion", "sparsegpt",
                 "-g", "2:4", "--sparsity", "0.5", "--calibration-samples", "8")
    report = json.loads((out / "report.json").read_text())
    assert report["one_shot"]["order"] == "blocks" and len(report["one_shot"]["swept"]) == 15
    assert report["pruned"]["perplexity"] > 1 and report["sparsity"] == pytest.approx(0.5, abs=0.01)
    state = torch.load(out / "model.pt", weights_only=True)
    q = state["model.layers.1.self_attn.q_proj.weight"]
    assert torch.equal((q != 0).reshape(q.shape[0], -1, 4).sum(-1), torch.full((q.shape[0], q.shape[1] // 4), 2))


def test_compare_measures_sparsegpt_by_its_sweep(mlp):
    from explorer.core.analyse.compare import compare_criteria

    mlp.set_calibration_samples(64)
    r = compare_criteria(mlp, "l1,sparsegpt", [0.8])
    l1, sgpt = (c["accuracy"][0] for c in r.criteria)
    assert sgpt > l1        # the sweep's update, measured (the preview alone would be |w|·‖x‖ masking)
    assert not mlp.plan.active()


def test_one_shot_reports_progress_and_cancels_without_touching_the_session(mlp):
    from explorer.core.errors import Cancelled
    from explorer.core.jobs import CancelToken
    from explorer.core.prune.sparsegpt import one_shot

    mlp.set_calibration_samples(32)
    mlp.set_uniform(mlp.layer_names, 0.5, "element", "sparsegpt")
    before = {k: v.clone() for k, v in mlp.base_state().items()}
    token, notes = CancelToken(), []

    def progress(p):
        notes.append(p.message)
        if "fc2" in p.message:
            token.cancel()          # cancelled part-way, after fc1 was swept

    with pytest.raises(Cancelled):
        one_shot(mlp.snapshot(), mlp.plan, progress=progress, cancel=token)
    assert any("fc1" in m for m in notes)
    assert_bit_identical(mlp.base_state(), before)
    r = one_shot(mlp.snapshot(), mlp.plan)          # and uncancelled it runs to the end
    assert r.swept == ["fc1", "fc2", "fc3"] and r.order == "layers"


def test_conv_nm_runs_go_along_input_channels(tmp_path):
    out = _prune(tmp_path, "c", "--model", "digits-cnn", "--criterion", "sparsegpt", "-g", "2:4", "--sparsity", "0.5",
                 "--calibration-samples", "32")
    w = torch.load(out / "model.pt", weights_only=True)["backbone.conv2.weight"]      # 64 x 32 x 3 x 3
    runs = (w != 0).permute(0, 2, 3, 1).reshape(-1, 4).sum(dim=-1)     # m consecutive input channels per position
    assert torch.equal(runs, torch.full_like(runs, 2))


def test_sequential_wanda_on_a_tiny_llama_goes_block_by_block(tmp_path):
    folder = tiny.llama_folder(tmp_path / "llama")
    text = tiny.write_text(tmp_path / "t.txt")
    out = _prune(tmp_path, "w", "--model", f"hf:{folder}", "--dataset", f"text:{text}", "--criterion", "wanda",
                 "--sparsity", "0.5", "--sequential-calibration", "--calibration-samples", "8")
    report = json.loads((out / "report.json").read_text())
    assert report["one_shot"] == {"order": "blocks", "sequential_calibration": True, "swept": [], "samples": 8}
    assert json.loads((out / "recipe.json").read_text())["sequential_calibration"] is True
    assert report["pruned"]["perplexity"] > 1


def test_parallel_heads_are_no_block_stack():
    class Heads(torch.nn.Module):       # a ModuleList applied to the same input: not a chain of blocks
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Linear(6, 6)
            self.heads = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(6, 6)) for _ in range(3))

        def forward(self, x):
            h = self.stem(x)
            return sum(head(h) for head in self.heads)

    model = Heads()
    names = ["stem", "heads.0.0", "heads.1.0", "heads.2.0"]
    assert block_stack(model, names)[0] == "heads"
    seen = []
    how = sequential_prune(model, torch.randn(5, 6), names, lambda n, m, H: seen.append(n), chunk=2)
    assert how == "layers" and seen == names


def test_layers_ahead_of_the_stack_go_first():
    class Chain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Linear(6, 6)
            self.blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(6, 6)) for _ in range(2))
            self.head = torch.nn.Linear(6, 2)

        def forward(self, x):
            h = self.stem(x)
            for b in self.blocks:
                h = b(h)
            return self.head(h)

    names = ["stem", "blocks.0.0", "blocks.1.0", "head"]
    seen = []
    assert sequential_prune(Chain(), torch.randn(5, 6), names, lambda n, m, H: seen.append(n), chunk=2) == "blocks"
    assert seen == names
