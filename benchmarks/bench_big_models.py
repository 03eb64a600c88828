"""Big models (issue 13, goal 2): time and peak RSS of the window and of `prune` against the model's fp32 size.

    python benchmarks/bench_big_models.py [--models vgg16,resnet50,transformer-1b] [--reps 1] [--before DIR]
                                         [--no-window] [--no-prune] [--json] [--quick]

Every measurement is a fresh process; its peak RSS is that child's own ``ru_maxrss`` (``os.wait4``). The
baseline is digits-cnn (67 K parameters) through the same path in the same run, so "added RSS" is
``peak(model) - peak(digits-cnn)`` and "behind digits-cnn" is ``time(model) - time(digits-cnn)``; both are
compared with the model's fp32 size (its parameters and buffers x 4 bytes).

- window: ``pruning-explorer gui --model M`` (offscreen) through ``_probe.py`` in ``idle`` mode: the time of the
  first frame, the time the weight view first shows a layer (``first layer``), and the peak RSS until the
  window's job runner has been idle for 0.5 s (channel-group analysis and indexing done).
- prune: ``pruning-explorer prune --model M --sparsity 0.5 --out TMP --latency-runs 3 --latency-batch 1``: wall
  time and peak RSS of the whole command (apply, latency of dense and pruned, export with reload checks).

``--json`` prints the payload as one JSON object on stdout (the table goes to stderr) and writes
``benchmarks/results/big_models.json``; ``--quick`` measures only the digits-cnn baseline's prune (the window
probe is what ``bench_startup.py --quick`` runs) and writes no results file (the test suite runs it).

Goals: the first layer within 4 s of digits-cnn's, and at most 2x the fp32 size added to peak RSS, for the
window and for prune.

``transformer-1b``: a decoder-style stack built from a config (d_model 2048, 20 blocks, 16 heads, MLP 8192:
1.007 B parameters, 4.03 GB in fp32) made of plain ``nn.Linear`` layers (q, k, v, o, up, down), fed
(16 tokens x 2048) float embeddings. It is built once in a child process and saved as a TorchScript archive
(the app opens those with ``--trust``), then opened like the others with ``--input-shape 16,2048``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _spawn import ROOT, child_env, load, median, probe, run_child  # noqa: E402

SPECS = {"vgg16": "torchvision:vgg16", "resnet50": "torchvision:resnet50"}
TRANSFORMER = {"d_model": 2048, "layers": 20, "heads": 16, "d_ff": 8192, "tokens": 16}
FP32_BYTES = {"digits-cnn": None}

BUILD_TRANSFORMER = r"""
import sys, torch
from torch import nn
cfg = {cfg}
class Block(nn.Module):
    def __init__(s, d, h, f):
        super().__init__()
        s.h = h
        s.ln1, s.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        s.q, s.k, s.v, s.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        s.up, s.down = nn.Linear(d, f), nn.Linear(f, d)
    def forward(s, x):
        B, T, D = x.shape
        y = s.ln1(x)
        q, k, v = (t(y).view(B, T, s.h, D // s.h).transpose(1, 2) for t in (s.q, s.k, s.v))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + s.o(a.transpose(1, 2).reshape(B, T, D))
        return x + s.down(torch.nn.functional.gelu(s.up(s.ln2(x))))
class Decoder(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.blocks = nn.ModuleList(Block(c["d_model"], c["heads"], c["d_ff"]) for _ in range(c["layers"]))
        s.norm = nn.LayerNorm(c["d_model"])
    def forward(s, x):
        for b in s.blocks:
            x = b(x)
        return s.norm(x)
torch.manual_seed(0)
with torch.no_grad():
    m = Decoder(cfg).eval()
    ts = torch.jit.trace(m, torch.zeros(1, cfg["tokens"], cfg["d_model"]), check_trace=False)
ts.save(sys.argv[1])
print(sum(p.numel() for p in m.parameters()))
"""


def fp32_bytes(spec: str, input_args: list[str]) -> int:
    """Parameters + buffers x 4 bytes, counted on the meta device (nothing is allocated)."""
    import torch

    if spec.startswith("torchvision:"):
        import torchvision
        with torch.device("meta"):
            m = torchvision.models.get_model(spec.split(":")[1], weights=None)
    else:
        return 0
    return sum(t.numel() * 4 for t in list(m.parameters()) + list(m.buffers()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="vgg16,resnet50,transformer-1b")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--before", default=None, help="another checkout measured side by side")
    ap.add_argument("--no-window", action="store_true")
    ap.add_argument("--no-prune", action="store_true")
    ap.add_argument("--json", action="store_true",
                    help="print one JSON object (table on stderr); also write benchmarks/results/big_models.json")
    ap.add_argument("--quick", action="store_true",
                    help="digits-cnn's prune only, no results file (the test suite runs it)")
    args = ap.parse_args()
    if args.quick:
        args.models, args.reps, args.no_window = "", 1, True
    table_out = sys.stderr if args.json else sys.stdout

    trees = {"app": ROOT}
    if args.before:
        trees["before"] = Path(args.before).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="bench_big_"))
    models: dict[str, tuple[list[str], int]] = {"digits-cnn": (["--model", "digits-cnn"], 0)}
    for name in filter(None, (m.strip() for m in args.models.split(","))):
        if name in SPECS:
            models[name] = (["--model", SPECS[name]], fp32_bytes(SPECS[name], []))
        elif name == "transformer-1b":
            path = tmp / "transformer-1b.ts"
            print("building transformer-1b (TorchScript) ...", file=sys.stderr)
            r = run_child([sys.executable, "-c", BUILD_TRANSFORMER.replace("{cfg}", repr(TRANSFORMER)), str(path)],
                          ROOT, child_env(), timeout=1800)
            if r["rc"] != 0:
                print(f"transformer-1b could not be built: {r['stderr'][-800:]}", file=sys.stderr)
                continue
            n = int(r["stdout"].strip().splitlines()[-1])
            models[name] = (["--model", str(path), "--trust", "--input-shape",
                             f"{TRANSFORMER['tokens']},{TRANSFORMER['d_model']}"], n * 4 + 0)
        else:
            print(f"unknown model {name}", file=sys.stderr)
    load_before = load()
    results: dict = {t: {m: {"window": [], "prune": []} for m in models} for t in trees}
    for rep in range(args.reps):
        for m, (margs, _) in models.items():
            for t, repo in trees.items():
                if not args.no_window:
                    r = probe("app", "idle", repo, ["gui", *margs], timeout=1800)
                    results[t][m]["window"].append(r)
                    print(f"[{t}] window {m}: first frame {r.get('first_frame_s')}, first layer "
                          f"{r.get('first_layer_s')} ({r.get('first_layer')}), idle {r.get('idle_s')}, peak "
                          f"{r.get('peak_rss_mb'):.0f} MB rc {r.get('rc')}", file=sys.stderr)
                    if r.get("rc") not in (0, None) or not r.get("first_layer_s"):
                        print(r.get("stderr", "")[-800:], file=sys.stderr)
                if not args.no_prune:
                    with tempfile.TemporaryDirectory(dir=tmp) as d:
                        r = run_child([sys.executable, "-m", "explorer.cli", "prune", *margs, "--sparsity", "0.5",
                                       "--out", str(Path(d) / "out"), "--latency-runs", "3", "--latency-batch", "1"],
                                      repo, child_env(), timeout=1800)
                    r.pop("stdout", None)
                    results[t][m]["prune"].append(r)
                    print(f"[{t}] prune {m}: {r['wall_s']:.1f} s, peak {r['peak_rss_mb']:.0f} MB rc {r['rc']}",
                          file=sys.stderr)
                    if r["rc"] != 0:
                        print(r["stderr"][-800:], file=sys.stderr)
    load_after = load()

    summary: dict = {}
    rows = []
    for t in trees:
        base_w = results[t]["digits-cnn"]["window"]
        base_p = results[t]["digits-cnn"]["prune"]
        b_layer = median([r.get("first_layer_s") for r in base_w])
        b_wrss = median([r.get("peak_rss_mb") for r in base_w])
        b_ptime = median([r["wall_s"] for r in base_p if r["rc"] == 0])
        b_prss = median([r["peak_rss_mb"] for r in base_p if r["rc"] == 0])
        for m, (_, size) in models.items():
            w, p = results[t][m]["window"], results[t][m]["prune"]
            s = {"fp32_mb": size / 2**20,
                 "window_first_frame_s": median([r.get("first_frame_s") for r in w]),
                 "window_first_layer_s": median([r.get("first_layer_s") for r in w]),
                 "window_first_layer": w[-1].get("first_layer") if w else None,
                 "window_idle_s": median([r.get("idle_s") for r in w]),
                 "window_peak_rss_mb": median([r.get("peak_rss_mb") for r in w]),
                 "prune_s": median([r["wall_s"] for r in p if r["rc"] == 0]),
                 "prune_peak_rss_mb": median([r["peak_rss_mb"] for r in p if r["rc"] == 0]),
                 "prune_failures": [r["stderr"][-400:] for r in p if r["rc"] != 0]}
            if m != "digits-cnn" and size:
                mb = size / 2**20
                if s["window_first_layer_s"] is not None and b_layer is not None:
                    s["window_layer_behind_digits_s"] = s["window_first_layer_s"] - b_layer
                if s["window_peak_rss_mb"] is not None and b_wrss is not None:
                    s["window_added_rss_x_fp32"] = (s["window_peak_rss_mb"] - b_wrss) / mb
                if s["prune_peak_rss_mb"] is not None and b_prss is not None:
                    s["prune_added_rss_x_fp32"] = (s["prune_peak_rss_mb"] - b_prss) / mb
                if s["prune_s"] is not None and b_ptime is not None:
                    s["prune_behind_digits_s"] = s["prune_s"] - b_ptime
            summary.setdefault(t, {})[m] = s

            def f(v, fmt):
                return "-" if v is None else format(v, fmt)
            rows.append([t, m, f(s["fp32_mb"], ".0f"), f(s["window_first_layer_s"], ".2f"),
                         f(s.get("window_layer_behind_digits_s"), "+.2f"), f(s["window_peak_rss_mb"], ".0f"),
                         f(s.get("window_added_rss_x_fp32"), ".2f"), f(s["prune_s"], ".1f"),
                         f(s["prune_peak_rss_mb"], ".0f"), f(s.get("prune_added_rss_x_fp32"), ".2f")])
    header = ["tree", "model", "fp32 MB", "1st layer s", "vs digits s", "window peak MB", "added/fp32",
              "prune s", "prune peak MB", "added/fp32"]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)), file=table_out)
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)), file=table_out)
    print(f"goals: first layer <= digits-cnn + 4 s; added peak RSS <= 2x fp32 size. load average {load_before} -> "
          f"{load_after}", file=table_out)
    payload = {"benchmark": "big_models", "reps": args.reps, "load_avg_before": load_before,
               "load_avg_after": load_after, "transformer_config": TRANSFORMER, "summary": summary,
               "raw": {t: {m: {k: [{kk: vv for kk, vv in r.items() if kk != "modules"} for r in v]
                               for k, v in d.items()} for m, d in ms.items()} for t, ms in results.items()}}
    if args.json:
        if not args.quick:
            out = ROOT / "benchmarks" / "results" / "big_models.json"
            out.write_text(json.dumps(payload, indent=2))
            print(f"wrote {out}", file=sys.stderr)
        print(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
