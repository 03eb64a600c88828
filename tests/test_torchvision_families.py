"""One torchvision net per family, end to end (the sweep script runs all of them): masks at every granularity,
and channel compaction equal to the masked model with fewer parameters -- concatenations (DenseNet, GoogLeNet),
grouped convolutions (RegNet), depthwise + squeeze-excitation (MobileNetV3), channel shuffle (ShuffleNet),
LayerNorm (ConvNeXt), attention (a two-layer ViT)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from explorer.core.arch_check import check_session
from explorer.core.session import Session

ROOT = Path(__file__).resolve().parent.parent

FAMILIES = {
    "resnet18": (64, ()),
    "densenet121": (64, ()),                 # concatenation: was 'size of tensor a (2) must match b (32)'
    "regnet_x_400mf": (64, ()),              # grouped convs: was an index error inside Torch-Pruning
    "mobilenet_v3_small": (64, ()),
    "shufflenet_v2_x0_5": (64, ("Torch-Pruning",)),   # channel shuffles: those groups stay zeroed
    "googlenet": (64, ()),
    "convnext_tiny": (64, ("statistics",)),
}


def _open(arch: str, size: int) -> Session:
    return Session.open(f"torchvision:{arch}", "synthetic", input_shape=(3, size, size))


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_every_granularity_and_exact_compaction(arch):
    size, kept_reasons = FAMILIES[arch]
    torch.manual_seed(0)
    r = check_session(_open(arch, size))
    bad = {g: c.error for g, c in r.granularities.items() if not c.ok}
    assert not bad, bad
    assert r.granularities["element"].layers == r.layers
    c = r.compact
    assert c is not None and c.ok, c
    assert c.rel_error <= 1e-4 and c.params_after < 0.9 * c.params_before and c.removed_groups > 0
    for reason in kept_reasons:      # what cannot be removed stays zeroed, and says why
        assert any(reason in why for why in c.kept_masked.values()), c.kept_masked


def test_regnet_grouped_convolutions_lose_channels_evenly():
    from explorer.core.model.metrics import param_count
    from explorer.core.prune.compact import compact_checked, compaction_plan

    s = _open("regnet_x_400mf", 64)
    grouped = [n for n, m in s.module.named_modules() if isinstance(m, torch.nn.Conv2d) and 1 < m.groups < m.in_channels]
    g = s.channel_group(grouped[0])
    assert g.blocks is not None and g.num_blocks > 1
    s.set_uniform(s.layer_names, 0.3, "channel")
    s.apply()
    state = {k: v.clone() for k, v in s.module.state_dict().items()}
    removals, kept = compaction_plan(s, s.plan)
    c, dropped = compact_checked(s.module, state, removals, s.dataset.example_input(2))
    assert not kept and not dropped
    for n in grouped:
        m = dict(c.named_modules())[n]
        assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0
    assert param_count(c) < param_count(s.module)


def test_densenet_channel_masks_zero_the_concatenated_norm_entries():
    s = _open("densenet121", 64)
    g = s.channel_group("features.denseblock1.denselayer1.conv2")
    offsets = {idx[0] for name, idx in g.aux if name.endswith("norm1.weight")}
    assert len(offsets) == 1 and offsets.pop() > 0      # the layer's channels sit at an offset after the concat
    s.set_layer("features.denseblock1.denselayer1.conv2", sparsity=0.5, granularity="channel")
    state = s.masked_state()
    rows = (state["features.denseblock1.denselayer1.conv2.weight"] == 0).flatten(1).all(1)
    off = [idx for name, idx in g.aux if name == "features.denseblock1.denselayer2.norm1.weight"][0]
    norm = state["features.denseblock1.denselayer2.norm1.weight"][torch.tensor(off)]
    assert int(rows.sum()) == 16 and bool((norm[rows] == 0).all()) and bool((norm[~rows] != 0).all())


def test_tiny_vit_attention_is_listed_and_prunable():
    s = Session.open(None, "synthetic", arch="tests.tiny_models:TinyViT", trust=True)
    names = s.layer_names
    in_proj = [n for n in names if n.endswith("self_attention.in_proj")]
    out_proj = [n for n in names if n.endswith("self_attention.out_proj")]
    assert len(in_proj) == 2 and len(out_proj) == 2
    layer = s.layer(in_proj[0])
    assert layer.key.endswith("self_attention.in_proj_weight") and layer.weight_shape == (96, 32)
    assert layer.macs > 0 and s.layer(out_proj[0]).macs > 0
    r = check_session(s)
    assert all(c.ok for c in r.granularities.values()), {g: c.error for g, c in r.granularities.items()}
    assert r.compact.ok and r.compact.params_after < r.compact.params_before
    assert any("MultiheadAttention" in why for why in r.compact.kept_masked.values())
    s.set_layer(in_proj[0], sparsity=0.5, granularity="2:4")
    w = s.masked_state()[layer.key]
    assert bool(((w != 0).reshape(96, 8, 4).sum(-1) == 2).all())


def test_vit_b_16_info_lists_attention_and_the_true_parameter_total(capsys):
    from explorer.cli import main

    rc = main(["info", "--model", "torchvision:vit_b_16", "--json"])
    p = capsys.readouterr()
    assert rc == 0, p.err[-1500:]
    d = json.loads(p.out)
    assert d["totals"]["params"] == 86_567_656
    names = [l["name"] for l in d["layers"]]
    assert sum(n.endswith("self_attention.in_proj") for n in names) == 12
    assert sum(n.endswith("self_attention.out_proj") for n in names) == 12
    assert d["totals"]["prunable_params"] == sum(l["params"] for l in d["layers"])
    assert d["totals"]["prunable_params"] > 85_000_000     # the attention third is prunable now
