"""The argument parser of ``pruning-explorer``: every subcommand and flag (the flags are contracts).

Every ``--help`` shows each flag's default. Values that argparse cannot check (ranges, tab names, sizes)
are checked before any work starts (``commands.py``), with one clear sentence.
"""
from __future__ import annotations

import argparse

from explorer import __version__

from .speed_cmd import add_speed_parser


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, but not a meaningless '(default: None)' or '(default: False)'."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _sub(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", formatter_class=_Formatter)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", default=None,
                   help="model spec: digits-cnn (default), digits-mlp, lab-vgg, torchvision:<arch>[:WEIGHTS], "
                        "timm:<arch>, hf:DIR (a Hugging Face folder), or a file (state_dict .pt/.safetensors, sparse "
                        "archive; TorchScript or a whole pickled module only with --trust)")
    p.add_argument("--dataset", "-d", default=None,
                   help="dataset spec: digits, mnist:ROOT, fashion-mnist:ROOT, cifar10:ROOT, cifar100:ROOT, "
                        "imagefolder:DIR, synthetic, text:FILE (language models), tensors:PATH (your own x/y arrays: .npz, "
                        ".safetensors, .pt or a folder of train/val/test files) (default: digits for the digits "
                        "models, else synthetic)")
    p.add_argument("--weights", default=None,
                   help="state_dict file (.pt or .safetensors) to load into a built-in, torchvision, timm or your own "
                        "architecture")
    p.add_argument("--arch", default=None,
                   help="architecture of a state_dict file (a model spec, e.g. torchvision:resnet18), or your own "
                        "class as module.path:ClassName (built with no arguments; needs --trust)")
    p.add_argument("--trust", action="store_true",
                   help="allow what is code: TorchScript archives and whole pickled modules (they run code from "
                        "the file when loaded) and --arch module.path:ClassName (importing runs the module) -- only "
                        "for code you trust")
    p.add_argument("--input-shape", default=None, metavar="C,H,W", help="model input shape when it cannot be inferred")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default=None, metavar="R.json",
                   help="recipe.json with per-layer sparsity/granularity/criterion (replays its fine-tuning too)")
    p.add_argument("--sparsity", type=float, default=None, help="target sparsity 0..1 (fraction of weights removed)")
    p.add_argument("--granularity", "-g", default="element",
                   help="element, n:m (e.g. 2:4), vector, kernel, channel; prune also takes block (drop the "
                        "--sparsity share of the model's skippable blocks, the least important by Block Influence)")
    p.add_argument("--criterion", "-c", default="l1",
                   help="l1, l2, random, taylor, hessian, wanda, sparsegpt (element, n:m), bn-scale (channel), apoz (channel)")
    p.add_argument("--scope", choices=("local", "global"), default="local",
                   help="local: every layer at --sparsity; global: one threshold across the layers")
    p.add_argument("--max-layer-sparsity", type=float, default=0.95, help="per-layer cap for global scope")
    p.add_argument("--layers", nargs="+", default=None, metavar="NAME", help="only these layers (default: all)")


def _add_calibration_args(p: argparse.ArgumentParser, reconstruct: bool = False) -> None:
    p.add_argument("--calibration-samples", type=int, default=None, metavar="N",
                   help="training samples for hessian/wanda/apoz and reconstruction (default 128; seeded, "
                        "recorded in the recipe)")
    if reconstruct:
        p.add_argument("--reconstruct", action="store_true",
                       help="after choosing the mask, refit each pruned layer's remaining weights to its dense "
                            "output on the calibration samples (least squares; the mask is unchanged)")


