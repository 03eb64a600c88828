"""model.dcz: round trips bit for bit, stage sizes recomputed from the documented format, bad archives refused,
trained quantization keeps sharing and zeros, and the `compress` command's files."""
from __future__ import annotations

import heapq
import json
import os
import zlib

import numpy as np
import pytest
import torch

from explorer.core.compress.dcz import encode_archive
from explorer.core.compress.flow import compress_state
from explorer.core.compress.quantize import QuantSettings, quantize_state, quantized_state
from explorer.core.errors import Cancelled, ModelLoadError
from explorer.core.formats import dcz
from explorer.core.jobs import CancelToken
from explorer.core.train.finetune import FinetuneConfig
from explorer.core.train.quantize import SharedLayer, _Shared, train_centroids

from .helpers import assert_bit_identical


def _pruned(session, sparsity=0.9):
    session.set_uniform(session.layer_names, sparsity)
    session.apply()
    return {k: v.detach().clone() for k, v in session.module.state_dict().items()}


@pytest.fixture(scope="module")
def mlp_quant():
    from explorer.core.session import Session

    s = Session.open("digits-mlp")
    state = _pruned(s)
    settings = QuantSettings.build(s.layers, bits="4", index_bits="conv=8,linear=4")
    quants = quantize_state(state, settings)
    return s, state, quants, quantized_state(state, quants)


# ---------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("stage", ["pruned", "quantized", "huffman"])
def test_archive_round_trip_is_bit_identical(mlp_quant, stage):
    s, pruned, quants, qstate = mlp_quant
    meta = {"arch": "digits-mlp", "model": "digits-mlp"}
    if stage == "pruned":
        enc = encode_archive(pruned, meta, "pruned", index_bits={n: 3 for n in quants})   # many fillers
        want = pruned
    else:
        enc = encode_archive(qstate, meta, stage, quants=quants)
        want = qstate
    dec = dcz.decode_archive(enc.data)
    assert dec.meta == meta and list(dec.state) == list(want)
    assert_bit_identical(dec.state, want)
    for a, b in zip(enc.records, dec.records):              # the reader accounts the same bits as the writer
        assert (a.name, a.kind, a.size, a.entries, a.kept, a.weight_stream_bits, a.index_stream_bits) == \
               (b.name, b.kind, b.size, b.entries, b.kept, b.weight_stream_bits, b.index_stream_bits)


def test_conv_model_with_buffers_and_odd_layers_round_trips(cnn):
    state = _pruned(cnn, 0.7)
    state["backbone.conv0.weight"] = torch.zeros_like(state["backbone.conv0.weight"])   # an empty layer
    w = state["classifier.weight"].clone()
    w[3] = 0.0                                                                            # an empty row
    state["classifier.weight"] = w
    settings = QuantSettings.build(cnn.layers, bits="conv=2,linear=1", index_bits=4)
    quants = quantize_state(state, settings)
    qstate = quantized_state(state, quants)
    enc = encode_archive(qstate, {"arch": "digits-cnn"}, "huffman", quants=quants)
    assert_bit_identical(dcz.decode_archive(enc.data).state, qstate)      # BatchNorm buffers, int64 counters too
    dense = {k: v for k, v in qstate.items()}
    dense["backbone.conv1.weight"] = torch.ones_like(dense["backbone.conv1.weight"]) * 0.5   # a fully dense layer
    q = quantize_state(dense, QuantSettings.build(cnn.layers, bits=1, index_bits=1))
    enc = encode_archive(quantized_state(dense, q), {}, "quantized", quants=q)
    assert_bit_identical(dcz.decode_archive(enc.data).state, quantized_state(dense, q))


# ---------------------------------------------------------------------------- sizes, recomputed independently

def _varint_len(v: int) -> int:
    n = 1
    while v >= 128:
        v >>= 7
        n += 1
    return n


def _header_len(name: str, shape) -> int:
    return _varint_len(len(name.encode())) + len(name.encode()) + 3 + sum(_varint_len(d) for d in shape)


