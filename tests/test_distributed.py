"""Fine-tuning a recipe on a cluster (issue 13): the finetune command, sharding, checkpoints and resume, and
distributed data parallel with two CPU processes under torchrun (gloo)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explorer.cli import main
from explorer.core.errors import ExplorerError
from explorer.core.jobs import CancelToken
from explorer.core.model.data import Shard, load_dataset
from explorer.core.prune.plan import LayerPlan, Plan
from explorer.core.train.finetune import FinetuneConfig, batches_per_epoch, finetune

BIN = Path(sys.executable).parent


# ---------------------------------------------------------------- sharding

@pytest.mark.parametrize("n,batch,world", [(1257, 32, 2), (1257, 33, 2), (10, 4, 3), (5, 2, 4), (7, 32, 2)])
def test_training_shards_together_are_the_single_process_batches(n, batch, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    per_rank = [list(Shard(r, world).chunks(order, batch)) for r in range(world)]
    counts = {len(c) for c in per_rank}
    assert counts == {batches_per_epoch(n, batch, world)}          # every rank runs the same number of steps
    for step in zip(*per_rank):
        assert len({len(c) for c in step}) == 1                    # of equal size (DDP waits for everyone)
    seen = torch.cat([torch.cat(c) for c in per_rank])
    assert set(seen.tolist()) == set(range(n))                     # every sample, padding only repeats some
    assert len(seen) - n < world * len(per_rank[0])
    if n % world == 0 and batch % world == 0:                      # then exactly one process's batches, dealt out
        single = [order[i:i + batch] for i in range(0, n, batch)]
        for b, whole in enumerate(single):
            assert sorted(torch.cat([p[b] for p in per_rank]).tolist()) == sorted(whole.tolist())


def test_evaluation_shards_cover_every_sample_once():
    order = torch.arange(181)
    parts = [torch.cat(list(Shard(r, 4, pad=False).chunks(order, 16))) for r in range(4)]
    assert sorted(torch.cat(parts).tolist()) == list(range(181))


def test_batches_per_epoch_single_process_matches_the_loader():
    ds = load_dataset("digits")
    assert batches_per_epoch(ds.size("train"), 32) == len(list(ds.batches("train", 32, shuffle=True)))
    shard = Shard(1, 2)
    assert batches_per_epoch(ds.size("train"), 32, 2) == len(list(ds.batches("train", 32, True, shard=shard)))


# ---------------------------------------------------------------- checkpoints in one process

def _job(cnn):
    plan = Plan({n: LayerPlan(0.8) for n in cnn.layer_names})
    cnn.set_plan(plan)
    cnn.apply(plan)
    return plan


def test_a_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(cnn, tmp_path):
    plan = _job(cnn)
    cfg = FinetuneConfig(epochs=3, lr=0.05, max_batches=8)
    whole = finetune(cnn.module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state, cfg,
                     checkpoint=tmp_path / "a.pt")
    cancel = CancelToken()

    def stop_after_first_epoch(p):
        if p.data is not None and p.data.epoch == 1:
            cancel.cancel()
    ckpt = tmp_path / "b.pt"
    with pytest.raises(Exception):
        finetune(cnn.module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state, cfg,
                 progress=stop_after_first_epoch, cancel=cancel, checkpoint=ckpt)
    assert ckpt.is_file()
    resumed = finetune(cnn.module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state, cfg,
                       checkpoint=ckpt, resume=True)
    assert resumed.resumed_from_epoch == 1
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    for k, v in whole.state.items():
        assert torch.equal(v, resumed.state[k]), k
    assert [r.val_accuracy for r in resumed.history] == [r.val_accuracy for r in whole.history]


def test_resuming_another_jobs_checkpoint_is_refused(cnn, tmp_path):
    plan = _job(cnn)
    ckpt = tmp_path / "c.pt"
    finetune(cnn.module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state,
             FinetuneConfig(epochs=1, max_batches=2), checkpoint=ckpt)
    with pytest.raises(ExplorerError, match="different job.*fine-tuning settings"):
        finetune(cnn.module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state,
                 FinetuneConfig(epochs=2, max_batches=2), checkpoint=ckpt, resume=True)
    ckpt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(ExplorerError, match="cannot be read"):
        finetune(cnn.module, cnn.dataset, cnn.layer_names, plan, plan, cnn.masks_for_state,
                 FinetuneConfig(epochs=1, max_batches=2), checkpoint=ckpt, resume=True)


# ---------------------------------------------------------------- the finetune command

@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    d = tmp_path_factory.mktemp("recipe")
    assert main(["prune", "--model", "digits-cnn", "--sparsity", "0.8", "--no-latency", "--out", str(d / "p")]) == 0
    return d / "p"


@pytest.fixture(scope="module")
def single(recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "ft"
    assert main(["finetune", "--recipe", str(recipe / "recipe.json"), "--epochs", "3", "--no-latency",
                 "--out", str(out)]) == 0
    return out


def _zeros(path: Path, names) -> dict[str, torch.Tensor]:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {n: sd[f"{n}.weight"] == 0 for n in names}


def test_finetune_command_writes_prunes_report_plus_world_size(recipe, single, cnn):
    pr = json.loads((recipe / "report.json").read_text())
    ft = json.loads((single / "report.json").read_text())
    assert set(ft) == set(pr) | {"world_size"} and ft["world_size"] == 1
    assert ft["split"] == "test" and ft["finetune"]["epochs"] == 3
    rec = json.loads((single / "recipe.json").read_text())
    assert rec["finetune"]["epochs"] == 3 and rec["layers"] == json.loads((recipe / "recipe.json").read_text())["layers"]
    assert not (single / "checkpoint.pt").exists()                     # removed once the folder is complete
    before, after = _zeros(recipe / "model.pt", cnn.layer_names), _zeros(single / "model.pt", cnn.layer_names)
    for n in cnn.layer_names:
        assert bool((after[n] | ~before[n]).all()), n                   # zeros stay zero
    assert ft["pruned"]["accuracy"] > pr["pruned"]["accuracy"] + 5      # and accuracy recovers (56 % -> 97 %+)


def test_finetune_command_refuses_to_overwrite_an_unfinished_run_and_to_resume_nothing(recipe, tmp_path, capsys):
    r = str(recipe / "recipe.json")
    assert main(["finetune", "--recipe", r, "--resume", "--out", str(tmp_path / "none")]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "checkpoint.pt").write_bytes(b"x")
    assert main(["finetune", "--recipe", r, "--out", str(tmp_path / "busy")]) == 2
    assert "unfinished fine-tuning run" in capsys.readouterr().err
    assert (tmp_path / "busy" / "checkpoint.pt").read_bytes() == b"x"
    assert main(["finetune", "--recipe", r, "--epochs", "0", "--out", str(tmp_path / "z")]) == 2
    assert main(["finetune", "--recipe", r, "--device", "tpu", "--out", str(tmp_path / "z")]) == 2
    assert "Unknown device" in capsys.readouterr().err


# ---------------------------------------------------------------- two processes under torchrun

def _torchrun(recipe: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = BIN / "pruning-explorer"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python",
           *([str(exe)] if exe.exists() else [sys.executable, "-m", "explorer.cli"]),
           "finetune", "--recipe", str(recipe / "recipe.json"), "--epochs", "3", "--no-latency",
           "--out", str(out), *extra]
    e = {k: v for k, v in os.environ.items() if k != "PRUNING_EXPLORER_KILL_AFTER_EPOCH"}
    e.update({"OMP_NUM_THREADS": "1", **(env or {})})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=e,
                          cwd=str(Path(__file__).resolve().parent.parent))


@pytest.fixture(scope="module")
def ddp(recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "ft"
    r = _torchrun(recipe, out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_ddp_two_processes_masks_agree_zeros_stay_zero_and_accuracy_recovers(recipe, single, ddp, cnn):
    out, run = ddp
    rep = json.loads((out / "report.json").read_text())
    assert rep["world_size"] == 2
    ft = rep["finetune"]
    assert ft["backend"] == "gloo" and ft["world_size"] == 2
    assert len(ft["mask_digests"]) == 2 and len(set(ft["mask_digests"])) == 1      # masks equal across ranks
    assert len(ft["state_digests"]) == 2 and len(set(ft["state_digests"])) == 1    # so are the final weights
    assert "16 per process" in run.stderr and run.stderr.count("pruned: sparsity") == 1   # rank 0 alone reports
    before, after = _zeros(recipe / "model.pt", cnn.layer_names), _zeros(out / "model.pt", cnn.layer_names)
    for n in cnn.layer_names:
        assert bool((after[n] | ~before[n]).all()), n
    one = json.loads((single / "report.json").read_text())
    assert abs(rep["pruned"]["accuracy"] - one["pruned"]["accuracy"]) <= 2.0     # recovers as in one process
    assert rep["pruned"]["accuracy"] > json.loads((recipe / "report.json").read_text())["pruned"]["accuracy"] + 5


def test_ddp_run_killed_after_its_first_epoch_resumes_to_the_same_model(recipe, ddp, tmp_path):
    out = tmp_path / "ft"
    killed = _torchrun(recipe, out, env={"PRUNING_EXPLORER_KILL_AFTER_EPOCH": "1"})
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]          # no half-written results
    again = _torchrun(recipe, out, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed after epoch 1" in again.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["finetune"]["resumed_from_epoch"] == 1 and [h["epoch"] for h in rep["finetune"]["history"]] == [1, 2, 3]
    assert (out / "model.pt").read_bytes() == (ddp[0] / "model.pt").read_bytes()


def test_prune_with_a_recipe_and_no_model_takes_the_recipes_model(tmp_path):
    assert main(["prune", "--model", "digits-mlp", "--sparsity", "0.5", "--no-latency", "--out", str(tmp_path / "a")]) == 0
    assert main(["prune", "--recipe", str(tmp_path / "a" / "recipe.json"), "--no-latency",
                 "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()


def test_the_exported_job_script_runs_as_written(recipe, tmp_path):
    from explorer.core.finetune_job import write_job

    if not (BIN / "pruning-explorer").exists():
        pytest.skip("the pruning-explorer script is not installed next to this Python")
    d = json.loads((recipe / "recipe.json").read_text())
    files = write_job(tmp_path / "job", d, nproc=2, device="cpu", epochs=1)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["sh", str(files["script"]), "--no-latency"], capture_output=True, text=True, timeout=300,
                       env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "job" / "result" / "report.json").read_text())
    assert rep["world_size"] == 2 and rep["finetune"]["epochs"] == 1
