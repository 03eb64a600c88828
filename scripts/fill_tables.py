"""Fill the benchmark tables and figures of README.md and benchmarks/README.md from benchmarks/results/*.json.

A block is marked in the Markdown as ``<!-- table:NAME -->`` ... ``<!-- /table -->``: a table on lines of its own,
or a figure inside a sentence or a table cell. Everything between the markers is rewritten from the JSON the
benchmark scripts write, so the READMEs cannot drift from what the code gives:

    python scripts/fill_tables.py            # rewrite the blocks
    python scripts/fill_tables.py --check    # exit 1 (naming the blocks) if a README is not what it would write

tests/test_fill_tables.py runs the check. A block whose NAME is not known here is an error.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
BLOCK = re.compile(r"<!-- table:([\w.-]+) -->(.*?)<!-- /table -->", re.S)

PAPER_LENET = {"pruned": 12, "quantized": 32, "huffman": 40}
PAPER_VGG = {"pruned": 13, "quantized": 31, "huffman": 49}
STAGE = {"dense": "dense", "pruned": "pruned", "quantized": "quantized", "huffman": "Huffman"}
BIASES_BYTES = (300 + 100 + 10) * 4     # digits-mlp's 410 fp32 biases, stored dense in every archive


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def pct(x: float) -> str:
    return f"{x:.2f} %"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------ Deep Compression (bench_deep_compression)

def _dc() -> dict:
    return load("deep_compression.json")


def _delta(acc: float, dense: float) -> str:
    return f" ({acc - dense:+.2f})".replace("-", "−")


def _mlp_rows(seconds: bool) -> list[list[str]]:
    """Seed 0's stages; the last (Huffman) in bold; the change from dense on every stage (``seconds``) or the last."""
    d = _dc()["digits-mlp"]
    dense = d["stages"][0]["accuracy"]
    rows = []
    for i, st in enumerate(d["stages"]):
        last = i == len(d["stages"]) - 1
        ratio = f"{st['ratio']:.1f}×"
        acc = f"**{pct(st['accuracy'])}**" if last else pct(st["accuracy"])
        if i and (seconds or last):
            acc += _delta(st["accuracy"], dense)
        row = [STAGE[st["name"]], f"{st['size_bytes']:,}", f"**{ratio}**" if last else ratio,
               f"{PAPER_LENET.get(st['name'], 1)}×", acc]
        if seconds:
            s = d["seconds"].get(st["name"])
            row.append("—" if s is None else f"{s:.3f}")
        rows.append(row)
    return rows


def dc_digits() -> str:
    return table(["stage", "bytes", "ratio", "paper (LeNet-300-100)", "test accuracy"], _mlp_rows(False))


def dc_digits_bench() -> str:
    return table(["stage", "bytes", "ratio", "paper (LeNet-300-100)", "test accuracy", "seconds"], _mlp_rows(True))


def dc_layers() -> str:
    """The paper's Table 2 for digits-mlp, as the benchmark prints it (accounting.table2)."""
    from explorer.core.compress.accounting import table2

    d = _dc()["digits-mlp"]
    rows = table2(d["layers"], d["stages"])
    return table(rows[0], [[c.replace("%", " %") for c in r] for r in rows[1:]])


def dc_goal() -> str:
    """'met (40.5×, −0.83 points; seeds 0–4: ...)' or 'not met (...)'."""
    d = _dc()["digits-mlp"]
    dense, last = d["stages"][0]["accuracy"], d["stages"][-1]
    text = (f"{'met' if d['goal_met'] else 'not met'} ({last['ratio']:.1f}×, "
            f"{last['accuracy'] - dense:+.2f} points".replace("-", "−"))
    seeds = d.get("seeds")
    if seeds:
        ratios = [s["ratio"] for s in seeds]
        accs = [s["accuracy"] for s in seeds]
        ok = sum(r >= 40 and dense - a <= 1.0 for r, a in zip(ratios, accs))
        text += (f"; seeds 0–{len(seeds) - 1}: {min(ratios):.1f}–{max(ratios):.1f}×, test "
                 f"{' / '.join(f'{a:.2f}' for a in accs)} %, mean {sum(accs) / len(accs):.2f} %, "
                 f"{ok} of {len(seeds)} meet the goal")
    return text + ")"


def dc_biases() -> str:
    total = _dc()["digits-mlp"]["stages"][-1]["size_bytes"]
    return f"{BIASES_BYTES:,} of the {total:,} bytes ({BIASES_BYTES / total:.0%})".replace("%", " %")


