"""The numbers a lesson may show: each is read from the session when the step is drawn, never written in the file.

A lesson's text names them in braces, ``{accuracy}``; :func:`values` returns every name with its text, or
``None`` while it is not measured for the state on screen (the window then shows "…" and measures it). Each
value says where it comes from in :data:`VALUES` (the lesson editor's reference, and the tests').
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..model.metrics import format_bytes, format_count

if TYPE_CHECKING:
    from ..session import Session


@dataclass(frozen=True)
class Value:
    name: str
    help: str
    read: Callable   # session -> number/str or None
    fmt: Callable = str
    needs: str | None = None   # the measurement that produces it: accuracy, latency, scan, compression, speed,
    #                            sweep, owl, blocks


def _pct(v) -> str:
    return f"{v:.1%}"


def _acc(v) -> str:
    return f"{v:.2f} %"


def _ratio(v) -> str:
    return f"{v:.2f}×"


def _ms(v) -> str:
    return f"{v:.3g} ms"


def _selected_plan(s):
    return s.plan.get(s.selected) if s.selected else None


def _selected_mask(s):
    lp = _selected_plan(s)
    return None if lp is None else s.layer_mask(s.selected, lp)


def _threshold(s):
    m, lp = _selected_mask(s), _selected_plan(s)
    if m is None or lp is None or lp.is_dense:
        return None
    t = m.threshold(lp.sparsity)
    return t


def _fresh(s, m):
    return m.value if s.is_fresh(m) else None


def _metric(s):
    """The dataset's quality metric: accuracy, or perplexity / mean squared error (lower is better)."""
    from ..train.metric import metric_of

    return metric_of(s.dataset)


def _current_acc(s):
    m = _fresh(s, s.measurements.current)
    return None if m is None else _metric(s).value(m)


def _dense_acc(s):
    return _metric(s).value(s.measurements.dense)


def _drop(s):
    a, d = _current_acc(s), _dense_acc(s)
    return None if a is None or d is None else _metric(s).drop(d, a)


def _lat(s, which):
    c = _fresh(s, s.measurements.latency)
    if c is None:
        return None
    part = getattr(c, which)
    return None if part is None else part.median_ms


def _speedup(s, which):
    d, x = _lat(s, "dense"), _lat(s, which)
    return None if d is None or x is None or x <= 0 else d / x


def _compact_mac_ratio(s):
    c = _fresh(s, s.measurements.latency)
    return None if c is None or not c.compact_macs else c.dense_macs / c.compact_macs


def _scan_extreme(s, most: bool):
    scan = s.measurements.scan
    if scan is None or not scan.layers:
        return None
    # the accuracy at the highest scanned sparsity: the lower it is, the more sensitive the layer
    m = _metric(s)
    rows = [(m.score(row["accuracy"][-1]), row["accuracy"][-1], row["name"]) for row in scan.layers
            if row.get("accuracy")]
    if not rows:
        return None
    _, acc, name = (min if most else max)(rows)
    value = f"{acc:.1f} %" if m.name == "accuracy" else f"{m.name} {m.format(acc)}"
    return f"{name} ({value} at {scan.sparsities[-1]:.0%})"


def _speed_layer(s):
    """The layer the lesson's speed map measured (analyse.speed.lesson_speed_map), or None."""
    m = s.measurements.speed
    return m.layers[0] if m is not None and m.layers else None


def _break_even(s):
    l = _speed_layer(s)
    k = l.kernel("csr") if l is not None else None
    if k is None:
        return None
    return f"above {k.break_even * 100:.0f} % sparsity" if k.break_even is not None else \
        f"at no sparsity up to {k.sparsities[-1] * 100:.0f} %"


def _csr_at(s, sparsity: float):
    l = _speed_layer(s)
    k = l.kernel("csr") if l is not None else None
    return None if k is None else k.speedup_at(sparsity)


def _dc(s, key):
    c = _fresh(s, s.measurements.compression)
    if c is None:
        return None
    st = c.stage("huffman")
    return st.get(_metric(s).name) if key == "accuracy" else st[key]


def _allocation(s):
    m = s.measurements.allocation
    return m.value if s.is_fresh(m) else None


