"""SparseGPT at scale (issue 23, item 5): a LLaMA-shaped random-weight model pruned with ``sparsegpt`` at 50 %
and 2:4, block by block, on a few calibration sequences; wall time, where it goes, and peak memory.

    python benchmarks/bench_llm_scale.py [--params quick|50m|100m|1b] [--patterns 50%,2:4] [--samples 8]
                                         [--seq 256] [--json] [--quick]

The model is transformers' ``LlamaForCausalLM`` built from a config (random init, seeded; fp32), the calibration
data seeded random tokens. Pruning runs the engine itself (``prune/sequential_calibration.sequential_prune`` with
``prune/sparsegpt.sparsegpt_layer``, what ``prune --criterion sparsegpt`` runs) on every linear of the decoder
blocks (q, k, v, o, gate, up, down; the lm_head stays dense, as in the paper), each pattern on a freshly built
model. Phases: ``forward`` (calibration forwards: up to the first block, the partial block runs that reach each
layer, and the pruned blocks' outputs), ``statistics`` (H = X Xᵀ in the hooks), ``inverse`` (Cholesky factor of
H⁻¹, once per group of layers sharing an input), ``sweep`` (the OBS sweep with mask selection), ``other``.

Baseline, side by side: one dense forward pass of the whole model over the same calibration data;
``ratio`` = pruning wall time / that forward. Memory: peak RSS of this process (``ru_maxrss``) against the fp32
model size; ``added`` is the peak minus the RSS right after the model was built (the calibration activations,
one block's Hessians and factors, the sweep's copies).

Sizes (vocab 32000 except quick): ``quick`` (hidden 64, 2 blocks; what the test suite runs), ``50m`` (hidden 512,
8 blocks, MLP 1376: 58 M), ``100m`` (hidden 768, 12 blocks, MLP 2048: 134 M), ``1b`` (TinyLlama's shape: hidden
2048, 22 blocks, MLP 5632, 32 heads, 4 key/value heads: 1.10 B, 4.4 GB in fp32). ``--json`` prints one JSON
object (and, except with --quick, writes ``benchmarks/results/llm_scale_<size>.json``).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import emit, machine  # noqa: E402

SIZES = {
    "quick": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, vocab_size=256),
    "50m": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8,
                num_key_value_heads=8, vocab_size=32000),
    "100m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                 num_key_value_heads=12, vocab_size=32000),
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, vocab_size=32000),
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build(size: str, seq: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**SIZES[size], max_position_embeddings=max(seq, 64), use_cache=False)
    return LlamaForCausalLM(cfg).eval()


def run_pattern(size: str, pattern: str, x: torch.Tensor) -> dict:
    from explorer.core.prune.sequential_calibration import sequential_prune
    from explorer.core.prune.sparsegpt import hessian_factor, sparsegpt_layer

    model = build(size, x.shape[1])
    after_build = rss_bytes()
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]
    params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, x.shape[0], 2):       # 2 sequences at a time: the logits stay small
            model(x[i:i + 2])
    forward_s = time.perf_counter() - t0
    nm = (2, 4) if pattern == "2:4" else None
    sparsity = float(pattern.rstrip("%")) / 100 if nm is None else 0.5
    times: dict[str, float] = {}
    factor: list = [None, None]

    def step(name, m, H):
        if factor[0] is not H:
            t = time.perf_counter()
            factor[:] = [H, hessian_factor(H)]
            times["inverse"] = times.get("inverse", 0.0) + time.perf_counter() - t
        W, _ = sparsegpt_layer(m.weight.detach(), sparsity=sparsity, nm=nm, U=factor[1], times=times)
        m.weight.data = W.to(m.weight.dtype)

    t0 = time.perf_counter()
    how = sequential_prune(model, x, names, step, chunk=8, times=times)
    wall = time.perf_counter() - t0
    factor[:] = [None, None]
    zeros = sum(int((dict(model.named_modules())[n].weight == 0).sum()) for n in names)
    total = sum(dict(model.named_modules())[n].weight.numel() for n in names)
    phases = {k: round(times.get(k, 0.0), 3) for k in ("forward", "statistics", "inverse", "sweep")}
    phases["other"] = round(max(0.0, wall - sum(phases.values())), 3)
    out = {"pattern": pattern, "order": how, "params": params, "model_bytes": params * 4,
           "layers": len(names), "sparsity": round(zeros / total, 4), "wall_s": round(wall, 3),
           "phases_s": phases, "dense_forward_s": round(forward_s, 3), "ratio": round(wall / forward_s, 2),
           "rss_after_build_bytes": after_build}
    del model
    gc.collect()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", choices=tuple(SIZES), default="50m")
    ap.add_argument("--patterns", default="50%,2:4")
    ap.add_argument("--samples", type=int, default=8, help="calibration sequences")
    ap.add_argument("--seq", type=int, default=256, help="tokens per calibration sequence")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="the quick size, 2 sequences of 32 tokens")
    args = ap.parse_args(argv)
    if args.quick:
        args.params, args.samples, args.seq = "quick", 2, 32
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, SIZES[args.params]["vocab_size"], (args.samples, args.seq), generator=g)
    runs = [run_pattern(args.params, p.strip(), x) for p in args.patterns.split(",") if p.strip()]
    peak = peak_rss_bytes()
    for r in runs:
        r["added_rss_bytes"] = peak - r["rss_after_build_bytes"]     # the process's peak: over all patterns
    payload = {"size": args.params, "samples": args.samples, "seq": args.seq, "peak_rss_bytes": peak,
               "peak_over_model": round(peak / runs[0]["model_bytes"], 2) if runs else None,
               "runs": runs, "machine": machine()}
    rows = [[r["pattern"], f"{r['params'] / 1e6:.0f} M", f"{r['wall_s']:.1f}",
             " ".join(f"{k} {v:.1f}" for k, v in r["phases_s"].items()), f"{r['dense_forward_s']:.2f}",
             f"{r['ratio']:.1f}x", f"{peak / 2**30:.2f} GiB / {r['model_bytes'] / 2**30:.2f} GiB"] for r in runs]
    emit(args, rows, ["pattern", "params", "wall s", "phases s", "dense fwd s", "ratio", "peak RSS / model"],
         payload)
    if args.json and not args.quick:
        res = Path(__file__).resolve().parent / "results" / f"llm_scale_{args.params}.json"
        res.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