def dc_summary() -> str:
    d = _dc()["digits-mlp"]
    r = [f"{s['ratio']:.1f}×" for s in d["stages"][1:]]
    r[-1] = f"**{r[-1]}**"
    return f"{' / '.join(r)}, test {pct(d['stages'][-1]['accuracy'])} vs {pct(d['stages'][0]['accuracy'])} dense"


def dc_bits() -> str:
    """The benchmark's --bits as words: 'linear=4' -> '4-bit shared weights', 'linear=4,fc1=5' -> '... (5 for fc1)'."""
    pairs = dict(p.split("=") for p in _dc()["digits-mlp"]["settings"]["bits"].split(","))
    base = pairs.pop("linear")
    extra = ", ".join(f"{v} for {k}" for k, v in pairs.items())
    return f"{base}-bit shared weights" + (f" ({extra})" if extra else " in every layer")


def dc_untrained() -> str:
    return pct(_dc()["digits-mlp"]["untrained_accuracy"])


def dc_vgg() -> str:
    v = _dc()["torchvision:vgg16"]
    rows = []
    for st in v["stages"]:
        ratio = f"{st['ratio']:.1f}×"
        rows.append([STAGE[st["name"]], f"{st['size_bytes']:,}", f"**{ratio}**" if st["name"] == "huffman" else ratio,
                     f"{PAPER_VGG.get(st['name'], 1)}×"])
    return table(["stage", "bytes", "ratio", "paper (trained VGG-16)"], rows)


def dc_vgg_ratios() -> str:
    r = [f"{s['ratio']:.1f}×" for s in _dc()["torchvision:vgg16"]["stages"][1:]]
    r[-1] = f"**{r[-1]}**"
    return " / ".join(r)


# ------------------------------------------------------------------------ slider step (bench_slider)

def slider() -> str:
    d = load("slider.json")
    return table([f"step ms (median of {d['steps']})", "step ms (max)",
                   f"torch.prune ms (median of {d['baseline_steps']})", "ratio", "cache build s"],
                  [[f"**{d['step_ms_median']:.2f}**", f"{d['step_ms_max']:.1f}", f"{d['baseline_ms_median']:,.0f}",
                    f"**{d['ratio']:,.0f}×**", f"{d['cache_build_s']:.1f}"]])


def slider_summary() -> str:
    d = load("slider.json")
    return (f"{d['step_ms_median']:.1f} ms median vs {d['baseline_ms_median'] / 1000:.1f} s for `torch.nn.utils.prune` "
            f"({d['ratio']:,.0f}×); cache {d['cache_build_s']:.1f} s once")


def first_ranking() -> str:
    """The big layer's first answer, selection first vs the full sort first (bench_slider, side by side)."""
    d = load("slider_lazy_first_ranking.json")
    steps = d["selection_steps_ms"]
    return table(["", "before (full sort first)", "after (selection first)", "ratio"],
                 [["`cache_build_s` ({}, {:.1f} M weights)".format(d["layer"], d["weights"] / 1e6),
                   f"{d['before_cache_build_s']:.1f}", f"**{d['cache_build_s']:.2f}**", f"**{d['build_ratio']:.1f}×**"],
                  ["first answer (build + first step) s", f"{d['before_first_answer_s']:.1f}",
                   f"**{d['first_answer_s']:.2f}**", f"{d['first_answer_ratio']:.1f}×"],
                  ["steps while the sort runs (ms)", "—", f"{min(steps):,.0f}–{max(steps):,.0f}", ""],
                  ["full ranking done (background) s", f"{d['before_cache_build_s']:.1f}",
                   f"{d['ranking_done_s']:.1f}", ""],
                  ["step ms (median, finished ranking)", "", f"{d['step_ms_median']:.1f}", ""]])


def first_ranking_goal() -> str:
    d = load("slider_lazy_first_ranking.json")
    ok = d["first_answer_s"] <= 2.0
    return (f"{'met' if ok else 'not met'} ({d['first_answer_s']:.2f} s to the first answer, "
            f"{d['cache_build_s']:.2f} s build)")


def first_ranking_summary() -> str:
    d = load("slider_lazy_first_ranking.json")
    return (f"{d['first_answer_s']:.2f} s to the first answer vs {d['before_first_answer_s']:.1f} s sorting first "
            f"({d['first_answer_ratio']:.1f}×); goal ≤ 2 s")


# ------------------------------------------------------------------------ window stall (bench_gui_stall)