def _alloc_extreme(s, densest: bool):
    """The allocation's densest (sparsest) unit -- a block, or a layer outside any -- with its sparsity."""
    a = _allocation(s)[0]
    per_unit = {u: a.sparsities[ms[0]] for u, ms in a.units.items()}
    u = (min if densest else max)(per_unit, key=lambda k: (per_unit[k], k))
    return f"{u} ({per_unit[u]:.1%})"


def _uniform_acc(s):
    a = _allocation(s)
    ev = None if a is None else s.measurements.evaluation(s.measurements.allocation.base_id, a[1])
    return None if ev is None else _metric(s).value(ev)


def _owl_change(s):
    """How the allocation's plan compares with the uniform one: "1.23 lower: better" or "0.28 higher: worse"."""
    a, u = _current_acc(s), _uniform_acc(s)
    if a is None or u is None:
        return None
    m = _metric(s)
    better = m.score(a) > m.score(u)
    return f"{m.format(abs(a - u))} {('lower' if a < u else 'higher')}: {'better' if better else 'worse'}" \
        if a != u else "the same"


def _swept(s):
    m = s.measurements.sweep
    return len(m.value.swept) if s.is_fresh(m) else None


def _blocks(s):
    m = s.measurements.blocks
    return m.value if s.is_fresh(m) else None


def _block(s, weakest: bool):
    b = _blocks(s)
    order = b.order()
    path = order[0] if weakest else order[-1]
    infl = next(x.influence for x in b.blocks if x.path == path)
    return f"{path} (influence {infl:.3f})"


def _weakest_skipped(s):
    b = _blocks(s)
    return next(x.metric_when_skipped for x in b.blocks if x.path == b.order()[0])


def _influences(s):
    b = _blocks(s)
    return ", ".join(f"{x.path} {x.influence:.3f}" for x in b.blocks if x.influence is not None)


