"""Language-model pruning measured here (issue 23): the Wanda paper's table shape on the built-in ``tiny-lm``.

Test perplexity (per byte, ``tiny-text``'s test split) of the dense model and of magnitude (``l1``), ``wanda`` and
``sparsegpt`` at 50 % unstructured, 2:4 and 70 % unstructured, each with the uniform allocation and with OWL
(``--allocation owl``; OWL distributes an unstructured target, so 2:4 has no OWL row); then the depth-pruning
curve (``--granularity block``: k of the model's blocks dropped, the least influential first, test perplexity and
the *measured* latency of the shallower model against dense); and, when ``benchmarks/results/llm_scale_1b.json``
exists (``bench_llm_scale.py --params 1b``), the 1 B run's time and peak memory.

Every number comes through the command line's own door: each row is ``pruning-explorer prune --model tiny-lm ...
--out DIR`` run in this process, and its value is read back from ``DIR/report.json`` -- the same request the CLI,
the window and the lessons make gives these numbers.

    python benchmarks/bench_llm.py [--json] [--quick] [--samples 128] [--patterns 50%,2:4,70%]

``--quick``: one pattern (50 %), magnitude and sparsegpt, uniform, 8 calibration samples, one depth point timed
with 3 latency runs (not 20), on the first 24 KB of ``tiny-text`` given as ``--dataset text:FILE`` (the same code
path on a short text; the test suite runs it). Calibration: ``--samples`` seeded training blocks (the paper's 128).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401
from _common import emit, machine

from explorer.cli import main as cli

MODEL = "tiny-lm"
PATTERNS = {"50%": ("element", 0.5), "2:4": ("2:4", 0.5), "70%": ("element", 0.7)}
CRITERIA = ("l1", "wanda", "sparsegpt")
SCALE_JSON = Path(__file__).resolve().parent / "results" / "llm_scale_1b.json"
DATA: list[str] = []          # extra prune flags: --quick points --dataset at a short excerpt


def prune(*flags: str) -> dict:
    """One ``prune`` through the CLI; its report.json."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli(["prune", "--model", MODEL, "--seed", "0", "--out", str(out), *DATA, *flags])
        if rc != 0:
            raise SystemExit(f"prune {' '.join(flags)} failed ({rc}): {err.getvalue()[-1500:]}")
        return json.loads((out / "report.json").read_text())


def ppl(report: dict, which: str) -> float:
    return float(report[which]["perplexity"])


def table(patterns, criteria, samples: int, owl: bool) -> tuple[float, list[dict]]:
    rows, dense = [], None
    for label in patterns:
        gran, sparsity = PATTERNS[label]
        for crit in criteria:
            for alloc in (("uniform", "owl") if owl and gran == "element" else ("uniform",)):
                t0 = time.perf_counter()
                rep = prune("--sparsity", str(sparsity), "--granularity", gran, "--criterion", crit,
                            "--allocation", alloc, "--calibration-samples", str(samples), "--no-latency")
                dense = ppl(rep, "dense")
                rows.append({"pattern": label, "criterion": crit, "allocation": alloc,
                             "perplexity": ppl(rep, "pruned"), "sparsity": round(rep["sparsity"], 4),
                             "seconds": round(time.perf_counter() - t0, 2)})
    return dense, rows


def depth_curve(samples: int, points: list[float], latency_runs: int = 20) -> list[dict]:
    out = []
    for s in points:
        rep = prune("--granularity", "block", "--sparsity", str(s), "--calibration-samples", str(samples),
                    "--latency-runs", str(latency_runs))
        blocks = rep.get("blocks", {})
        out.append({"sparsity": s, "dropped": blocks.get("dropped"), "perplexity": ppl(rep, "pruned"),
                    "dense_perplexity": ppl(rep, "dense"), "latency_ms": rep["pruned"]["latency_ms"],
                    "dense_latency_ms": rep["dense"]["latency_ms"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--patterns", default="50%,2:4,70%")
    ap.add_argument("--depth", default="0.25,0.5,0.75", help="block sparsities of the depth curve")
    args = ap.parse_args()
    if args.quick:
        from explorer.core.model.text_data import tiny_text_path

        excerpt = Path(tempfile.mkdtemp()) / "excerpt.txt"
        excerpt.write_bytes(tiny_text_path().read_bytes()[:24_000].decode("utf-8", "ignore").encode("utf-8"))
        DATA.extend(["--dataset", f"text:{excerpt}"])
        patterns, criteria, samples, owl, depth, runs = ["50%"], ("l1", "sparsegpt"), 8, False, [0.25], 3
    else:
        patterns, criteria, samples, owl, runs = args.patterns.split(","), CRITERIA, args.samples, True, 20
        depth = [float(v) for v in args.depth.split(",")]
    dense, rows = table(patterns, criteria, samples, owl)
    curve = depth_curve(samples, depth, runs)
    scale = json.loads(SCALE_JSON.read_text()) if SCALE_JSON.exists() and not args.quick else None
    payload = {"model": MODEL, "dataset": DATA[-1] if DATA else "tiny-text", "split": "test", "metric": "perplexity",
               "calibration_samples": samples, "dense_perplexity": dense, "rows": rows, "depth_curve": curve,
               "scale_1b": scale, "machine": machine()}
    lines = [["dense", "", "", f"{dense:.3f}", ""]]
    lines += [[r["criterion"], r["pattern"], r["allocation"], f"{r['perplexity']:.3f}", f"{r['seconds']:.1f}"]
              for r in rows]
    lines += [[f"drop {c['dropped'] and len(c['dropped'])} blocks", "block", "",
               f"{c['perplexity']:.3f}", f"{c['latency_ms']:.2f} ms vs {c['dense_latency_ms']:.2f} ms dense"]
              for c in curve]
    emit(args, lines, ["criterion", "pattern", "allocation", "test perplexity", "seconds / latency"], payload)


if __name__ == "__main__":
    main()
