"""Setting up, measuring and drawing one lesson step on a session (the window, the CLI and the tests share this).

:func:`setup` puts the session in the step's state (model, kept weights, plan, selected layer) through its
public methods, so every change is an ordinary, undoable edit; :func:`render` fills the text's placeholders
from the session as it is now; :func:`measure` measures synchronously what a step shows (the window runs the
same work as jobs instead).
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import PlanError
from ..prune.plan import LayerPlan, Plan
from ..prune.recipe import recipe_to_plan
from . import values
from .lesson import Lesson, Step

if TYPE_CHECKING:
    from ..session import Session


def model_of(lesson: Lesson, step: Step) -> str:
    return step.model or lesson.model


def step_plan(session: Session, step: Step) -> Plan | None:
    """The plan a step asks for, checked against the loaded model (None: the step keeps the plan)."""
    if step.plan is None:
        return None
    if step.plan == "dense":
        return Plan()
    layers: dict[str, LayerPlan] = {}
    proto = step.plan.get("all")
    if proto is not None:
        lp = recipe_to_plan({"layers": {"_": proto}}).layers["_"]
        for n in session.layer_names:
            try:
                layers[n] = session.check_layer_plan(n, lp)
            except PlanError:
                pass   # a granularity that does not fit a layer leaves it dense, as "Set layers" does
    if step.plan.get("layers"):
        layers.update(recipe_to_plan({"layers": step.plan["layers"]}).layers)
    return session.linked_plan(Plan(layers).validated(session.layer_names))


def setup(session: Session, lesson: Lesson, step: Step, progress=None) -> None:
    """Put the session in the state the step describes. Only what the step names changes."""
    model = model_of(lesson, step)
    if not session.loaded_ok or session.model_spec != model:
        if progress:
            progress(f"loading {model}")
        session.load(model)
    if step.reset and (session.base_label != "loaded weights" or session.plan.active() or session.pending):
        session.reset()
    plan = step_plan(session, step)
    if plan is not None and plan != session.plan:
        session.set_plan(plan)
    if step.apply and session.pending:
        session.apply()
    if step.select:
        session.select(step.select)


@dataclass(frozen=True)
class Rendered:
    """A step's text with its numbers: ``parts`` alternate plain text and (name, value or None) pairs."""

    parts: tuple
    pending: tuple[str, ...]      # values not measured yet for the state on screen

    @property
    def text(self) -> str:
        return "".join(p if isinstance(p, str) else (p[1] if p[1] is not None else "…") for p in self.parts)

    def numbers(self) -> dict[str, str | None]:
        return {p[0]: p[1] for p in self.parts if not isinstance(p, str)}


def render(session: Session, step: Step) -> Rendered:
    parts: list = []
    pending: list[str] = []
    for literal, name, _, _ in string.Formatter().parse(step.text):
        if literal:
            parts.append(literal)
        if name:
            v = values.formatted(session, name)
            parts.append((name, v))
            if v is None and name not in pending:
                pending.append(name)
    return Rendered(tuple(parts), tuple(pending))


def missing_measures(session: Session, step: Step) -> list[str]:
    """The measurements the step shows that are not there (or stale) for the state on screen."""
    out = []
    m = session.measurements
    for kind in step.needs:
        if kind == "accuracy" and session.dataset.has_labels and \
                (m.dense is None or not session.is_fresh(m.current)):
            out.append(kind)
        elif kind == "sweep" and any(lp.criterion == "sparsegpt" for lp in session.plan.active().values()) and \
                not session.is_fresh(m.sweep):
            out.append(kind)
        elif kind == "owl" and step.allocation and not session.is_fresh(m.allocation):
            out.append(kind)
        elif kind == "blocks" and not session.is_fresh(m.blocks):
            out.append(kind)
        elif kind == "latency" and not session.is_fresh(m.latency):
            out.append(kind)
        elif kind == "scan" and m.scan is None and session.dataset.has_labels:
            out.append(kind)
        elif kind == "compression" and not session.is_fresh(m.compression):
            out.append(kind)
        elif kind == "speed" and getattr(m, "speed", None) is None:
            out.append(kind)
    return out