VALUES: dict[str, Value] = {v.name: v for v in (
    Value("model", "the loaded model", lambda s: s.model_name),
    Value("layer", "the selected layer", lambda s: s.selected),
    Value("granularity", "the selected layer's granularity", lambda s: _selected_plan(s).granularity.name),
    Value("criterion", "the selected layer's criterion", lambda s: _selected_plan(s).criterion.name),
    Value("layer_sparsity", "the selected layer's planned sparsity", lambda s: _selected_plan(s).sparsity, _pct),
    Value("layer_pruned", "how many units (weights or groups) of the selected layer the plan prunes",
          lambda s: _selected_mask(s).units_for(_selected_plan(s).sparsity), lambda v: f"{v:,}"),
    Value("layer_units", "how many units the selected layer has at its granularity",
          lambda s: _selected_mask(s).units, lambda v: f"{v:,}"),
    Value("layer_nonzero", "nonzero weights left in the selected layer",
          lambda s: s.layer_counts(s.selected).nonzero, lambda v: f"{v:,}"),
    Value("layer_params", "weights of the selected layer", lambda s: s.layer(s.selected).params, lambda v: f"{v:,}"),
    Value("threshold", "the selected layer's threshold t (the score of the last pruned unit)", _threshold,
          lambda v: f"{v:.4g}"),
    Value("sparsity", "sparsity of all prunable weights under the plan", lambda s: s.totals().sparsity, _pct),
    Value("nonzero_params", "nonzero parameters of the whole model", lambda s: s.totals().nonzero_params,
          format_count),
    Value("params", "parameters of the whole model", lambda s: s.totals().params, format_count),
    Value("compression", "dense size / sparse size", lambda s: s.totals().compression_ratio, _ratio),
    Value("size_dense", "the dense model's size", lambda s: s.totals().dense_bytes, format_bytes),
    Value("size_sparse", "the pruned model's size in sparse formats", lambda s: s.totals().sparse_bytes, format_bytes),
    Value("mac_ratio", "dense MACs / MACs with a nonzero weight", lambda s: s.totals().mac_ratio, _ratio),
    Value("macs", "MACs with a nonzero weight", lambda s: s.totals().nonzero_macs, format_count),
    Value("accuracy", "test accuracy of the planned model (Evaluate)", _current_acc, _acc, "accuracy"),
    Value("dense_accuracy", "test accuracy of the dense model", _dense_acc, _acc, "accuracy"),
    Value("accuracy_drop", "dense minus planned test accuracy, in points", _drop, lambda v: f"{v:.2f}", "accuracy"),
    Value("latency_dense", "measured latency of the dense model", lambda s: _lat(s, "dense"), _ms, "latency"),
    Value("latency_masked", "measured latency of the masked model (zeros multiplied)", lambda s: _lat(s, "masked"),
          _ms, "latency"),
    Value("latency_compact", "measured latency of the compacted model (channels removed)",
          lambda s: _lat(s, "compact"), _ms, "latency"),
    Value("speedup_masked", "dense / masked latency", lambda s: _speedup(s, "masked"), _ratio, "latency"),
    Value("speedup_compact", "dense / compacted latency", lambda s: _speedup(s, "compact"), _ratio, "latency"),
    Value("compact_mac_ratio", "dense MACs / compacted MACs", _compact_mac_ratio, _ratio, "latency"),
    Value("most_sensitive", "the layer whose accuracy falls most in the sensitivity scan",
          lambda s: _scan_extreme(s, True), str, "scan"),
    Value("least_sensitive", "the layer whose accuracy falls least in the sensitivity scan",
          lambda s: _scan_extreme(s, False), str, "scan"),
    Value("speed_layer", "the layer the speed map measured (the largest with a sparse kernel)",
          lambda s: f"{_speed_layer(s).name} ({'×'.join(map(str, _speed_layer(s).shape))})", str, "speed"),
    Value("speed_batch", "the batch of the speed map", lambda s: s.measurements.speed.batch, str, "speed"),
    Value("sparse_break_even", "where the CSR kernel runs that layer faster than dense here ('above 95 % sparsity')",
          _break_even, str, "speed"),
    Value("csr_speedup_90", "CSR speedup over dense of that layer at 90 % sparsity", lambda s: _csr_at(s, 0.9), _ratio,
          "speed"),
    Value("csr_speedup_99", "CSR speedup over dense of that layer at 99 % sparsity", lambda s: _csr_at(s, 0.99),
          _ratio, "speed"),
    Value("swept_layers", "how many layers SparseGPT's sweep pruned and updated (the plan's sparsegpt layers)",
          _swept, str, "sweep"),
    Value("uniform_accuracy", "test accuracy (perplexity) of the uniform plan the allocation replaced",
          _uniform_acc, _acc, "owl"),
    Value("owl_change", "the allocation's metric against the uniform plan's ('0.28 higher: worse')", _owl_change,
          str, "owl"),
    Value("owl_densest", "the block (or layer) the allocation prunes least, with its sparsity",
          lambda s: _alloc_extreme(s, True), str, "owl"),
    Value("owl_sparsest", "the block (or layer) the allocation prunes most, with its sparsity",
          lambda s: _alloc_extreme(s, False), str, "owl"),
    Value("block_influences", "every block's influence (1 - mean cosine of its input and output)", _influences, str,
          "blocks"),
    Value("weakest_block", "the block with the lowest influence: the first to drop", lambda s: _block(s, True), str,
          "blocks"),
    Value("strongest_block", "the block with the highest influence", lambda s: _block(s, False), str, "blocks"),
    Value("weakest_block_skipped", "test accuracy (perplexity) with the weakest block skipped", _weakest_skipped,
          _acc, "blocks"),
    Value("dc_ratio", "Deep Compression: dense size / Huffman-coded size", lambda s: _dc(s, "ratio"), _ratio,
          "compression"),
    Value("dc_accuracy", "Deep Compression: test accuracy after weight sharing and coding",
          lambda s: _dc(s, "accuracy"), _acc, "compression"),
)}


def read(session: Session, name: str):
    """The raw value of ``name`` for the session's state now (None: not measured for it, or not defined)."""
    try:
        return VALUES[name].read(session)
    except (AttributeError, TypeError, KeyError, ZeroDivisionError, ValueError, IndexError, StopIteration):
        return None


def formatted(session: Session, name: str) -> str | None:
    v = read(session, name)
    if v is not None and VALUES[name].fmt is _acc and _metric(session).name != "accuracy":
        return _metric(session).format(v)        # a perplexity or mean squared error: no percent sign
    return None if v is None else VALUES[name].fmt(v)