def _add_schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spacing", choices=("geometric", "linear"), default=None,
                   help="iterative: geometric steps (default: each step removes the same share of the weights that "
                        "are left) or linear steps (the same sparsity added per step)")
    p.add_argument("--step-sparsities", default=None, metavar="S1,S2,...",
                   help="iterative: the sparsity after each step, e.g. 0.5,0.8,0.9 (the plan is always the last "
                        "step); implies --schedule iterative")
    p.add_argument("--no-rewind", action="store_true",
                   help="no learning-rate rewinding: one schedule over the whole run, so later steps fine-tune at "
                        "its small late rate (default: each iterative step and AGP's recovery restart it)")
    p.add_argument("--agp-end", type=float, default=None, metavar="F",
                   help="AGP: share of training along the cubic (default 0.5); the rest recovers at the target")
    p.add_argument("--agp-updates", type=int, default=None, help="AGP: mask updates along the cubic (default 10)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pruning-explorer", formatter_class=_Formatter,
                                     description="Explore neural-network pruning: per-layer sparsity, granularity and "
                                                 "criterion, live masks, accuracy, measured latency, export.")
    parser.add_argument("--version", action="version", version=f"pruning-explorer {__version__}")
    sub = parser.add_subparsers(dest="command")

    g = _sub(sub, "gui", "open the window (the default command)")
    _common(g)
    g.add_argument("--screenshot", default=None, metavar="FILE.png",
                   help="render the loaded window offscreen, save it and exit")
    g.add_argument("--layer", default=None, help="select this layer first")
    g.add_argument("--sparsity", type=float, default=None, help="preview this sparsity on the selected layer")
    g.add_argument("--granularity", default=None, help="granularity for --sparsity")
    g.add_argument("--recipe", default=None, help="open this recipe after loading")
    g.add_argument("--size", default=None, metavar="WxH",
                   help="window size in pixels, exactly (320x240 to 8192x8192; default: the size you last gave the "
                        "window, or 1440x900, within the screen's free area; --screenshot: 1440x900)")
    g.add_argument("--tab", default=None,
                   help="show this tab first: weights, fine-tune, latency, sensitivity, history, ...")
    g.add_argument("--detail", action="store_true", help="zoom the heatmap to its top-left corner (screenshots)")
    g.add_argument("--lesson", default=None, metavar="NAME",
                   help="open a lesson: a built-in name (magnitude, granularity, speedup, iterative, sensitivity, "
                        "criteria, deep-compression) or the path of a lesson .json")
    g.add_argument("--step", type=int, default=None, metavar="N", help="with --lesson: start at step N (from 1)")
    g.add_argument("--presentation", action="store_true",
                   help="presentation mode: fonts x1.5, thicker lines, advanced controls hidden (fits 1024x768)")

    i = _sub(sub, "info", "list the prunable layers (name, type, shape, params, MACs, sparsity)")
    _common(i)
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--list-models", action="store_true", help="list built-in and torchvision models and exit")

    p = _sub(sub, "prune", "prune, optionally fine-tune and compact, and export a results folder")
    _common(p)
    _add_plan_args(p)
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="fine-tune N epochs with masks enforced (per step with --iterative-steps)")
    p.add_argument("--iterative-steps", type=int, default=1, help="reach the target in K prune->fine-tune steps")
    p.add_argument("--schedule", choices=("oneshot", "iterative", "agp"), default=None,
                   help="pruning schedule while fine-tuning (default: iterative when --iterative-steps > 1)")
    p.add_argument("--lr", type=float, default=None,
                   help="fine-tuning learning rate (default: per model size and type, see --optimizer)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                   help="fine-tuning optimizer (default: per model size and type: adam 1e-2 for a small MLP, "
                        "sgd 0.05 for a small CNN, the lab's sgd 0.01 otherwise)")
    p.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch size")
    _add_schedule_args(p)
    p.add_argument("--compact", action="store_true", help="also write model_compact.pt (channels physically removed)")
    p.add_argument("--allocation", choices=("uniform", "owl", "alpha"), default="uniform",
                   help="per-layer sparsities around --sparsity (overall, by weight count): uniform; owl (less "
                        "sparsity where more of wanda's scores |w|·‖x‖ are outliers above --owl-m x their mean, "
                        "per block; needs calibration data); alpha (less sparsity where the weight spectrum's "
                        "heavy-tail exponent is lower; data-free)")
    p.add_argument("--owl-m", type=float, default=5.0, help="OWL: a score is an outlier above M x its block's mean")
    p.add_argument("--owl-lambda", type=float, default=0.08,
                   help="owl and alpha: the largest deviation of a block's sparsity from --sparsity")
    p.add_argument("--from-sensitivity", default=None, metavar="S.json",
                   help="build the plan from a sensitivity scan (its validation-split accuracies)")
    p.add_argument("--max-drop", type=float, default=None,
                   help="with --from-sensitivity: allowed accuracy drop (points)")
    p.add_argument("--search", action="store_true",
                   help="with --from-sensitivity: find the sparsest greedy allocation whose accuracy after "
                        "fine-tuning (--finetune-epochs, default 3) stays within --max-drop on the val split")
    p.add_argument("--latency-runs", type=int, default=30, help="timed runs per model (interleaved)")
    p.add_argument("--latency-batch", type=int, default=1, help="batch size for latency measurement")
    p.add_argument("--no-latency", action="store_true", help="skip latency measurement (latency_ms is null)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random criterion and of fine-tuning")
    p.add_argument("--sparse-archive", action="store_true", help="also write model_sparse.npz (CSR per layer)")
    p.add_argument("--sparse-runtime", action="store_true",
                   help="also write model_sparse_runtime.ts: each layer measured faster as CSR (at its sparsity and "
                        "--latency-batch) replaced by a sparse kernel, the rest dense; timed as latency.sparse")
    add_device(p)
    _add_calibration_args(p, reconstruct=True)
    p.add_argument("--sequential-calibration", action="store_true",
                   help="wanda: take each layer's input norms from the network as already pruned, layer after layer "
                        "(block by block in transformer stacks), as sparsegpt always does; recorded in the recipe")
    p.add_argument("--export", default=None, metavar="safetensors,onnx",
                   help="also write model.safetensors (the tensors of model.pt) and/or model.onnx (the pruned model, "
                        "or the compacted one with --compact; checked with onnxruntime)")
    p.add_argument("--out", "-o", required=True, metavar="DIR",
                   help="results folder (written as a whole: it holds one run's files, never a mix)")

    _add_compress(sub)
    _add_finetune(sub)

    s = _sub(sub, "sensitivity", "per-layer sensitivity scan: accuracy when one layer alone is pruned")
    _common(s)
    s.add_argument("--sparsities", default="0.4,0.5,0.6,0.7,0.8,0.9", help="comma-separated sparsities in (0,1)")
    s.add_argument("--granularity", "-g", default="element", help="element, n:m (e.g. 2:4), vector, kernel, channel")
    s.add_argument("--criterion", "-c", default="l1", help="l1, l2, random, taylor")
    s.add_argument("--layers", nargs="+", default=None, metavar="NAME", help="scan only these layers (default: all)")
    s.add_argument("--split", default="val", choices=("val", "test"),
                   help="split the accuracies are measured on (choices are made on val; report on test)")
    s.add_argument("--early-stop", type=float, default=None, metavar="ACC",
                   help="skip a layer's higher sparsities once accuracy falls below ACC percent (off by default)")
    s.add_argument("--latency", action="store_true", help="also measure latency per sparsity (structured only)")
    s.add_argument("--naive", action="store_true", help="use the plain full-model loop (for comparison)")
    s.add_argument("--exact", action="store_true",
                   help="evaluate every point on the whole split (default: the sequential scan, which evaluates each "
                        "point on a growing sample until it is decided at the --drops; same allocation at those drops)")
    s.add_argument("--drops", default="0.5,1,2", metavar="D,D,...",
                   help="allowed accuracy drops (points) at which the sequential scan's allocation equals the exact "
                        "scan's (default 0.5,1,2)")
    s.add_argument("--precision", default="auto", choices=("auto", "bfloat16", "float32"),
                   help="the sequential scan's screening precision: auto = bfloat16 where the hardware has it, each "
                        "sample's prediction certified by its margin and recomputed in float32 otherwise; float32 "
                        "= no screening (the exact scan is always float32)")
    s.add_argument("--csv", default=None, metavar="FILE.csv", help="also write a CSV table")
    add_device(s)
    _add_calibration_args(s)
    s.add_argument("--out", "-o", required=True, metavar="S.json", help="the scan as JSON")

    c = _sub(sub, "compare", "compare pruning criteria on the same plan: accuracy vs sparsity, one-shot "
                             "and fine-tuned (validation split)")
    _common(c)
    c.add_argument("--criteria", default="l1,taylor,hessian,wanda",
                   help="comma-separated criteria (l1, l2, random, taylor, hessian, wanda, bn-scale, apoz)")
    c.add_argument("--sparsities", default="0.5,0.7,0.9", help="comma-separated sparsities in (0,1)")
    c.add_argument("--granularity", "-g", default="element", help="element, n:m (e.g. 2:4), vector, kernel, channel")
    c.add_argument("--layers", nargs="+", default=None, metavar="NAME", help="only these layers (default: all)")
    c.add_argument("--finetune-epochs", type=int, default=0,
                   help="also fine-tune N epochs after pruning (accuracy_finetuned; best epoch by training accuracy)")
    c.add_argument("--lr", type=float, default=None,
                   help="fine-tuning learning rate (default: per model size and type, see --optimizer)")
    c.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                   help="fine-tuning optimizer (default: per model size and type, as for prune)")
    c.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch size")
    c.add_argument("--seed", type=int, default=0, help="seed of the calibration samples, random scores, fine-tuning")
    add_device(c)
    _add_calibration_args(c, reconstruct=True)
    c.add_argument("--out", "-o", required=True, metavar="C.json", help="where to write the comparison JSON")

    add_speed_parser(sub, _common, add_device, _sub)     # issue 22: the speed map (speed_cmd.py)

    t = _sub(sub, "train-builtin", "retrain the built-in models reproducibly")
    t.add_argument("--out", default=".", metavar="DIR",
                   help="folder for the weights (`make retrain` writes resources/models)")
    t.add_argument("--models", nargs="+", default=["digits-mlp", "digits-cnn", "digits-vgg", "tiny-lm"],
                   help="which built-in models (tiny-lm takes about 12 minutes on one thread)")
    t.add_argument("--seed", type=int, default=0, help="training seed")
    t.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]|mps",
                   help="where evaluation, fine-tuning and latency run (auto: the first CUDA GPU if there is one, "
                        "else the CPU)")


