"""The README's Classroom section: its minimal lesson really loads and steps through with live numbers, and its
manual recipe entries are a recipe the app replays."""
from __future__ import annotations

import json
import re
from pathlib import Path

from explorer.core.lessons import steps
from explorer.core.lessons.lesson import parse_lesson
from explorer.core.prune.recipe import recipe_to_plan
from explorer.core.session import Session

README = Path(__file__).resolve().parent.parent / "README.md"


def _classroom() -> str:
    text = README.read_text()
    start = text.index("## Classroom")
    return text[start:text.index("\n## ", start + 1)]


def _json_blocks(section: str) -> list[str]:
    return re.findall(r"```json\n(.*?)```", section, re.S)


def test_readme_minimal_lesson_loads_and_fills_its_numbers_from_the_session():
    blocks = _json_blocks(_classroom())
    lesson = parse_lesson(json.loads(blocks[0]), "readme")
    assert [s.title for s in lesson.steps] == ["Dense", "Half of it by |w|"]
    s = Session.open(lesson.model)
    for step in lesson.steps:
        steps.setup(s, lesson, step)
        steps.measure(s, step)
        shown = steps.render(s, step)
        assert not shown.pending, shown.pending          # every placeholder has a value from the session
        assert "{" not in shown.text
    numbers = shown.numbers()
    assert numbers["layer_sparsity"] == f"{s.plan.get('backbone.conv3').sparsity:.1%}" == "50.0%"
    assert numbers["accuracy"] == f"{s.measurements.current.value.accuracy:.2f} %"


def test_readme_manual_recipe_entries_are_a_recipe():
    block = _json_blocks(_classroom())[1]
    layers = json.loads("{" + block.strip() + "}")["layers"]
    plan = recipe_to_plan({"layers": layers})
    assert plan.get("backbone.conv3").units == (0, 5, 9)
    assert plan.get("backbone.conv2").units == ((0, 3), (2, 1))
    assert plan.get("classifier").units == ((4, 17), (9, 200))
    s = Session.open("digits-cnn")
    s.set_plan(plan)
    w = s.masked_state()["backbone.conv3.weight"]
    assert [i for i in range(w.shape[0]) if bool((w[i] == 0).all())] == [0, 5, 9]
    assert float(s.masked_state()["classifier.weight"][4, 17]) == 0.0