def gui_stall() -> str:
    d = load("gui_stall.json")
    return table(["job s", "ticks", "median gap ms", "p99 gap ms", "**max stall ms**", "p99 GUI cpu ms",
                  "max GUI cpu ms"],
                 [[f"{d['job_s']:.1f}", f"{d['ticks']}", f"{d['median_gap_ms']:.1f}", f"{d['p99_gap_ms']:.1f}",
                   f"**{d['max_stall_ms']:.1f}**", f"{d['p99_gui_cpu_ms']:.1f}", f"{d['max_gui_cpu_ms']:.1f}"]])


def gui_stall_summary() -> str:
    return f"{load('gui_stall.json')['max_stall_ms']:.0f} ms max"


BLOCKS = {"first-ranking": first_ranking, "first-ranking-goal": first_ranking_goal, "first-ranking-summary": first_ranking_summary, "gui-stall": gui_stall, "gui-stall-summary": gui_stall_summary, "slider": slider, "slider-summary": slider_summary, "dc-digits": dc_digits, "dc-digits-bench": dc_digits_bench, "dc-layers": dc_layers, "dc-goal": dc_goal,
          "dc-biases": dc_biases, "dc-summary": dc_summary, "dc-untrained": dc_untrained, "dc-bits": dc_bits, "dc-vgg": dc_vgg,
          "dc-vgg-ratios": dc_vgg_ratios}


# ------------------------------------------------------------------------ sensitivity scan (bench_sensitivity)

def _scan_rows() -> list[dict]:
    return load("sensitivity.json")["rows"]


def sensitivity() -> str:
    """Naive loop / exact replay / sequential scan, side by side in one run per model."""
    rows = []
    for r in _scan_rows():
        shared = f"{100 * r['sample_share']:.0f} %"
        if r.get("precision") == "bfloat16":
            shared += f" (bf16; {100 * r.get('recomputed_share', 0):.1f} % again in fp32)"
        rows.append([r["model"], f"{r['dataset']} ({r['samples']})", f"{r['points']}", f"{r['naive_s']:.2f}",
                     f"{r['exact_s']:.2f}", f"{r['exact_ratio']:.1f}×", f"{r['fast_s']:.2f}", f"**{r['ratio']:.1f}×**",
                     shared, "✔" if r["same_allocation"] else "✘"])
    return table(["model", "split (samples)", "points", "naive s", "exact replay s", "ratio", "sequential s",
                  "**ratio**", "samples used", "same allocation"], rows)


def sensitivity_summary() -> str:
    rows = _scan_rows()
    fast = ", ".join(f"{r['ratio']:.1f}× {r['model']}" for r in rows)
    exact = [r["exact_ratio"] for r in rows]
    same = "same allocation in every row" if all(r["same_allocation"] for r in rows) else "allocations DIFFER"
    return f"sequential (default): {fast}; `--exact`: {min(exact):.1f}–{max(exact):.1f}×; {same}"


def sensitivity_goal() -> str:
    rows = _scan_rows()
    miss = [r["model"] for r in rows if r["ratio"] < 5 or not r["same_allocation"]]
    return "met" if not miss else f"not met for {', '.join(miss)}"


BLOCKS.update({"sensitivity": sensitivity, "sensitivity-summary": sensitivity_summary,
               "sensitivity-goal": sensitivity_goal})


# ------------------------------------------------------------------------ instant sensitivity estimate (bench_predict)

PREDICT_LABELS = ("old", "quad", "first", "new", "new(fp32)", "new(64)", "new(train)")


def _sig(v: float | None) -> str:
    """Two significant digits, thousands as whole numbers: 0.86, 2.1, 57, 1,100, 9,700."""
    if v is None:
        return "–"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{float(f'{v:.2g}'):g}"


def _predict_cell(c: dict) -> str:
    rho = "–" if c["spearman"] is None else f"{c['spearman']:.2f}"
    out = f" ({c['left_out']} out)" if c["left_out"] else ""
    return f"{_sig(c['ratio'])} / {_sig(c['worst'])} / {rho}{out}"


def predict() -> str:
    """measured ÷ predicted (geometric mean over layers) / worst layer's factor / Spearman, per model and sparsity;
    the estimate the app shows in bold."""
    d = load("predict.json")
    rows = []
    for m in d["models"]:
        for r in m["rows"]:
            rows.append([m["model"], f"{r['sparsity']:.0%}".replace("%", " %")] + [
                f"**{_predict_cell(r[k])}**" if k == "new" else _predict_cell(r[k]) for k in PREDICT_LABELS])
    return table(["model", "sparsity"] + list(PREDICT_LABELS), rows)


def _goal(g: dict) -> str:
    if g["met"]:
        return "met"
    misses = [w for k, w in (("layers_within_3x", "a layer's mean"), ("worst_within_3x", "a point"),
                             ("spearman_ge_0.9", "Spearman")) if not g[k]]
    return "not met (" + ", ".join(misses) + ")"


