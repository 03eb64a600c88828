"""README benchmark figures are generated from benchmarks/results/*.json (scripts/fill_tables.py): the READMEs
hold exactly what the script would write, so a benchmark re-run that changes a number shows up here."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fill_tables():
    spec = importlib.util.spec_from_file_location("fill_tables", ROOT / "scripts" / "fill_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("doc", ["README.md", "benchmarks/README.md"])
def test_readme_tables_are_what_the_results_give(doc):
    ft = fill_tables()
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert ft.BLOCK.search(text), f"{doc} has no generated blocks"
    assert ft.fill(text, doc) == text, f"{doc} differs from benchmarks/results: run python scripts/fill_tables.py"


def test_the_deep_compression_figures_follow_the_json(tmp_path, monkeypatch):
    ft = fill_tables()
    d = json.loads((ft.RESULTS / "deep_compression.json").read_text())
    d["digits-mlp"]["stages"][-1].update(size_bytes=5138, ratio=39.4, accuracy=98.06)
    d["digits-mlp"]["goal_met"] = False
    (tmp_path / "deep_compression.json").write_text(json.dumps(d))
    monkeypatch.setattr(ft, "RESULTS", tmp_path)
    text = "x <!-- table:dc-summary -->old<!-- /table --> y\n<!-- table:dc-digits -->\n| old |\n<!-- /table -->\n"
    out = ft.fill(text)
    assert "**39.4×**" in out and "5,138" in out and "| old |" not in out and "old<" not in out
    assert "not met (39.4×" in ft.dc_goal()


def test_an_unknown_block_is_an_error():
    with pytest.raises(SystemExit, match="unknown table block 'nope'"):
        fill_tables().fill("<!-- table:nope -->x<!-- /table -->")


def test_the_estimate_figures_follow_the_json(tmp_path, monkeypatch):
    """Issue 25: the instant estimate's tables and README sentence are written from results/predict.json."""
    ft = fill_tables()
    d = json.loads((ft.RESULTS / "predict.json").read_text())
    m = d["models"][0]
    name = next(n for n, v in m["per_layer"]["new"].items() if v is not None)
    m["per_layer"]["new"][name] = 7.25
    m["goal"]["new"].update(met=False, layers_within_3x=False)
    m["rows"][0]["first"]["worst"] = 1234.0
    (tmp_path / "predict.json").write_text(json.dumps(d))
    monkeypatch.setattr(ft, "RESULTS", tmp_path)
    assert f"{m['model']} " in ft.predict_readme() and "7.25×" in ft.predict_readme()
    assert "not met (a layer's mean)" in ft.predict_readme()
    assert "up to 1,234×" in ft.predict_before()
    out = ft.fill("<!-- table:predict -->\n| stale |\n<!-- /table -->\n")
    assert "| stale |" not in out and f"| {m['model']} | 40 % |" in out and "0.9 / 1,234 / 1.00" in out
    assert "**not met (a layer's mean)**" in ft.predict_summary()