def _entries(positions, numel, b):
    """The test's own relative indices: (gaps as stored, filler flags)."""
    span, prev, gaps, fill = 1 << b, -1, [], []
    for p in positions:
        g = p - prev
        while g > span:
            gaps.append(span - 1)
            fill.append(True)
            g -= span
        gaps.append(g - 1)
        fill.append(False)
        prev = p
    while numel - (prev + 1) >= span:
        gaps.append(span - 1)
        fill.append(True)
        prev += span
    return np.array(gaps), np.array(fill, dtype=bool)


def _huffman_bits(counts) -> int:
    h = [int(c) for c in counts if c > 0]
    if not h:
        return 0
    if len(h) == 1:
        return h[0]
    heapq.heapify(h)
    total = 0
    while len(h) > 1:
        a, b = heapq.heappop(h), heapq.heappop(h)
        total += a + b
        heapq.heappush(h, a + b)
    return total


def _expected_size(state, quants, meta, stage) -> int:
    meta_raw = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    size = 4 + 1 + _varint_len(len(meta_raw)) + len(meta_raw) + _varint_len(len(state)) + 4
    for key, t in state.items():
        layer = key[:-len(".weight")] if key.endswith(".weight") else None
        size += _header_len(key, tuple(t.shape))
        if layer not in quants:
            size += t.numel() * t.element_size()
            continue
        q = quants[layer]
        b_idx, b = q.index_bits, q.bits
        gaps, fill = _entries(q.positions.tolist(), t.numel(), b_idx)
        n = len(gaps)
        size += 1 + _varint_len(n)
        if stage == "pruned":
            size += (n * b_idx + 7) // 8 + 4 * n
            continue
        k = len(q.centroids) + (1 if fill.any() else 0)
        size += 1 + _varint_len(k) + 4 * k
        if stage == "quantized":
            size += (n * b_idx + 7) // 8 + (n * b + 7) // 8
            continue
        codes = np.bincount(q.labels, minlength=k)
        codes[-1] += int(fill.sum())
        for hist, alphabet in ((np.bincount(gaps, minlength=1 << b_idx), 1 << b_idx), (codes, k)):
            nbits = _huffman_bits(hist)
            assert n <= 4096                                   # no block table at these sizes
            size += (alphabet * 5 + 7) // 8 + _varint_len(nbits) + (nbits + 7) // 8
    return size


@pytest.mark.parametrize("stage", ["pruned", "quantized", "huffman"])
def test_stage_sizes_match_the_documented_format(mlp_quant, stage):
    s, pruned, quants, qstate = mlp_quant
    meta = {"arch": "digits-mlp", "model": "digits-mlp"}
    if stage == "pruned":
        enc = encode_archive(pruned, meta, "pruned", index_bits={n: q.index_bits for n, q in quants.items()})
    else:
        enc = encode_archive(qstate, meta, stage, quants=quants)
    assert enc.size == _expected_size(qstate, quants, meta, stage)


def test_compress_state_reports_stages_and_layers(mlp_quant):
    s, pruned, quants, _ = mlp_quant
    r = compress_state(s.model_copy(), s.dataset, pruned, QuantSettings.build(s.layers, bits=4, index_bits=4),
                       {"arch": "digits-mlp", "model": "digits-mlp"}, accuracy={"dense": 98.0})
    assert [x["name"] for x in r.stages] == ["dense", "pruned", "quantized", "huffman"]
    assert r.stages[0]["size_bytes"] == 50_610 * 4
    for x in r.stages:
        assert x["ratio"] == pytest.approx(r.stages[0]["size_bytes"] / x["size_bytes"])
        assert x["size_bytes"] == (r.stages[0]["size_bytes"] if x["name"] == "dense" else r.archives[x["name"]].size)
    assert r.stage("huffman")["size_bytes"] < r.stage("quantized")["size_bytes"] < r.stage("pruned")["size_bytes"]
    assert r.stage("huffman")["accuracy"] == r.stage("quantized")["accuracy"] is not None   # lossless
    for row in r.layers:
        q = r.quants[row["name"]]
        assert set(row) == {"name", "params", "kept", "weight_bits", "index_bits", "weight_bits_huffman",
                            "index_bits_huffman", "size_bytes_quantized", "size_bytes_huffman"}
        assert row["kept"] == pytest.approx(q.kept / row["params"]) and row["weight_bits"] == 4
        rec = r.archive.record(f"{row['name']}.weight")
        assert row["weight_bits_huffman"] == pytest.approx(rec.weight_stream_bits / rec.entries)
        assert row["size_bytes_huffman"] == rec.size