def _add_finetune(sub) -> None:
    """``finetune``: fine-tune a recipe, on one process or data-parallel under torchrun (issue 13)."""
    f = _sub(sub, "finetune", "fine-tune a recipe's pruned model and export a results folder; under torchrun "
                              "(--nproc_per_node=K, several nodes too) it runs distributed data parallel")
    _common(f)
    f.add_argument("--recipe", required=True, metavar="R.json",
                   help="the recipe to fine-tune (its model and dataset unless --model/--dataset are given; its "
                        "recorded fine-tuning, else the model's defaults)")
    f.add_argument("--epochs", type=int, default=None,
                   help="epochs (per step for iterative schedules); default: the recipe's, else 3")
    add_device(f)
    f.add_argument("--resume", action="store_true",
                   help="carry on from DIR/checkpoint.pt (written after every epoch) after an interruption")
    f.add_argument("--latency-runs", type=int, default=30, help="timed runs per model (interleaved, rank 0)")
    f.add_argument("--no-latency", action="store_true", help="skip latency measurement (latency_ms is null)")
    f.add_argument("--out", "-o", required=True, metavar="DIR",
                   help="results folder: model.pt, recipe.json (fine-tuning recorded), report.json (written by "
                        "rank 0, as a whole)")


def _add_compress(sub) -> None:
    """``compress``: Deep Compression (issue 10): prune -> weight sharing -> Huffman coding, model.dcz."""
    c = _sub(sub, "compress", "Deep Compression: prune, share weights (k-means), Huffman-code; "
                              "writes model.dcz, model.pt, recipe.json, compression.json")
    _common(c)
    _add_plan_args(c)
    c.add_argument("--bits", default=None, metavar="B|conv=8,linear=5",
                   help="shared-weight bits per layer, 1-8: one number, or conv=B,linear=B (and LAYER=B "
                        "overrides); default conv=8,linear=5")
    c.add_argument("--index-bits", default=None, metavar="B|conv=8,linear=5",
                   help="relative-index bits per layer, 1-12, same syntax; default conv=8,linear=5")
    c.add_argument("--init", choices=("linear", "density", "random"), default=None,
                   help="k-means initialisation (default linear, the paper's best)")
    c.add_argument("--finetune-epochs", type=int, default=0,
                   help="fine-tune N epochs after pruning, masks enforced (per step with --iterative-steps)")
    c.add_argument("--iterative-steps", type=int, default=1, help="reach the target in K prune->fine-tune steps")
    c.add_argument("--schedule", choices=("oneshot", "iterative", "agp"), default=None,
                   help="pruning schedule while fine-tuning (default: iterative when --iterative-steps > 1)")
    c.add_argument("--lr", type=float, default=None,
                   help="fine-tuning learning rate (default: per model size and type, see --optimizer)")
    c.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                   help="fine-tuning optimizer (default: per model size and type, as for prune)")
    c.add_argument("--batch-size", type=int, default=32, help="batch size of both trainings")
    c.add_argument("--quantize-epochs", type=int, default=0,
                   help="train the shared values N epochs (assignments and zeros fixed; best val epoch kept)")
    c.add_argument("--quantize-lr", type=float, default=None, help="learning rate for the shared values (Adam)")
    c.add_argument("--seed", type=int, default=0, help="seed of the random criterion and of both trainings")
    add_device(c)
    c.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (written as a whole)")
