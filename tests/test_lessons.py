"""Lessons: every built-in lesson steps through, and every number it shows comes from the session."""
from __future__ import annotations

import json

import pytest

from explorer.core.errors import PlanError
from explorer.core.lessons import steps, values
from explorer.core.lessons.lesson import lesson_names, load_lesson, parse_lesson
from explorer.core.prune.plan import Plan
from explorer.core.session import Session


def _quality(ev) -> str:
    """An evaluation as a lesson shows it: accuracy in percent, or a language model's perplexity."""
    return f"{ev.accuracy:.2f} %" if ev.accuracy is not None else f"{ev.perplexity:.2f}"


def independent(s: Session, name: str):
    """The value ``name`` read straight from the session's own objects (not through values.py's readers)."""
    m = s.measurements
    t = s.totals()
    lp = s.plan.get(s.selected) if s.selected else None
    lat = m.latency.value if s.is_fresh(m.latency) else None
    csr = m.speed.layers[0].kernels[0] if m.speed is not None else None     # the speed map's CSR curve
    return {
        "model": s.model_name, "layer": s.selected, "sparsity": f"{t.sparsity:.1%}",
        "compression": f"{t.compression_ratio:.2f}×", "mac_ratio": f"{t.mac_ratio:.2f}×",
        "layer_sparsity": None if lp is None else f"{lp.sparsity:.1%}",
        "layer_params": None if lp is None else f"{s.layer(s.selected).params:,}",
        "layer_nonzero": None if lp is None else f"{s.layer_counts(s.selected).nonzero:,}",
        "accuracy": _quality(m.current.value) if s.is_fresh(m.current) else None,
        "dense_accuracy": None if m.dense is None else _quality(m.dense),
        "latency_dense": None if lat is None else f"{lat.dense.median_ms:.3g} ms",
        "latency_masked": None if lat is None else f"{lat.masked.median_ms:.3g} ms",
        "latency_compact": None if lat is None or lat.compact is None else f"{lat.compact.median_ms:.3g} ms",
        "swept_layers": str(len(m.sweep.value.swept)) if s.is_fresh(m.sweep) else None,
        "uniform_accuracy": (_quality(m.evaluations[m.key(m.allocation.base_id, m.allocation.value[1])])
                             if s.is_fresh(m.allocation) else None),
        "weakest_block_skipped": (f"{min((b for b in m.blocks.value.blocks if b.influence is not None), key=lambda b: b.influence).metric_when_skipped:.2f}"  # noqa: E501
                                  if s.is_fresh(m.blocks) else None),
        "sparse_break_even": None if csr is None else (f"above {csr.break_even * 100:.0f} % sparsity" if csr.break_even
                                                       else f"at no sparsity up to {csr.sparsities[-1] * 100:.0f} %"),
    }.get(name, "skip")


def test_at_least_five_lessons_ship():
    names = lesson_names()
    assert len(names) >= 5
    for n in ("magnitude", "granularity", "speedup", "iterative", "sensitivity", "criteria"):
        assert n in names


@pytest.mark.parametrize("name", lesson_names())
def test_each_lesson_steps_through_with_numbers_from_the_session(name, short_tiny_text):
    lesson = load_lesson(name)
    s = Session()
    if lesson.model == "tiny-lm":      # 32 calibration blocks of text, not 128: its sweep and statistics 3x sooner
        s.set_calibration_samples(32)
    shown = 0
    for i, step in enumerate(lesson.steps):
        steps.setup(s, lesson, step)
        assert s.model_spec == (step.model or lesson.model)
        if step.select:
            assert s.selected == step.select
        steps.measure(s, step, runs=3)
        if step.sweeps:       # the sweep's masks and updated weights are the kept weights, not the slider's preview
            assert s.base_label.startswith("sparsegpt") and s.is_fresh(s.measurements.sweep)
        if step.allocation:   # the allocation's plan: sparsities differ per block, the target met overall
            a = s.measurements.allocation.value[0]
            assert len({round(v, 4) for v in a.sparsities.values()}) > 1
            params = {n: s.layer(n).params for n in a.sparsities}
            pruned = sum(s.layer_counts(n).params - s.layer_counts(n).nonzero for n in params)
            assert abs(pruned / sum(params.values()) - step.plan["all"]["sparsity"]) < 0.01   # over the layers it allocated
        r = steps.render(s, step)
        assert not r.pending, f"{name} step {i + 1}: {r.pending} not measured"
        assert "{" not in r.text and "…" not in r.text
        for key, text in r.numbers().items():
            assert text == values.formatted(s, key)
            direct = independent(s, key)
            if direct != "skip":
                assert text == direct, f"{name} step {i + 1}: {{{key}}} shows {text}, the session says {direct}"
            shown += 1
    assert shown >= len(lesson.steps)