# ---------------------------------------------------------------------------- bad archives

@pytest.fixture(scope="module")
def good_archive(mlp_quant):
    return encode_archive(mlp_quant[3], {"arch": "digits-mlp"}, "huffman", quants=mlp_quant[2]).data


def _recrc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_truncated_archives_are_refused(good_archive):
    for cut in (0, 3, 5, 20, len(good_archive) // 2, len(good_archive) - 1):
        with pytest.raises(dcz.ArchiveError, match="not a valid compressed model archive"):
            dcz.decode_archive(good_archive[:cut])
    # a truncated body with a fresh checksum: the reader itself notices the missing bytes
    with pytest.raises(dcz.ArchiveError, match="truncated"):
        dcz.decode_archive(_recrc(good_archive[:len(good_archive) // 2]))


def test_wrong_magic_version_and_checksum_are_refused(good_archive):
    with pytest.raises(dcz.ArchiveError, match="magic"):
        dcz.decode_archive(b"PK\x03\x04" + good_archive[4:])
    with pytest.raises(dcz.ArchiveError, match="version 2"):
        dcz.decode_archive(good_archive[:4] + b"\x02" + good_archive[5:])
    flipped = bytearray(good_archive)
    flipped[len(flipped) // 2] ^= 0x40
    with pytest.raises(dcz.ArchiveError, match="checksum"):
        dcz.decode_archive(bytes(flipped))
    with pytest.raises(dcz.ArchiveError, match="unexpected bytes"):
        dcz.decode_archive(_recrc(good_archive[:-4] + b"\x00\x00"))


def _archive(records: list[bytes], count: int | None = None) -> bytes:
    body = dcz.MAGIC + bytes([dcz.VERSION, 2]) + b"{}" + bytes([len(records) if count is None else count])
    return _recrc(body + b"".join(records))


def _name(s: str) -> bytes:
    return bytes([len(s)]) + s.encode()


def test_inconsistent_lengths_and_absurd_sizes_are_refused():
    f32 = 1
    # a dense tensor that claims more bytes than the file has
    with pytest.raises(dcz.ArchiveError, match="truncated"):
        dcz.decode_archive(_archive([_name("w") + bytes([dcz.DENSE, f32, 1]) + bytes([0x80, 0x80, 0x40])]))
    # absurd dimensions: refused before anything is allocated
    huge = bytes([0xFF] * 4 + [0x7F])                        # 2^35 - 1
    with pytest.raises(dcz.ArchiveError, match="declares"):
        dcz.decode_archive(_archive([_name("w") + bytes([dcz.DENSE, f32, 1]) + huge]))
    big = bytes([0xFF, 0xFF, 0xFF, 0x07])                    # 16.7 M elements
    with pytest.raises(dcz.ArchiveError, match="declares"):
        dcz.decode_archive(_archive([_name("w") + bytes([dcz.DENSE, f32, 3]) + big * 3]))
    # a sparse tensor of 16.7 M zeros stored as 0 entries: its trailing zeros are not bridged by fillers
    with pytest.raises(dcz.ArchiveError, match="trailing zeros"):
        dcz.decode_archive(_archive([_name("w") + bytes([dcz.SHARED, f32, 1]) + big + bytes([3, 0, 2, 0])]))
    # more entries than the bytes can hold
    with pytest.raises(dcz.ArchiveError, match="truncated"):
        dcz.decode_archive(_archive([_name("w") + bytes([dcz.SHARED, f32, 1, 16, 3]) + bytes([0xFF, 0x7F, 2, 1])
                                     + b"\x00\x00\x80\x3f"]))
    # a code beyond the codebook
    rec = (_name("w") + bytes([dcz.SHARED, f32, 1, 4, 3, 1, 2, 1]) + b"\x00\x00\x80\x3f"
           + bytes([0b00000000, 0b11000000]))
    with pytest.raises(dcz.ArchiveError, match="beyond its codebook"):
        dcz.decode_archive(_archive([rec]))
    # unknown kind and dtype, more tensors declared than present, a codebook larger than 2^b
    with pytest.raises(dcz.ArchiveError, match="unknown kind"):
        dcz.decode_archive(_archive([_name("w") + bytes([9, f32, 0])]))
    with pytest.raises(dcz.ArchiveError, match="unknown dtype"):
        dcz.decode_archive(_archive([_name("w") + bytes([dcz.DENSE, 99, 0])]))
    with pytest.raises(dcz.ArchiveError):
        dcz.decode_archive(_archive([_name("w") + bytes([dcz.DENSE, f32, 0]) + b"\x00" * 4], count=2))
    with pytest.raises(dcz.ArchiveError, match="codebook"):
        dcz.decode_archive(_archive([_name("w") + bytes([dcz.SHARED, f32, 1, 4, 3, 1, 2, 9]) + b"\x00" * 40]))
    # the smallest valid archive of this kind decodes (so the refusals above are about the flaws)
    ok = _name("w") + bytes([dcz.SHARED, f32, 1, 4, 3, 1, 2, 1]) + b"\x00\x00\x80\x3f" + bytes([0b00100000, 0])
    assert dcz.decode_archive(_archive([ok])).state["w"].tolist() == [0.0, 1.0, 0.0, 0.0]


def test_bad_archive_files_are_refused_when_opened_as_a_model(tmp_path, good_archive):
    from explorer.core.model.zoo import load_model

    p = tmp_path / "model.dcz"
    p.write_bytes(good_archive[:100])
    with pytest.raises(ModelLoadError, match="not a valid compressed model archive"):
        load_model(str(p))
    p.write_bytes(b"")
    with pytest.raises(ModelLoadError):
        load_model(str(p))


# ---------------------------------------------------------------------------- trained quantization

def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(6, 5))
    layer = SharedLayer(np.array([0, 3, 7, 8, 20, 29]), np.array([1, 0, 1, 2, 0, 1]), np.array([0.5, -1.0, 2.0],
                                                                                                 np.float32))
    sh = _Shared(w, layer)
    x = torch.randn(4, 5)
    loss = (x @ w.t()).pow(2).sum()
    loss.backward()
    sh.gather_grad()
    # reference: the same weight as a function of the centroids, differentiated by autograd
    c = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    flat = torch.zeros(30).index_put((torch.tensor(layer.positions),), c[torch.tensor(layer.labels)])
    (x @ flat.reshape(6, 5).t()).pow(2).sum().backward()
    assert torch.allclose(sh.centroids.grad, c.grad)
    assert w.grad is None


def test_trained_quantization_keeps_sharing_and_zeros(mlp_quant):
    s, pruned, quants, qstate = mlp_quant
    module = s.model_copy(qstate)
    layers = {n: SharedLayer(q.positions, q.labels, q.centroids) for n, q in quants.items()}
    cfg = FinetuneConfig(epochs=2, lr=3e-3, optimizer="adam", weight_decay=0.0, max_batches=8)
    r = train_centroids(module, s.dataset, layers, cfg)
    assert len(r.history) == 2 and r.best_accuracy is not None
    changed = False
    for n, q in quants.items():
        w = r.state[f"{n}.weight"].reshape(-1).numpy()
        c = r.centroids[n]
        assert np.array_equal(w[q.positions], c[q.labels])                 # every kept weight is its centroid
        rest = np.ones(w.size, bool)
        rest[q.positions] = False
        assert np.all(w[rest].view(np.int32) == 0)                            # pruned weights stay +0.0
        assert len(np.unique(w[w != 0])) <= 2 ** q.bits
        changed |= not np.array_equal(c, q.centroids)
    assert changed or r.best_epoch == 0
    # the kept epoch is the best on validation, epoch 0 (the k-means values) included
    from explorer.core.train.evaluate import evaluate
    assert r.best_accuracy >= evaluate(s.model_copy(qstate), s.dataset, "val").accuracy
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        train_centroids(module, s.dataset, layers, cfg, cancel=tok)


# ---------------------------------------------------------------------------- the compress command

def run_cli(capsys, *argv):
    from explorer.cli import main

    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


FAST = ["--model", "digits-mlp", "--sparsity", "0.9", "--finetune-epochs", "1", "--optimizer", "adam",
        "--quantize-epochs", "1", "--bits", "linear=4,fc3=3", "--index-bits", "4"]


@pytest.fixture(scope="module")
def compress_out(tmp_path_factory):
    from explorer.cli import main

    out = tmp_path_factory.mktemp("compress") / "out"
    assert main(["compress", *FAST, "--out", str(out)]) == 0
    return out


def test_compress_writes_the_four_files(compress_out):
    assert sorted(os.listdir(compress_out)) == ["compression.json", "model.dcz", "model.pt", "recipe.json"]
    from explorer.core.model.nets import DigitsMLP

    sd = torch.load(compress_out / "model.pt", map_location="cpu", weights_only=True)
    DigitsMLP().load_state_dict(sd)
    assert_bit_identical(dcz.load_dcz(compress_out / "model.dcz"), sd)
    for n, b in (("fc1", 4), ("fc2", 4), ("fc3", 3)):
        w = sd[f"{n}.weight"]
        assert 0.85 < float((w == 0).float().mean()) < 0.95
        assert len(torch.unique(w[w != 0])) <= 2 ** b
        assert not bool(((w == 0) & torch.signbit(w)).any())


def test_compression_json_has_exactly_the_contract_keys(compress_out):
    d = json.loads((compress_out / "compression.json").read_text())
    assert set(d) == {"model", "dataset", "stages", "layers"} and d["model"] == "digits-mlp"
    assert [s["name"] for s in d["stages"]] == ["dense", "pruned", "quantized", "huffman"]
    for s in d["stages"]:
        assert set(s) == {"name", "size_bytes", "ratio", "accuracy"}
        assert s["ratio"] == pytest.approx(d["stages"][0]["size_bytes"] / s["size_bytes"])
        assert 0 < s["accuracy"] <= 100
    assert d["stages"][3]["size_bytes"] == os.path.getsize(compress_out / "model.dcz")
    assert [l["name"] for l in d["layers"]] == ["fc1", "fc2", "fc3"]
    for l in d["layers"]:
        assert set(l) == {"name", "params", "kept", "weight_bits", "index_bits", "weight_bits_huffman",
                          "index_bits_huffman", "size_bytes_quantized", "size_bytes_huffman"}
        assert 0 < l["kept"] < 1 and l["index_bits"] == 4
    recipe = json.loads((compress_out / "recipe.json").read_text())
    assert recipe["quantize"]["bits"] == {"fc1": 4, "fc2": 4, "fc3": 3}
    assert recipe["quantize"]["finetune"]["epochs"] == 1 and recipe["finetune"]["epochs"] == 1


def test_compress_recipe_reproduces_the_archive(compress_out, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "compress", "--recipe", compress_out / "recipe.json", "--out", tmp_path / "again")
    assert rc == 0, err
    assert (tmp_path / "again" / "model.dcz").read_bytes() == (compress_out / "model.dcz").read_bytes()


def test_archive_opens_as_a_model(compress_out, capsys):
    from explorer.core.session import Session

    s = Session.open(str(compress_out / "model.dcz"))
    assert s.require().model.arch == "digits-mlp" and s.dataset.spec == "digits"
    assert_bit_identical(s.module.state_dict(), dcz.load_dcz(compress_out / "model.dcz"))
    rc, out, _ = run_cli(capsys, "info", "--model", compress_out / "model.dcz", "--json")
    assert rc == 0 and json.loads(out)["layers"][0]["sparsity"] > 0.8


@pytest.mark.parametrize("extra,match", [
    (["--bits", "9"], "1 to 8"), (["--bits", "2.5"], "whole number"), (["--bits", "conv=x"], "whole number"),
    (["--bits", "fc9=3"], "unknown layer"), (["--index-bits", "13"], "1 to 12"),
    (["--quantize-epochs", "-1"], "0 or more"), (["--quantize-lr", "0.1"], "needs --quantize-epochs"),
])
def test_compress_bad_flags_exit_2(tmp_path, capsys, extra, match):
    rc, out, err = run_cli(capsys, "compress", "--model", "digits-mlp", "--sparsity", "0.5", *extra,
                           "--out", tmp_path / "o")
    assert rc == 2 and match in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_compress_without_a_plan_exits_2(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "compress", "--model", "digits-mlp", "--out", tmp_path / "o")
    assert rc == 2 and "Nothing to prune" in err