def predict_summary() -> str:
    """Per model: the per-layer factors of the app's estimate, the goal for it and for the estimate before, and
    the seconds of each next to the scan's."""
    d = load("predict.json")
    rows = []
    for m in d["models"]:
        per = [v for v in m["per_layer"]["new"].values() if v is not None]
        out = len(m["per_layer"]["new"]) - len(per)
        sec, again = m["estimate_seconds"], m.get("seconds_again", {})
        rows.append([m["model"], f"{min(per):.2f}–{max(per):.2f}" + (f" ({out} out)" if out else ""),
                     f"**{_goal(m['goal']['new'])}**", _goal(m["goal"]["first"]), _goal(m["goal"]["new(train)"]),
                     f"{m['scan_seconds']:.1f}", f"{sec['first']:.1f}",
                     f"{sec['new']:.1f} ({again.get('new', 0):.1f})",
                     f"{sec['new(fp32)']:.1f} ({again.get('new(fp32)', 0):.1f})",
                     f"{m['samples']['new']['precision']}: {again['new(fp32)'] / again['new']:.2f}×"
                     if again.get("new") else m["samples"]["new"]["precision"],
                     f"{m['goal_over_seeds']['new']['met']}/{m['goal_over_seeds']['new']['seeds']}, "
                     f"{m['goal_over_seeds']['new(64)']['met']}/{m['goal_over_seeds']['new(64)']['seeds']}"])
    return table(["model", "new: per layer", "goal: new", "goal: first", "goal: new(train)", "scan s", "first s",
                  "new s (again)", "new(fp32) s (again)", "new ran in: fp32 ÷ it (again)",
                  "goal met over draws: new, new(64)"], rows)


def predict_readme() -> str:
    """The README's sentence: per model, the app's estimate's range of per-layer factors and its goal."""
    d = load("predict.json")
    parts = []
    for m in d["models"]:
        per = [v for v in m["per_layer"]["new"].values() if v is not None]
        rhos = [r["new"]["spearman"] for r in m["rows"] if r["new"]["spearman"] is not None]
        parts.append(f"{m['model']} {min(per):.2f}–{max(per):.2f}× per layer, Spearman ≥ {min(rhos):.2f} "
                     f"({_goal(m['goal']['new'])})")
    return "; ".join(parts)


def predict_before() -> str:
    """How far the estimates before were: the first 128 samples' worst point, the quadratic's range (as factors)."""
    d = load("predict.json")
    worst = max(r["first"]["worst"] for m in d["models"] for r in m["rows"] if r["first"]["worst"] is not None)
    quad = [r["quad"]["ratio"] for m in d["models"] for r in m["rows"] if r["quad"]["ratio"] is not None]
    return (f"the estimate before (the first 128 validation samples) was up to {_sig(worst)}× off at one point, "
            f"the quadratic alone is {_sig(min(quad))}–{_sig(max(quad))}× too small")


def predict_train() -> str:
    """The per-layer factors of the estimate on training samples, per model."""
    d = load("predict.json")
    parts = []
    for m in d["models"]:
        per = [v for v in m["per_layer"]["new(train)"].values() if v is not None]
        parts.append(f"{m['model']} {_sig(min(per))}–{_sig(max(per))}×")
    return ", ".join(parts)


BLOCKS.update({"predict": predict, "predict-summary": predict_summary, "predict-readme": predict_readme,
               "predict-before": predict_before, "predict-train": predict_train})


# ------------------------------------------------------------------------ filling

def fill(text: str, where: str = "") -> str:
    def one(m: re.Match) -> str:
        name, old = m.group(1), m.group(2)
        if name not in BLOCKS:
            raise SystemExit(f"{where}: unknown table block '{name}' (known: {', '.join(BLOCKS)})")
        body = BLOCKS[name]()
        if old.startswith("\n"):        # a block on lines of its own
            body = f"\n{body}\n"
        return f"<!-- table:{name} -->{body}<!-- /table -->"
    return BLOCK.sub(one, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if a README differs")
    args = ap.parse_args(argv)
    stale = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        new = fill(text, str(doc.relative_to(ROOT)))
        if new != text:
            stale.append(doc)
            if not args.check:
                doc.write_text(new, encoding="utf-8")
    if args.check and stale:
        names = ", ".join(str(d.relative_to(ROOT)) for d in stale)
        print(f"{names}: benchmark tables differ from benchmarks/results/*.json; run python scripts/fill_tables.py",
              file=sys.stderr)
        return 1
    for d in stale:
        print(f"rewrote tables in {d.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