def test_numbers_follow_the_session_live():
    lesson = load_lesson("magnitude")
    s = Session()
    step = lesson.steps[1]
    steps.setup(s, lesson, step)
    steps.measure(s, step)
    before = steps.render(s, step).numbers()
    s.set_layer("backbone.conv3", 0.7)         # the user drags the slider: the numbers follow, nothing is canned
    after = steps.render(s, step)
    assert after.numbers()["layer_sparsity"] == "70.0%" != before["layer_sparsity"]
    assert after.numbers()["threshold"] != before["threshold"]
    assert "accuracy" in after.pending           # measured for 50 %, stale at 70 %
    steps.measure(s, step)
    assert steps.render(s, step).numbers()["accuracy"] == f"{s.measurements.current.value.accuracy:.2f} %"


def test_nothing_is_evaluated_twice(monkeypatch):
    """The dense plan over the loaded weights is one evaluation (it is both numbers), and a state evaluated before
    -- Back, Next, a later step with the same weights and plan -- is recorded from that evaluation."""
    import explorer.core.flows.measure as flows_measure

    calls = []
    real = flows_measure.evaluate
    monkeypatch.setattr(flows_measure, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    lesson = load_lesson("magnitude")
    s = Session()
    first, second = lesson.steps[0], lesson.steps[1]
    for step, evaluations in ((first, 1), (second, 2), (first, 2), (second, 2)):
        steps.setup(s, lesson, step)
        steps.measure(s, step)
        assert len(calls) == evaluations
        assert not steps.render(s, step).pending
    assert s.measurements.dense == s.measurements.evaluation(s.base_id, Plan()) is not None
    s.set_layer("backbone.conv3", 0.7)          # a new state is evaluated
    steps.measure(s, second)
    assert len(calls) == 3


def test_setup_edits_are_undoable():
    lesson = load_lesson("granularity")
    s = Session()
    steps.setup(s, lesson, lesson.steps[0])
    p0 = s.plan
    steps.setup(s, lesson, lesson.steps[1])
    assert s.plan != p0
    s.undo()
    assert s.plan == p0


def test_a_teachers_own_lesson_file(tmp_path):
    d = {"format": "pruning-explorer-lesson", "title": "Mine", "model": "digits-mlp",
         "steps": [{"title": "One", "text": "fc1 at {layer_sparsity}: {layer_pruned} weights gone.",
                    "plan": {"layers": {"fc1": {"sparsity": 0.25}}}, "select": "fc1"}]}
    p = tmp_path / "mine.json"
    p.write_text(json.dumps(d))
    lesson = load_lesson(str(p))
    s = Session()
    steps.setup(s, lesson, lesson.steps[0])
    assert steps.render(s, lesson.steps[0]).text == f"fc1 at 25.0%: {round(0.25 * 64 * 300):,} weights gone."


@pytest.mark.parametrize("step, words", [
    ({"title": "x", "text": "{nonsense}"}, "not a value the app measures"),
    ({"title": "x", "text": "a { b"}, "stray brace"),
    ({"title": "x", "text": "ok", "tab": "nowhere"}, "unknown tab"),
    ({"title": "x", "text": "ok", "measure": ["vibes"]}, "'measure' must be a list"),
    ({"title": "x", "text": "ok", "colour": "red"}, "unknown key"),
    ({"title": "x"}, "'text' must be a non-empty text"),
    ({"title": "x", "text": "ok", "apply": "yes"}, "true or false"),
    ({"title": "x", "text": "ok", "plan": {"all": {"sparsity": 0.7}, "allocation": "random"}}, "'plan.allocation'"),
])
def test_bad_lessons_are_refused_with_the_step_named(step, words):
    with pytest.raises(PlanError) as e:
        parse_lesson({"format": "pruning-explorer-lesson", "title": "t", "steps": [{"title": "a", "text": "b"}, step]},
                     "bad")
    assert words in e.value.message and "step 2" in e.value.message


def test_unknown_lesson_lists_the_built_in_ones():
    with pytest.raises(PlanError) as e:
        load_lesson("no-such-lesson")
    assert "magnitude" in e.value.hint
