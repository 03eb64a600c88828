"""Lessons: the lecture as a guided walk-through, one step per idea, written as data files.

A lesson is one JSON file in ``resources/lessons/`` (or anywhere: a teacher opens their own). Format::

    {"format": "pruning-explorer-lesson", "version": 1,
     "title": "Magnitude pruning and the threshold", "summary": "one sentence",
     "model": "digits-cnn",                       # the model every step uses unless it names its own
     "steps": [{
        "title": "Half of one layer",
        "text": "At {layer_sparsity} of {layer} the threshold is t = {threshold}; ...",   # 2-3 sentences
        "model": "digits-vgg",                    # optional: load this model first
        "reset": true,                            # optional: back to the loaded dense weights first
        "plan": "dense" | {"all": {"sparsity": 0.5, "granularity": "element", "criterion": "l1"},
                           "layers": {"backbone.conv3": {"sparsity": 0.8}},    # recipe-style entries
                           "allocation": "owl"},     # optional: the layers "all" prunes get OWL's (or alpha's)
                                                     # sparsities around its sparsity (measured: kind "owl")
        "apply": false,                           # write the plan into the weights
        "select": "backbone.conv3",               # the layer the Weights tab shows
        "tab": "weights",                         # weights, fine-tune, latency, sensitivity, history, compress, criteria
        "detail": false,                          # zoom the heatmap to single weights
        "highlight": ["heatmap", "histogram"],    # what to point at (see HIGHLIGHTS)
        "measure": ["accuracy", "latency"],       # measured for this state when not yet (see values.py); a
                                                  # sparsegpt plan is applied by its sweep first (kind "sweep"),
                                                  # "blocks" measures block influence and a skipped block
        "latency_batch": 32}]}                    # optional: the batch latency is measured with

Numbers are never written in the file: ``{name}`` placeholders (values.py) are filled from the session when
the step is drawn, and again whenever the state or a measurement changes.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from explorer import RESOURCES

from ..checks import number
from ..errors import LessonError, PlanError, UnknownLessonError
from .values import VALUES

LESSON_FORMAT = "pruning-explorer-lesson"
LESSON_DIR = RESOURCES / "lessons"
TABS = ("weights", "fine-tune", "latency", "sensitivity", "history", "compress", "criteria")
HIGHLIGHTS = ("heatmap", "histogram", "layer-table", "many-layers", "dashboard", "accuracy-card", "latency-card",
              "size-card", "compression-card", "macs-card", "tab")
MEASURES = ("accuracy", "latency", "scan", "compression", "speed", "sweep", "owl", "blocks")
ALLOCATIONS = ("owl", "alpha")
STEP_KEYS = {"title", "text", "model", "reset", "plan", "apply", "select", "tab", "detail", "highlight", "measure",
             "latency_batch"}
MAX_STEPS = 200
MAX_TEXT = 2000


@dataclass(frozen=True)
class Step:
    title: str
    text: str
    model: str | None = None
    reset: bool = False
    plan: object = None           # None: keep the plan; "dense"; or {"all": {...}, "layers": {...}}
    apply: bool = False
    select: str | None = None
    tab: str | None = None
    detail: bool = False
    highlight: tuple[str, ...] = ()
    measure: tuple[str, ...] = ()
    latency_batch: int | None = None

    @property
    def placeholders(self) -> list[str]:
        return [f for _, f, _, _ in string.Formatter().parse(self.text) if f]

    @property
    def allocation(self) -> str | None:
        """The allocation the plan asks for (``owl``, ``alpha``), or None."""
        return self.plan.get("allocation") if isinstance(self.plan, dict) else None

    @property
    def sweeps(self) -> bool:
        """Does the step's plan name the sparsegpt criterion (applied by its sweep, not by the slider's preview)?"""
        if not isinstance(self.plan, dict):
            return False
        entries = [self.plan.get("all") or {}, *(self.plan.get("layers") or {}).values()]
        return any(isinstance(e, dict) and e.get("criterion") == "sparsegpt" for e in entries)

    @property
    def needs(self) -> tuple[str, ...]:
        """The measurements this step shows: named in ``measure`` or implied by its plan and placeholders (what
        changes the state -- the sweep, the allocation -- first)."""
        first = [k for k, on in (("sweep", self.sweeps), ("owl", self.allocation is not None)) if on]
        kinds = first + [k for k in self.measure if k not in first]
        for p in self.placeholders:
            k = VALUES[p].needs
            if k and k not in kinds:
                kinds.append(k)
        return tuple(kinds)


@dataclass(frozen=True)
class Lesson:
    name: str
    title: str
    summary: str
    model: str
    steps: tuple[Step, ...] = field(default_factory=tuple)
    path: Path | None = None


def _bad(where: str, why: str) -> PlanError:
    return LessonError(f"Lesson {where}: {why}.", "See the format in explorer/core/lessons/lesson.py or any file "
                                                "in resources/lessons/.")


def _text(d: dict, key: str, where: str, required: bool = True) -> str | None:
    v = d.get(key)
    if v is None and not required:
        return None
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        v = " ".join(v)   # long texts may be written as a list of lines
    if not isinstance(v, str) or not v.strip():
        raise _bad(where, f"'{key}' must be a non-empty text")
    if len(v) > MAX_TEXT:
        raise _bad(where, f"'{key}' is {len(v)} characters long; at most {MAX_TEXT}")
    return v.strip()


def _step(d, i: int, name: str) -> Step:
    where = f"'{name}', step {i + 1}"
    if not isinstance(d, dict):
        raise _bad(where, "a step must be a JSON object")
    unknown = sorted(set(d) - STEP_KEYS)
    if unknown:
        raise _bad(where, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(STEP_KEYS))})")
    text = _text(d, "text", where)
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise _bad(where, f"its text has a stray brace ({e}); write {{{{ and }}}} for literal braces") from None
    for f in fields:
        if f not in VALUES:
            raise _bad(where, f"its text names {{{f}}}, which is not a value the app measures (known: "
                              f"{', '.join(VALUES)})")
    for key in ("reset", "apply", "detail"):
        if key in d and not isinstance(d[key], bool):
            raise _bad(where, f"'{key}' must be true or false")
    tab = d.get("tab")
    if tab is not None and tab not in TABS:
        raise _bad(where, f"unknown tab '{tab}' (one of: {', '.join(TABS)})")
    lists = {}
    for key, allowed in (("highlight", HIGHLIGHTS), ("measure", MEASURES)):
        v = d.get(key, [])
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or any(x not in allowed for x in v):
            raise _bad(where, f"'{key}' must be a list of: {', '.join(allowed)}")
        lists[key] = tuple(v)
    plan = d.get("plan")
    if plan is not None and plan != "dense":
        if not isinstance(plan, dict) or set(plan) - {"all", "layers", "allocation"}:
            raise _bad(where, "'plan' is \"dense\" or an object with 'all' and/or 'layers' (and 'allocation')")
        if "allocation" in plan and (plan["allocation"] not in ALLOCATIONS or not isinstance(plan.get("all"), dict)):
            raise _bad(where, f"'plan.allocation' is one of {', '.join(ALLOCATIONS)}, with 'plan.all' giving the "
                              "sparsity to allocate around")
        if "all" in plan and not isinstance(plan["all"], dict):
            raise _bad(where, "'plan.all' must be an object like {\"sparsity\": 0.5, \"granularity\": \"element\"}")
        if "layers" in plan and not isinstance(plan["layers"], dict):
            raise _bad(where, "'plan.layers' must map layer names to settings")
    batch = d.get("latency_batch")
    if batch is not None:
        batch = int(number(batch, f"Lesson {where}: latency_batch", 1, 4096, integer=True))
    for key in ("model", "select"):
        if key in d and not isinstance(d[key], str):
            raise _bad(where, f"'{key}' must be a text")
    return Step(title=_text(d, "title", where), text=text, model=d.get("model"), reset=d.get("reset", False),
                plan=plan, apply=d.get("apply", False), select=d.get("select"), tab=tab, detail=d.get("detail", False),
                highlight=lists["highlight"], measure=lists["measure"], latency_batch=batch)


def parse_lesson(d, name: str, path: Path | None = None) -> Lesson:
    """Check a lesson's JSON and build it; anything wrong is one PlanError that names the step."""
    if not isinstance(d, dict):
        raise _bad(f"'{name}'", "a lesson file is a JSON object")
    if d.get("format") != LESSON_FORMAT:
        raise _bad(f"'{name}'", f"'format' must be \"{LESSON_FORMAT}\"")
    if d.get("version", 1) != 1:
        raise _bad(f"'{name}'", f"version {d.get('version')!r} is newer than this app reads (1)")
    unknown = sorted(set(d) - {"format", "version", "title", "summary", "model", "steps"})
    if unknown:
        raise _bad(f"'{name}'", f"unknown key(s) {', '.join(unknown)}")
    steps = d.get("steps")
    if not isinstance(steps, list) or not steps:
        raise _bad(f"'{name}'", "'steps' must be a non-empty list")
    if len(steps) > MAX_STEPS:
        raise _bad(f"'{name}'", f"{len(steps)} steps; at most {MAX_STEPS}")
    model = d.get("model", "digits-cnn")
    if not isinstance(model, str):
        raise _bad(f"'{name}'", "'model' must be a model spec such as digits-cnn")
    return Lesson(name=name, title=_text(d, "title", f"'{name}'"), summary=_text(d, "summary", f"'{name}'", False) or "",
                  model=model, steps=tuple(_step(s, i, name) for i, s in enumerate(steps)), path=path)


def lesson_names() -> list[str]:
    """The built-in lessons, in teaching order (their files are numbered: 01-magnitude.json ...)."""
    return [_name_of(p) for p in sorted(LESSON_DIR.glob("*.json"))]


def _name_of(path: Path) -> str:
    return re.sub(r"^\d+[-_]", "", path.stem)


def find_lesson(name_or_path: str) -> Path:
    """A built-in lesson by name (``magnitude``) or a lesson file by path."""
    p = Path(name_or_path)
    if p.suffix == ".json" and (p.exists() or p.parent != Path(".")):
        return p
    for f in sorted(LESSON_DIR.glob("*.json")):
        if _name_of(f) == name_or_path or f.stem == name_or_path:
            return f
    raise UnknownLessonError(f"There is no lesson '{name_or_path}'.",
                    f"Built-in lessons: {', '.join(lesson_names())}; or give the path of a lesson .json file.")


def load_lesson(name_or_path: str) -> Lesson:
    from ..safe_read import read_json

    path = find_lesson(name_or_path)
    d = read_json(path, "lesson", "A lesson is a JSON file like those in resources/lessons/.")
    return parse_lesson(d, _name_of(path), path)
