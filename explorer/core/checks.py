"""Strict checks of values that come from files and flags: numbers that must be finite, integers that
must be whole (not 1.5, not ``true``), bounds, choices. Every failure is one clear PlanError."""
from __future__ import annotations

import dataclasses
import math

from .errors import PlanError


def number(v, what: str, lo: float | None = None, hi: float | None = None, integer: bool = False,
           lo_open: bool = False):
    """``v`` as an int/float within [lo, hi] (or (lo, hi] with ``lo_open``); bools and strings are refused."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise PlanError(f"{what} must be {'a whole number' if integer else 'a number'}, not {v!r}.")
    if integer and not (isinstance(v, int) or float(v).is_integer()):
        raise PlanError(f"{what} must be a whole number, not {v!r}.")
    if not math.isfinite(v):
        raise PlanError(f"{what} must be a finite number, not {v!r}.")
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
        rng = f"{'(' if lo_open else '['}{lo if lo is not None else '-∞'}, {hi if hi is not None else '∞'}]"
        raise PlanError(f"{what} is {v!r}, outside {rng}.")
    return int(v) if integer else v


def choice(v, what: str, options) -> str:
    if not isinstance(v, str) or v not in options:
        raise PlanError(f"{what} is {v!r}; use one of {', '.join(map(str, options))}.")
    return v


def dataclass_from_json(cls, d, what: str, limits: dict):
    """An instance of the dataclass ``cls`` from a JSON object (see :func:`checked_fields`)."""
    return cls(**checked_fields(cls, d, what, limits))


def checked_fields(cls, d, what: str, limits: dict) -> dict:
    """The keys of a JSON object meant for the dataclass ``cls``: unknown keys, wrong types and values outside
    ``limits`` ({field: (lo, hi) | (lo, hi, "open") | set of choices}) are refused."""
    if not isinstance(d, dict):
        raise PlanError(f"{what} must be a JSON object, not {type(d).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise PlanError(f"{what} has unknown key(s): {', '.join(unknown)}.")
    out = {}
    for k, v in d.items():
        kind = str(fields[k].type).replace(" ", "")
        label = f"{what}: '{k}'"
        if v is None and "None" in kind:
            out[k] = None
            continue
        lim = limits.get(k)
        if kind.startswith("bool"):
            if not isinstance(v, bool):
                raise PlanError(f"{label} must be true or false, not {v!r}.")
            out[k] = v
        elif kind.startswith("int") or kind.startswith("float"):
            lo, hi, *opt = lim if lim else (None, None)
            out[k] = number(v, label, lo, hi, integer=kind.startswith("int"), lo_open=bool(opt))
        elif kind.startswith("str"):
            out[k] = choice(v, label, lim) if lim else v
            if not isinstance(out[k], str):
                raise PlanError(f"{label} must be text, not {v!r}.")
        elif kind.startswith("tuple[float"):
            if not isinstance(v, list):
                raise PlanError(f"{label} must be a list of numbers, not {v!r}.")
            out[k] = tuple(number(x, label, *(lim or (None, None))) for x in v)
        else:
            out[k] = v
    return out