def measure(session: Session, step: Step, runs: int = 20, progress=None, cancel=None) -> list[str]:
    """Measure what the step shows and the session lacks, here and now (the CLI's and the tests' path; the window
    runs the same functions as jobs). Returns the kinds measured."""
    from ..flows.measure import evaluate_plan, measure_latency

    done: list[str] = []
    # what changes the state (the sweep, the allocation) comes first; what it made stale is measured after it
    while (todo := [k for k in missing_measures(session, step) if k not in done]):
        kind = todo[0]
        snap = session.snapshot()
        plan = snap.plan
        if kind == "accuracy":
            if not use_measured(session):
                cur, dense = evaluate_plan(snap, session.measurements.dense is None, progress, cancel)
                session.results.record_evaluation(plan, snap.base_id, cur, dense)
        elif kind == "sweep":
            from ..prune.sparsegpt import one_shot
            session.results.adopt_sweep(one_shot(snap, plan, progress=progress, cancel=cancel), plan)
        elif kind == "owl":
            uniform = step_plan(session, step)
            a, ev = allocate_step(snap, step, uniform, session.measurements.evaluation(snap.base_id, uniform) is None,
                                  progress, cancel)
            record_allocation(session, a, uniform, ev, snap.base_id)
        elif kind == "blocks":
            from ..analyse.depth import weakest_block
            session.results.record_blocks(weakest_block(snap, progress=progress, cancel=cancel), plan, snap.base_id)
        elif kind == "latency":
            lat = measure_latency(snap, step.latency_batch or 1, runs, progress=progress, cancel=cancel)
            session.results.record_latency(plan, snap.base_id, lat)
        elif kind == "scan":
            from ..analyse.sensitivity import ScanSpec, scan
            session.results.record_scan(scan(session, ScanSpec([0.5, 0.7, 0.9]), progress, cancel,
                                     state=session.masked_state(plan)))
        elif kind == "compression":
            session.results.adopt_compression(compress_now(session, plan, progress, cancel), plan)
        elif kind == "speed":
            from ..analyse.speed import lesson_speed_map
            session.measurements.record_speed(lesson_speed_map(session, step.latency_batch or 1, progress, cancel))
        done.append(kind)
    return done


def use_measured(session: Session) -> bool:
    """Record the test evaluation of the state on screen from one made earlier for the same kept weights and plan
    (Back / Next, the dense plan of a later step): nothing is evaluated twice. False when there is none."""
    m = session.measurements
    cur = m.evaluation(session.base_id, session.plan)
    if cur is None or m.dense is None:
        return False
    session.results.record_evaluation(session.plan, session.base_id, cur)
    return True


def allocate_step(snap, step: Step, uniform: Plan, evaluate_uniform: bool, progress=None, cancel=None):
    """The step's allocation (``"plan": {"allocation": "owl"}``) over the layers its uniform plan prunes, at their
    sparsity, granularity and criterion; and (``evaluate_uniform``) the uniform plan's test evaluation, for the
    comparison the step shows. Runs on a snapshot (the window: in a job)."""
    from ..analyse.owl import allocate
    from ..train.evaluate import evaluate

    active = uniform.active()
    if not active:
        raise PlanError("An allocation step needs 'plan.all' with a sparsity to allocate around.")
    proto = next(iter(active.values()))
    a = allocate(snap, step.allocation, proto.sparsity, list(active), proto.granularity.name, proto.criterion.name,
                 progress=progress, cancel=cancel)
    ev = evaluate(snap.job_model(snap.masked_state(uniform)), snap.dataset, "test", cancel=cancel) \
        if evaluate_uniform and snap.dataset.has_labels else None
    return a, ev


def record_allocation(session: Session, allocation, uniform: Plan, uniform_eval, base_id: int) -> None:
    """:func:`allocate_step`'s result on the session: the uniform plan's evaluation remembered, the allocation's
    plan set (undoable)."""
    if uniform_eval is not None:
        session.measurements.remember(base_id, uniform, uniform_eval)
    session.results.record_allocation(allocation, uniform, session.linked_plan(allocation.plan))


def compress_now(session: Session, plan: Plan, progress=None, cancel=None):
    """Deep Compression of the planned weights with the default bits and no training of the shared values."""
    from ..compress.accounting import state_bytes
    from ..compress.flow import compress_state
    from ..compress.quantize import QuantSettings
    from ..flows.compress import archive_meta

    state = session.masked_state(plan)
    dense = session.measurements.dense.accuracy if session.measurements.dense is not None else None
    return compress_state(session.model_copy(state), session.dataset, state, QuantSettings.build(session.layers),
                          archive_meta(session), None, {"dense": dense}, state_bytes(session.original_state()),
                          progress, cancel)
