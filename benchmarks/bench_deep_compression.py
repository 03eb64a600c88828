"""Deep Compression end to end: prune -> weight sharing -> Huffman coding, measured to the byte.

1. digits-mlp (the LeNet-300-100 shape on 8x8 digits) through all three stages: global magnitude pruning to
   95 % with AGP fine-tuning (100 epochs, Adam 2e-3), 4-bit shared weights in every layer, 5-bit relative indices, the
   shared values trained for 10 epochs (Adam 1e-3), Huffman coding. Per-stage ratio next to the paper's
   LeNet-300-100 (12x / 32x / 40x), test accuracy after every stage, seconds per stage.
   Goal: >= 40x total with test accuracy within 1 point of dense.
   (Settings chosen on the validation split over seeds 0-4; see benchmarks/README.md.)
2. torchvision:vgg16, sizes only (random weights, no accuracy): each layer pruned by magnitude to the kept
   fraction of Han et al. 2015 (Table 5), 8-bit conv / 5-bit fc shared weights, the default index bits
   (8 conv / 5 fc); the paper reaches 13x / 31x / 49x on the trained network. Also times encoding and
   decoding the VGG-16-sized archive.

    python benchmarks/bench_deep_compression.py [--json] [--seeds N] [--no-vgg] [--quick]

``--quick``: digits-mlp only (no VGG-16), 2 fine-tuning epochs and 1 epoch of training the shared values
(the three stages run as usual; the accuracy goal is not expected to be met; the test suite runs it).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import _common
import torch

from explorer.core.compress import accounting, dcz
from explorer.core.compress.flow import compress_state
from explorer.core.compress.quantize import QuantSettings
from explorer.core.flows.compress import run as run_compress
from explorer.core.formats.dcz import decode_archive
from explorer.core.session import Session
from explorer.core.train.finetune import FinetuneConfig

PAPER_LENET = {"pruned": 12, "quantized": 32, "huffman": 40}
PAPER_VGG = {"pruned": 13, "quantized": 31, "huffman": 49}
# Han, Pool, Tran & Dally 2015, Table 5: weights kept per VGG-16 layer (conv1_1 ... fc8)
VGG_KEPT = {"features.0": 0.58, "features.2": 0.22, "features.5": 0.34, "features.7": 0.36, "features.10": 0.53,
            "features.12": 0.24, "features.14": 0.42, "features.17": 0.32, "features.19": 0.27, "features.21": 0.34,
            "features.24": 0.35, "features.26": 0.29, "features.28": 0.36, "classifier.0": 0.04,
            "classifier.3": 0.04, "classifier.6": 0.23}

SPARSITY = 0.95
FINETUNE = dict(epochs=100, optimizer="adam", lr=2e-3, schedule="agp")
QUANTIZE = dict(epochs=10, optimizer="adam", lr=1e-3, weight_decay=0.0)
BITS, INDEX_BITS = "linear=4", "5"


def digits(seed: int, finetune: dict = FINETUNE, quantize: dict = QUANTIZE) -> dict:
    s = Session.open("digits-mlp", seed=seed)
    s.set_global(s.layer_names, SPARSITY, max_layer_sparsity=0.99)
    settings = QuantSettings.build(s.layers, BITS, INDEX_BITS, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        r, _ = run_compress(s.snapshot(), settings, f"{tmp}/out", FinetuneConfig(seed=seed, **finetune),
                            FinetuneConfig(seed=seed, **quantize))
    sec = r.seconds
    times = {"pruned": sec["prune"], "quantized": sec["cluster"] + sec.get("train", 0.0),
             "huffman": sec["huffman_encode"]}
    return {"seed": seed, "stages": r.stages, "seconds": times, "layers": r.layers,
            "untrained_accuracy": r.untrained_accuracy, "decode_seconds": sec["huffman_decode"],
            "table2": accounting.table2(r.layers, r.stages)}


def vgg16() -> dict:
    from explorer.core.compress.quantize import quantize_state, quantized_state
    from explorer.core.prune.plan import LayerPlan, Plan

    s = Session.open("torchvision:vgg16")
    t = time.perf_counter()
    s.set_plan(Plan({n: LayerPlan(round(1 - k, 4), "element", "l1") for n, k in VGG_KEPT.items()}))
    state = s.masked_state()
    prune_s = time.perf_counter() - t
    settings = QuantSettings.build(s.layers)
    dense = accounting.state_bytes(s.original_state())
    r = compress_state(s.model_copy(), s.dataset, state, settings, {"arch": "torchvision:vgg16"}, dense_size=dense)
    sec = r.seconds
    # time the big archive alone: encode and decode (bit-identical check included in compress_state)
    t = time.perf_counter()
    quants = quantize_state(state, settings)
    cluster_s = time.perf_counter() - t
    q = quantized_state(state, quants)
    t = time.perf_counter()
    enc = dcz.encode_archive(q, {}, "huffman", quants=quants)
    enc_s = time.perf_counter() - t
    t = time.perf_counter()
    decode_archive(enc.data)
    dec_s = time.perf_counter() - t
    times = {"pruned": prune_s, "quantized": sec["cluster"], "huffman": sec["huffman_encode"]}
    return {"stages": r.stages, "seconds": times, "layers": r.layers,
            "cluster_seconds": cluster_s, "encode_seconds": enc_s, "decode_seconds": dec_s,
            "table2": accounting.table2(r.layers, r.stages)}


def _rows(name: str, res: dict, paper: dict, dense_acc) -> list[list]:
    rows = []
    for st in res["stages"]:
        acc = st["accuracy"]
        rows.append([name, st["name"], f"{st['size_bytes']:,}", f"{st['ratio']:.1f}×",
                     f"{paper[st['name']]}×" if st["name"] in paper else "1×",
                     "—" if acc is None else f"{acc:.2f}%" + (f" ({acc - dense_acc:+.2f})" if dense_acc else ""),
                     "—" if st["name"] not in res["seconds"] else f"{res['seconds'][st['name']]:.3f}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seeds", type=int, default=1, help="digits-mlp: run seeds 0..N-1 (the table shows seed 0)")
    ap.add_argument("--no-vgg", action="store_true", help="skip the VGG-16 sizes (needs ~6 GB and a minute)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, same code path (the test suite runs this)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    finetune, quantize = FINETUNE, QUANTIZE
    if args.quick:
        args.no_vgg, args.seeds = True, 1
        finetune, quantize = dict(FINETUNE, epochs=2), dict(QUANTIZE, epochs=1)
    runs = [digits(seed, finetune, quantize) for seed in range(max(1, args.seeds))]
    d = runs[0]
    dense_acc = d["stages"][0]["accuracy"]
    total = d["stages"][-1]
    goal = total["ratio"] >= 40 and dense_acc - total["accuracy"] <= 1.0
    payload = {"digits-mlp": {"stages": d["stages"], "seconds": d["seconds"], "layers": d["layers"],
                              "untrained_accuracy":
                              d["untrained_accuracy"], "goal_met": goal,
                              "settings": {"sparsity": SPARSITY, "finetune": finetune, "quantize": quantize,
                                           "bits": BITS, "index_bits": INDEX_BITS}},
               "machine": _common.machine()}
    if len(runs) > 1:
        payload["digits-mlp"]["seeds"] = [{"seed": r["seed"], "ratio": r["stages"][-1]["ratio"],
                                           "accuracy": r["stages"][-1]["accuracy"]} for r in runs]
    rows = _rows("digits-mlp", d, PAPER_LENET, dense_acc)
    if not args.no_vgg:
        v = vgg16()
        payload["torchvision:vgg16"] = {"stages": v["stages"], "seconds": v["seconds"], "layers": v["layers"],
                                        "encode_seconds": v["encode_seconds"], "decode_seconds": v["decode_seconds"],
                                        "cluster_seconds": v["cluster_seconds"]}
        rows += _rows("vgg16 (sizes)", v, PAPER_VGG, None)
    _common.emit(args, rows, ["model", "stage", "bytes", "ratio", "paper", "test accuracy", "seconds"], payload)
    if not args.json:
        print()
        print(accounting.format_table(d["table2"]))
        print(f"\ngoal (>= 40x, within 1 point of dense {dense_acc:.2f}%): {'✔' if goal else '✘'} "
              f"({total['ratio']:.1f}×, {total['accuracy']:.2f}%); accuracy right after k-means, before training the "
              f"shared values: {d['untrained_accuracy']:.2f}%")
        if len(runs) > 1:
            accs = [r["stages"][-1]["accuracy"] for r in runs]
            ratios = [r["stages"][-1]["ratio"] for r in runs]
            print(f"seeds 0-{len(runs) - 1}: ratio {min(ratios):.1f}–{max(ratios):.1f}×, test accuracy mean "
                  f"{statistics.mean(accs):.2f}% (min {min(accs):.2f}%), within 1 point in "
                  f"{sum(dense_acc - a <= 1.0 for a in accs)}/{len(runs)}")
        if not args.no_vgg:
            print()
            print(accounting.format_table(v["table2"]))
            print(f"\nVGG-16 archive: k-means {v['cluster_seconds']:.1f} s, Huffman encode "
                  f"{v['encode_seconds']:.1f} s, decode {v['decode_seconds']:.1f} s")


if __name__ == "__main__":
    main()
