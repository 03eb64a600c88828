"""Deep Compression building blocks: 1-D k-means, relative indices at the edges, canonical Huffman coding,
bit packing, and the per-layer bits settings."""
from __future__ import annotations

import heapq

import numpy as np
import pytest
import torch

from explorer.core.compress.kmeans import initial_centroids, kmeans_1d
from explorer.core.compress.quantize import QuantSettings, parse_bits, quantize_layer
from explorer.core.errors import PlanError
from explorer.core.formats import huffman
from explorer.core.formats.relindex import (
    check_length,
    decode_positions,
    encode_positions,
    filler_count,
    pack_bits,
    unpack_bits,
)

# ---------------------------------------------------------------------------- k-means


def _mixture(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(-0.3, 0.05, n // 3), rng.normal(0.1, 0.02, n // 3), rng.laplace(0.4, 0.1, n - 2 * (n // 3))]
    return np.concatenate(parts).astype(np.float32)


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_kmeans_assignment_is_optimal_and_centroids_are_the_means(init):
    x = _mixture()
    r = kmeans_1d(x, 16, init=init, seed=3)
    assert r.converged and 1 <= r.k <= 16
    c = r.centroids.astype(np.float64)
    assert np.all(np.diff(c) > 0)                                     # ascending, distinct
    dist = np.abs(x[:, None].astype(np.float64) - c[None, :])
    own = dist[np.arange(len(x)), r.labels]
    assert np.all(own <= dist.min(axis=1) + 1e-12)                    # nearest centroid for every value
    for j in range(r.k):
        members = x[r.labels == j].astype(np.float64)
        assert len(members) > 0                                       # empty clusters are dropped
        assert abs(members.mean() - c[j]) <= 1e-6 * max(1.0, abs(c[j])) + 2e-7


def test_kmeans_inits_start_where_the_paper_says():
    x = np.sort(_mixture())
    lin = initial_centroids(x, 5, "linear")
    assert np.allclose(lin, np.linspace(x[0], x[-1], 5))
    dens = initial_centroids(x, 4, "density")
    for q, v in zip((0.125, 0.375, 0.625, 0.875), dens):             # evenly spaced on the CDF
        assert abs(np.mean(x <= v) - q) < 0.01
    a, b = initial_centroids(x, 6, "random", seed=1), initial_centroids(x, 6, "random", seed=1)
    assert np.array_equal(a, b) and set(a.astype(np.float32)) <= set(x)      # Forgy: seeded, drawn from the data
    with pytest.raises(PlanError):
        initial_centroids(x, 4, "kmeans++")


def test_kmeans_with_few_distinct_values_is_exact():
    x = np.array([0.5, -1.0, 0.5, 2.0, -1.0], np.float32)
    r = kmeans_1d(x, 8)
    assert np.array_equal(r.centroids, [-1.0, 0.5, 2.0])
    assert np.array_equal(r.centroids[r.labels], x)


def test_quantize_layer_never_makes_the_pruned_zeros_a_cluster():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 50, generator=g)
    w[w.abs() < 1.0] = 0.0                                            # ~68 % pruned
    q = quantize_layer("fc", w, bits=3, index_bits=8)
    assert np.array_equal(q.positions, np.flatnonzero(w.reshape(-1).numpy()))
    assert len(q.centroids) <= 8 and np.all(q.centroids != 0)
    qw = q.weight()
    assert torch.equal(qw == 0, w == 0)                               # the mask is unchanged
    assert len(torch.unique(qw[qw != 0])) <= 8
    # with fillers (index bits too narrow for the gaps) one code is the filler's zero: 2^b - 1 shared values
    q2 = quantize_layer("fc", w, bits=3, index_bits=1)
    assert filler_count(q2.positions, w.numel(), 1) > 0 and len(q2.centroids) <= 7


# ---------------------------------------------------------------------------- relative indices

def _reference_entries(positions, numel, b):
    """Straightforward loop version of the paper's rule (the test's own implementation)."""
    span, prev, out = 1 << b, -1, []
    for p in positions:
        gap = p - prev
        while gap > span:
            out.append(("filler", span))
            gap -= span
        out.append(("kept", gap))
        prev = p
    while numel - (prev + 1) >= span:
        out.append(("filler", span))
        prev += span
    return out


@pytest.mark.parametrize("positions,numel,b,fillers", [
    ([7], 20, 3, 1),                  # first gap exactly 2^b (from -1): no filler; 12 trailing zeros: one filler
    ([0, 8], 9, 3, 0),                # gap exactly 2^b
    ([0, 9], 10, 3, 1),               # gap 2^b + 1: one filler
    ([0, 20], 21, 3, 2),              # a run of 19 zeros > 2 * 2^b: two fillers
    ([3, 40, 41], 42, 2, 9),          # a gap of 37 with 2-bit gaps: nine fillers
    (list(range(64)), 64, 1, 0),      # fully dense layer: every gap is 1
    ([], 100, 3, 12),                 # empty layer: fillers bridge the zeros up to the end
    ([99], 100, 3, 12),               # only the last weight kept
])
def test_relative_indices_at_the_edges(positions, numel, b, fillers):
    pos = np.array(positions, dtype=np.int64)
    ri = encode_positions(pos, numel, b)
    ref = _reference_entries(positions, numel, b)
    assert ri.fillers == fillers == sum(1 for k, _ in ref if k == "filler") == filler_count(pos, numel, b)
    assert [int(s) + 1 for s in ri.stored] == [g for _, g in ref]            # stored gap - 1 in b bits
    assert int(ri.stored.max(initial=0)) < (1 << b)
    back = decode_positions(ri.stored, b)
    assert np.array_equal(back[ri.kept_slot], pos)
    assert check_length(back, numel, b) is None
    assert check_length(back, numel + (1 << b), b) is not None              # unbridged trailing zeros: refused


def test_empty_rows_are_long_gaps():
    w = np.zeros((5, 12), np.float32)
    w[0, [1, 11]] = 1.0
    w[3, [0, 5]] = 2.0                                                   # rows 1, 2 and 4 are empty
    pos = np.flatnonzero(w)
    ri = encode_positions(pos, w.size, 3)
    back = decode_positions(ri.stored, 3)
    flat = np.zeros(w.size, np.float32)
    flat[back[ri.kept_slot]] = w.reshape(-1)[pos]
    assert np.array_equal(flat.reshape(w.shape), w)
    assert ri.fillers == len([1 for k, _ in _reference_entries(list(pos), w.size, 3) if k == "filler"]) > 0


@pytest.mark.parametrize("width", [1, 3, 5, 8, 12, 16])
def test_bit_packing_round_trip(width):
    rng = np.random.default_rng(width)
    v = rng.integers(0, 1 << width, 1001)
    data = pack_bits(v, width)
    assert len(data) == (1001 * width + 7) // 8
    assert np.array_equal(unpack_bits(data, 1001, width), v)
    if width == 3:   # MSB first: 0b101, 0b110, 0b011 -> 10111001 1(0000000)
        assert pack_bits(np.array([5, 6, 3]), 3) == bytes([0b10111001, 0b10000000])


# ---------------------------------------------------------------------------- Huffman

def test_huffman_code_lengths_of_known_histograms():
    assert huffman.code_lengths(np.array([45, 13, 12, 16, 9, 5])).tolist() == [1, 3, 3, 3, 4, 4]   # CLRS 16.3
    assert huffman.code_lengths(np.array([8, 4, 2, 1, 1])).tolist() == [1, 2, 3, 4, 4]             # dyadic
    assert huffman.code_lengths(np.array([0, 7, 0])).tolist() == [0, 1, 0]                          # one symbol
    assert huffman.code_lengths(np.array([0, 0])).tolist() == [0, 0]


def _optimal_cost(counts):
    """Cost of an optimal prefix code, computed independently: the sum of all merged weights."""
    h = [int(c) for c in counts if c > 0]
    if len(h) == 1:
        return h[0]
    heapq.heapify(h)
    cost = 0
    while len(h) > 1:
        a, b = heapq.heappop(h), heapq.heappop(h)
        cost += a + b
        heapq.heappush(h, a + b)
    return cost


@pytest.mark.parametrize("seed", range(6))
def test_huffman_is_optimal_and_prefix_free(seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 1000, rng.integers(2, 40)) * (rng.random(1)[0] < 0.5 or 1)
    counts[rng.integers(0, len(counts))] += 1
    lengths = huffman.code_lengths(counts).astype(np.int64)
    assert int((counts * lengths).sum()) == _optimal_cost(counts)
    codes = huffman.canonical_codes(lengths)
    words = [format(int(codes[s]), f"0{lengths[s]}b") for s in np.flatnonzero(lengths)]
    assert not any(a != b and b.startswith(a) for a in words for b in words)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log2(p)).sum())
    avg = (counts * lengths).sum() / counts.sum()
    assert entropy - 1e-9 <= avg < entropy + 1


