"""The built-in models are reproducible: retraining gives the committed accuracy, deterministically."""
from __future__ import annotations

import torch

from explorer.core.session import Session
from explorer.core.train.builtin_training import train_builtin
from explorer.core.train.evaluate import evaluate


def test_retraining_digits_mlp_reproduces_the_committed_model(tmp_path):
    info = train_builtin("digits-mlp", tmp_path, seed=0, log=lambda m: None)
    assert info["test_accuracy"] >= 97.0
    committed = Session.open("digits-mlp")
    committed_acc = evaluate(committed.module, committed.dataset, "test").accuracy
    assert abs(info["test_accuracy"] - committed_acc) <= 1.0
    retrained = torch.load(tmp_path / "digits-mlp.pt", weights_only=True)
    assert set(retrained) == set(committed.module.state_dict())
    # same seed, same machine, one thread: bit-identical to a second run
    again = train_builtin("digits-mlp", tmp_path / "again", seed=0, log=lambda m: None)
    second = torch.load(tmp_path / "again" / "digits-mlp.pt", weights_only=True)
    assert again["test_accuracy"] == info["test_accuracy"]
    assert all(torch.equal(retrained[k], second[k]) for k in retrained)


def test_digits_vgg_is_a_trained_lab_vgg_on_upscaled_digits():
    s = Session.open("digits-vgg")
    assert s.dataset.spec == "digits" and s.dataset.input_shape == (1, 32, 32)
    assert [l.name for l in s.layers][:2] == ["backbone.conv0", "backbone.conv1"] and len(s.layers) == 9
    acc = evaluate(s.module, s.dataset, "test").accuracy
    assert acc >= 97.0, acc
    x, _ = next(s.dataset.batches("test", batch_size=4))
    assert x.shape == (4, 1, 32, 32)
