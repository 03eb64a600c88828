"""Every torchvision classification architecture, end to end: masks at every granularity, exact compaction.

    .venv/bin/python scripts/sweep_torchvision.py                       # all of them -> docs/torchvision_sweep.md
    .venv/bin/python scripts/sweep_torchvision.py resnet18 densenet121  # only these (the table keeps the others)

Each architecture runs in a subprocess of its own (random weights, norms randomised, one thread, small
inputs where the architecture allows), through ``explorer.core.arch_check.check_session``:
element, 2:4, vector, kernel and channel masks on every layer each fits (the counts the engine reports
must match the zeros in the weights, and the masked model must run), then channel compaction whose
output must equal the masked model's (relative error <= 1e-4) with fewer parameters; last, the prune flow's
model.pt (element masks on every layer) must load with ``torch.load(weights_only=True)`` into a fresh
``torchvision.models.get_model(arch)`` with ``load_state_dict(strict=True)`` and give the masked model's outputs
(``check_reload``). Results go to
docs/torchvision_sweep.json (one entry per architecture, merged with earlier runs) and the table in
docs/torchvision_sweep.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Architectures with a fixed input size (ViT's position embedding, MaxViT's windows) run at it; the rest
# at 64x64 (Inception v3 needs at least 75x75) to keep the sweep fast on a laptop's CPU.
FIXED = {"vit_b_16": 224, "vit_b_32": 224, "vit_l_16": 224, "vit_l_32": 224, "vit_h_14": 224, "maxvit_t": 224}
SMALL = {"inception_v3": 96}
DEFAULT_SIZE = 64


def size_of(arch: str) -> int:
    return FIXED.get(arch, SMALL.get(arch, DEFAULT_SIZE))


def run_one(arch: str) -> dict:
    """In the subprocess: open, check, return the result as a dict."""
    import torch

    torch.set_num_threads(1)
    from explorer.core.arch_check import check_session
    from explorer.core.session import Session

    t0 = time.perf_counter()
    size = size_of(arch)
    s = Session.open(f"torchvision:{arch}", "synthetic", input_shape=(3, size, size))
    opened = time.perf_counter() - t0
    from torchvision.models import get_model

    r = check_session(s, factory=lambda: get_model(arch)).as_dict()
    r["open_seconds"] = opened
    r["seconds"] = time.perf_counter() - t0
    r["groups_traced"] = s.require().groups.traced
    r["channel_groups"] = len(s.require().groups.groups)
    return r


def _child(arch: str, out: str) -> None:
    try:
        r = run_one(arch)
    except BaseException as e:   # the table records it; the sweep goes on
        r = {"model": f"torchvision:{arch}", "error": f"{type(e).__name__}: {str(e)[:300]}"}
    Path(out).write_text(json.dumps(r))


def _cell(ok: bool | None, text: str = "") -> str:
    if ok is None:
        return "–"
    return ("yes" if ok else "**no**") + (f" ({text})" if text else "")


def table(results: dict[str, dict]) -> str:
    head = ("| architecture | input | prunable layers | element ok | 2:4 ok | vector ok | kernel ok | channel ok | "
            "compaction exact | model.pt loads strictly | params dense → compact | time (s) |\n"
            "|---|---|---:|---|---|---|---|---|---|---|---|---:|\n")
    rows = []
    for arch in sorted(results):
        r = results[arch]
        if "error" in r:
            rows.append(f"| {arch} | | | **not run**: {r['error']} | | | | | | | | {r.get('seconds', 0):.0f} |")
            continue
        g = r["granularities"]

        def gc(name):
            c = g.get(name)
            if c is None:
                return "–"
            return _cell(c["ok"], f"{c['layers']}/{r['layers']} layers" if c["ok"] else c["error"][:80])
        c = r.get("compact")
        if c is None:
            comp, params = "–", ""
        else:
            kept = len(c.get("kept_masked") or {})
            text = (f"rel. err. {c['rel_error']:.1e}" if c.get("rel_error") is not None else (c.get("error") or ""))
            if kept:
                text += f"; {kept} group(s) kept zeroed"
            comp = _cell(c["ok"], text)
            params = f"{c['params_before'] / 1e6:.2f}M → {c['params_after'] / 1e6:.2f}M" if c["params_before"] else ""
        shape = "×".join(str(v) for v in r["input_shape"][1:])
        rl = r.get("reload")     # absent in results of sweeps before the column
        reload = "–" if rl is None else _cell(rl["ok"], f"max diff {rl['max_difference']:.1e}"
                                               if rl["ok"] else (rl.get("error") or "")[:80])
        rows.append(f"| {arch} | {shape} | {r['layers']} | {gc('element')} | {gc('2:4')} | {gc('vector')} | "
                    f"{gc('kernel')} | {gc('channel')} | {comp} | {reload} | {params} | {r['seconds']:.0f} |")
    return head + "\n".join(rows) + "\n"


def reasons(results: dict[str, dict]) -> str:
    """Why channels stay zeroed in compacted models, grouped by reason."""
    by: dict[str, set] = {}
    for arch, r in results.items():
        for why in ((r.get("compact") or {}).get("kept_masked") or {}).values():
            by.setdefault(_generic(why), set()).add(arch)
    if not by:
        return ""
    lines = ["", "Channel groups that compaction keeps (zeroed, not removed), and why:", ""]
    for why, archs in sorted(by.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"- {why}: {', '.join(sorted(archs))}")
    return "\n".join(lines) + "\n"


def _generic(why: str) -> str:
    """A reason without the layer name, so equal reasons group together."""
    import re

    why = re.sub(r"\(or of \S+'s, a layer like it\) ", "", why)
    why = re.sub(r"\(relative error [^)]*\)", "", why)
    why = re.sub(r"\((RuntimeError|ValueError|IndexError)[^)]*\)", "", why)
    why = re.sub(r"(LayerNorm|GroupNorm|LayerNorm2d) \S+", r"\1 <layer>", why)
    why = re.sub(r"nn\.MultiheadAttention \S+", "nn.MultiheadAttention <layer>", why)
    why = re.sub(r"the parameter \S+", "the parameter <p>", why)
    why = re.sub(r"convolution \S+", "convolution <layer>", why)
    return why


def write_docs(results: dict[str, dict], total_s: float | None, out_md: Path) -> None:
    ok = [a for a, r in results.items() if "error" not in r]
    masks_ok = [a for a in ok if all(c["ok"] for c in results[a]["granularities"].values())]
    comp_ok = [a for a in ok if (results[a].get("compact") or {}).get("ok")]
    reload_ok = [a for a in ok if (results[a].get("reload") or {}).get("ok")]
    seconds = sum(r.get("seconds", 0) for r in results.values())
    text = (
        "# Every torchvision classification architecture\n\n"
        "Written by `scripts/sweep_torchvision.py` (random weights with randomised norm statistics, one thread, "
        "synthetic inputs of the size in the table). For each architecture: masks at every granularity on "
        "every layer it fits (sparsity 0.3; 0.5 for 2:4) -- the engine's counts must equal the zeros in the "
        "weights and the masked model must run -- then channel pruning of every layer, compacted with "
        "Torch-Pruning: the compacted model's output must equal the masked model's (relative error <= 1e-4) "
        "with fewer parameters. A granularity that does not fit a layer (kernel on a Linear, 2:4 on an input "
        "width not divisible by 4, channel on the output layer) leaves that layer dense, with the reason; "
        "'n/m layers' counts the layers it was planned on. Last, the prune flow's model.pt must load with "
        "`torch.load(weights_only=True)` into a fresh `torchvision.models.get_model(arch)` with "
        "`load_state_dict(strict=True)` and give the masked model's outputs.\n\n"
        f"**{len(results)} architectures; masks at every granularity ok: {len(masks_ok)}; compaction exact: "
        f"{len(comp_ok)}; model.pt loads strictly into a fresh instance: {len(reload_ok)}.** Sum of the per-architecture times: {seconds / 60:.1f} min"
        + (f"; the whole sweep took {total_s / 60:.1f} min wall-clock" if total_s else "")
        + " on this machine's CPU (2 cores shared with other work).\n\n"
        + table(results) + reasons(results))
    out_md.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archs", nargs="*", help="only these architectures (default: all)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "torchvision_sweep.md"))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per architecture")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    from explorer.core.model.zoo import torchvision_archs

    archs = args.archs or torchvision_archs()
    out_md = Path(args.out)
    out_json = out_md.with_suffix(".json")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    t0 = time.perf_counter()
    for arch in archs:
        tmp = out_json.with_name(f".sweep-{arch}.json")
        t = time.perf_counter()
        env = dict(os.environ, OMP_NUM_THREADS="1")
        try:
            subprocess.run([sys.executable, __file__, "--child", arch, str(tmp)], timeout=args.timeout, env=env,
                           check=False)
            r = json.loads(tmp.read_text()) if tmp.exists() else {"error": "the check died (out of memory?)"}
        except subprocess.TimeoutExpired:
            r = {"error": f"took longer than {args.timeout:.0f} s"}
        tmp.unlink(missing_ok=True)
        r.setdefault("seconds", time.perf_counter() - t)
        results[arch] = r
        status = r.get("error") or ("compact " + ("ok" if (r.get("compact") or {}).get("ok") else "NO")
                                    + ", model.pt " + ("ok" if (r.get("reload") or {}).get("ok") else "NO"))
        print(f"{arch}: {r['seconds']:.0f} s, {status}", flush=True)
        out_json.write_text(json.dumps(results, indent=1))
        write_docs(results, None, out_md)
    total = time.perf_counter() - t0
    write_docs(results, total if not args.archs else None, out_md)
    print(f"total {total / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