@pytest.mark.parametrize("n,alphabet", [(0, 4), (1, 4), (7, 1), (4095, 32), (4096, 32), (4097, 32),
                                        (3 * 4096 + 5, 256), (20000, 2)])
def test_huffman_round_trip(n, alphabet):
    rng = np.random.default_rng(n)
    sym = np.minimum(rng.geometric(0.25, n) - 1, alphabet - 1)
    st = huffman.encode(sym, alphabet)
    assert len(st.block_bits) == max(0, -(-n // huffman.BLOCK) - 1)
    assert len(st.data) == (st.nbits + 7) // 8
    assert st.nbits == int((np.bincount(sym, minlength=alphabet) * st.lengths.astype(np.int64)).sum())
    assert np.array_equal(huffman.decode(st.data, n, st.lengths, st.nbits, st.block_bits), sym)


def test_huffman_limits_code_lengths_and_refuses_bad_tables():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib)                                   # an optimal code would need 29-bit codes
    lengths = huffman.code_lengths(counts)
    assert lengths.max() <= huffman.MAX_CODE_BITS
    sym = np.repeat(np.arange(30), 1)
    st = huffman.encode(sym, 30)
    assert np.array_equal(huffman.decode(st.data, 30, st.lengths, st.nbits, st.block_bits), sym)
    with pytest.raises(huffman.HuffmanError):
        huffman.canonical_codes(np.array([1, 1, 1]))         # Kraft sum 1.5: no prefix code
    st = huffman.encode(np.array([0, 1, 2, 3] * 5), 4)
    with pytest.raises(huffman.HuffmanError):                # one symbol too many for the bits
        huffman.decode(st.data, 21, st.lengths, st.nbits, st.block_bits)


# ---------------------------------------------------------------------------- bits settings

class _L:
    def __init__(self, name, kind):
        self.name, self.kind = name, kind


LAYERS = [_L("conv1", "Conv2d"), _L("conv2", "Conv2d"), _L("fc1", "Linear"), _L("fc2", "Linear")]


def test_bits_defaults_global_kinds_and_overrides():
    s = QuantSettings.build(LAYERS)
    assert s.bits == {"conv1": 8, "conv2": 8, "fc1": 5, "fc2": 5} and s.index_bits == s.bits
    assert set(QuantSettings.build(LAYERS, bits="6").bits.values()) == {6}
    s = QuantSettings.build(LAYERS, bits="conv=7,linear=4,fc2=2", index_bits=3)
    assert s.bits == {"conv1": 7, "conv2": 7, "fc1": 4, "fc2": 2} and set(s.index_bits.values()) == {3}
    assert QuantSettings.from_dict(s.to_dict(), LAYERS) == s


@pytest.mark.parametrize("text", ["0", "9", "2.5", "-1", "conv=x", "conv=8,conv=7", "linear", "conv=", "=4", ""])
def test_bad_bits_are_refused(text):
    with pytest.raises(PlanError):
        QuantSettings.build(LAYERS, bits=text)


def test_unknown_layers_and_wide_indices_are_refused():
    with pytest.raises(PlanError, match="unknown layer"):
        QuantSettings.build(LAYERS, bits="fc9=3")
    with pytest.raises(PlanError):
        QuantSettings.build(LAYERS, index_bits="13")
    with pytest.raises(PlanError):
        QuantSettings.build(LAYERS, init="kmeans++")
    assert parse_bits({"fc1": 3}) == {"fc1": 3}
