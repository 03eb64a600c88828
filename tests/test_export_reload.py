"""Exports load where they came from: the prune flow's model.pt keeps the state_dict's metadata (module versions),
so a fresh instance of the model's class loads it with ``load_state_dict(strict=True)`` after
``torch.load(weights_only=True)`` and computes the masked model's outputs -- one torchvision net per family
(MNASNet refuses a state_dict without its version), the built-ins, a timm net and a Hugging Face folder's weights;
the compress folder's model.pt too."""
from __future__ import annotations

import pytest
import torch

from explorer.core.arch_check import check_reload
from explorer.core.model.loading import resolve
from explorer.core.session import Session

FAMILIES = ["resnet18", "mobilenet_v3_small", "mnasnet0_5", "squeezenet1_0", "shufflenet_v2_x0_5",
            "efficientnet_b0", "regnet_y_400mf"]


def _open(model: str, dataset: str = "synthetic", **kw) -> Session:
    s = Session()
    s.apply_load(resolve(model, dataset, defer_groups=True, **kw))   # no channel groups: element masks only
    return s


def _check(s: Session, factory, layers=None):
    torch.manual_seed(0)
    example = s.dataset.example_input(1)
    # two layers pruned are enough to show the zeros travel; every tensor and the metadata are written anyway
    r = check_reload(s, factory, 0.5, example, layers or s.layer_names[:2])
    assert r.ok, r.error
    assert r.max_difference is not None and r.max_difference <= 1e-5


@pytest.mark.parametrize("arch", FAMILIES)
def test_torchvision_model_pt_loads_strictly_into_a_fresh_instance(arch):
    tv = pytest.importorskip("torchvision")
    _check(_open(f"torchvision:{arch}", input_shape=(3, 32, 32)), lambda: tv.models.get_model(arch))


@pytest.mark.parametrize("name", ["digits-cnn", "digits-mlp"])
def test_builtin_model_pt_loads_strictly(name):
    from explorer.core.model.zoo import BUILTINS

    _check(Session.open(name, "digits"), BUILTINS[name].factory, layers=None)


def test_timm_model_pt_loads_strictly():
    timm = pytest.importorskip("timm")
    _check(_open("timm:test_efficientnet", input_shape=(3, 32, 32)), lambda: timm.create_model("test_efficientnet"))


def test_hf_folder_model_pt_loads_strictly(tmp_path):
    pytest.importorskip("transformers")
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests import tiny_models as tiny

    folder = tiny.llama_folder(tmp_path / "llama")
    text = tiny.write_text(tmp_path / "text.txt", words=600)
    s = Session.open(f"hf:{folder}", f"text:{text}")
    _check(s, lambda: AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder))))


def test_model_pt_carries_metadata_that_mnasnet_needs(tmp_path):
    """The saved object is an OrderedDict with ``_metadata`` (surviving weights_only loading); without it MNASNet
    refuses the state_dict -- the failure this guards against."""
    tv = pytest.importorskip("torchvision")
    from collections import OrderedDict

    from explorer.core.flows.prune import run as run_prune

    s = _open("torchvision:mnasnet0_5", input_shape=(3, 32, 32))
    s.set_uniform(s.layer_names[:1], 0.5, "element")
    run_prune(s.snapshot(), tmp_path / "out", measure=False)
    back = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert isinstance(back, OrderedDict) and back._metadata[""]["version"] == 2     # MNASNet._version
    stripped = dict(back)                                  # what model.pt used to hold
    with pytest.raises(ValueError, match="version"):
        tv.models.mnasnet0_5().load_state_dict(stripped)
    again = Session.open(str(tmp_path / "out" / "model.pt"), "synthetic", arch="torchvision:mnasnet0_5",
                         input_shape=(3, 32, 32))          # our own loader reads it back
    assert torch.equal(again.original_state()[f"{s.layer_names[0]}.weight"], back[f"{s.layer_names[0]}.weight"])


def test_compress_folder_model_pt_loads_strictly(tmp_path):
    from explorer.core.compress.quantize import QuantSettings
    from explorer.core.flows.compress import run as run_compress
    from explorer.core.model.nets import DigitsCNN

    s = Session.open("digits-cnn")
    s.set_uniform(s.layer_names, 0.5)
    settings = QuantSettings.build(s.layers, bits=4)
    run_compress(s.snapshot(), settings, tmp_path / "c")
    back = torch.load(tmp_path / "c" / "model.pt", weights_only=True)
    assert getattr(back, "_metadata", None)
    fresh = DigitsCNN()
    fresh.load_state_dict(back, strict=True)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, back[k]), k
