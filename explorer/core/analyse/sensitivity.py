"""Layer-wise sensitivity scans: accuracy when one layer (or channel group) alone is pruned.

The result equals the naive loop -- for each layer and sparsity: prune only
that layer, evaluate the whole model on the whole split, restore -- but
is computed faster:

- one full forward caches every intermediate value of the split (torch.fx);
- for a layer, only the nodes downstream of it are recomputed (the
  "suffix"); values from outside the suffix (skip connections) come from the
  cache;
- the sparsities of a layer run as one batch: the pruned layer runs once per
  sparsity on its cached input, the rest of the suffix runs once on all of
  them stacked along the batch dimension;
- masks come from the engine's cached rankings (no re-sorting per point).

Models that torch.fx cannot trace, or whose suffix replay does not reproduce
the full forward, fall back to the naive loop (same numbers, slower). With
``channel`` granularity a layer's scan prunes its whole dependency group.
An optional early stop marks skipped points as not measured (None).
"""
from __future__ import annotations

import copy
import csv as csv_mod
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ExplorerError, PlanError
from ..train.evaluate import evaluate, logits_of
from ..prune.granularity import Channel, get_granularity
from ..jobs import CancelToken, Progress, ProgressFn
from ..prune.recipe import LayerPlan

DEFAULT_SPARSITIES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CACHE_BUDGET_BYTES = 3 * 2**30     # cached activations of the whole split must fit in this
VARIANT_PASS_BYTES = 4 * 2**20     # stack sparsities while the largest activation of a pass stays below this


def parse_sparsities(text) -> list[float]:
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [t for t in str(text).replace(" ", "").split(",") if t]
    if not items:
        raise PlanError("The sparsity list is empty.", "Give values in (0,1), e.g. 0.4,0.5,0.6,0.7,0.8,0.9.")
    out = []
    for t in items:
        try:
            v = float(t)
        except (TypeError, ValueError):
            raise PlanError(f"'{t}' in the sparsity list is not a number.") from None
        if math.isnan(v) or not 0.0 < v < 1.0:
            raise PlanError(f"Sparsity {t} is outside (0, 1).", "A scan probes sparsities strictly between 0 and 1.")
        out.append(v)
    if len(set(out)) != len(out):
        raise PlanError("The sparsity list has duplicates.")
    return sorted(out)


@dataclass
class ScanSpec:
    sparsities: list[float]
    granularity: str = "element"
    criterion: str = "l1"
    layers: list[str] | None = None
    split: str = "test"
    early_stop: float | None = None     # accuracy floor (percent); None = off
    latency: bool = False
    latency_runs: int = 10
    latency_batch: int = 1


@dataclass
class ScanPoint:
    layer: str
    index: int
    sparsity: float
    accuracy: float | None
    latency_ms: float | None = None


@dataclass
class ScanResult:
    model: str
    dataset: str
    granularity: str
    criterion: str
    split: str
    dense_accuracy: float
    sparsities: list[float]
    layers: list[dict] = field(default_factory=list)
    method: str = "fast"
    seconds: float = 0.0
    early_stop: float | None = None
    dense_latency_ms: float | None = None
    samples: int = 0
    skipped: dict = field(default_factory=dict)   # layer -> why it was not scanned

    def to_json(self) -> dict:
        return {"model": self.model, "dataset": self.dataset, "granularity": self.granularity,
                "criterion": self.criterion, "dense_accuracy": self.dense_accuracy, "sparsities": self.sparsities,
                "layers": self.layers, "split": self.split, "samples": self.samples, "method": self.method,
                "seconds": self.seconds, "early_stop": self.early_stop, "dense_latency_ms": self.dense_latency_ms,
                "skipped": self.skipped}

    @classmethod
    def from_json(cls, d: dict) -> "ScanResult":
        """Validate a scan loaded from JSON; sparsities are sorted (with their columns)."""
        hint = "Use a JSON written by `pruning-explorer sensitivity` or the window's scan."

        def bad(why: str) -> PlanError:
            return PlanError(f"Not a valid sensitivity scan: {why}.", hint)

        if not isinstance(d, dict):
            raise bad("the file does not hold a JSON object")
        try:
            sparsities = [float(x) for x in d["sparsities"]]
            dense = float(d["dense_accuracy"])
            model, dataset = str(d["model"]), str(d["dataset"])
            layers = d["layers"]
        except KeyError as e:
            raise bad(f"missing entry {e}") from None
        except (TypeError, ValueError) as e:
            raise bad(str(e)) from None
        try:
            parse_sparsities(sparsities)
        except PlanError as e:
            raise bad(e.message.rstrip(".")) from None
        if not isinstance(layers, list):
            raise bad("'layers' must be a list")
        order = sorted(range(len(sparsities)), key=sparsities.__getitem__)
        clean = []
        for l in layers:
            if not isinstance(l, dict) or "name" not in l:
                raise bad(f"layer entry {l!r:.60} is not an object with a name")
            accs = l.get("accuracy")
            if not isinstance(accs, list) or len(accs) != len(sparsities):
                raise bad(f"layer {l['name']} does not have one accuracy per sparsity")
            if any(a is not None and (isinstance(a, bool) or not isinstance(a, (int, float)) or math.isnan(a))
                   for a in accs):
                raise bad(f"layer {l['name']} has accuracies that are not numbers (or null for 'not measured')")
            entry = dict(l, accuracy=[None if accs[i] is None else float(accs[i]) for i in order])
            lat = l.get("latency_ms")
            if isinstance(lat, list) and len(lat) == len(sparsities):
                entry["latency_ms"] = [lat[i] for i in order]
            clean.append(entry)
        return cls(model=model, dataset=dataset, granularity=str(d.get("granularity", "element")),
                   criterion=str(d.get("criterion", "l1")), split=str(d.get("split", "test")),
                   dense_accuracy=dense, sparsities=[sparsities[i] for i in order], layers=clean,
                   method=str(d.get("method", "fast")), seconds=float(d.get("seconds") or 0.0),
                   early_stop=d.get("early_stop"), dense_latency_ms=d.get("dense_latency_ms"),
                   samples=int(d.get("samples") or 0), skipped=dict(d.get("skipped") or {}))

    def layer(self, name: str) -> dict:
        for l in self.layers:
            if l["name"] == name:
                return l
        raise KeyError(name)


# ---------------------------------------------------------------- suffix replay with torch.fx

class _Replayer:
    """Caches every node value of one forward pass; replays the part downstream of changed modules."""

    def __init__(self, module: nn.Module, x: torch.Tensor):
        import torch.fx as fx

        # channels-last (NHWC) runs oneDNN's convolutions faster on CPU; same math, float-rounding-level
        # differences only (the scan checks its replay against the full forward before trusting it)
        self.channels_last = x.dim() == 4 and any(isinstance(m, nn.Conv2d) for m in module.modules())
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.gm = fx.symbolic_trace(module)
        self.N = x.shape[0]
        self.env: dict = {}
        self.nodes = list(self.gm.graph.nodes)
        self.order = {n: i for i, n in enumerate(self.nodes)}
        self.modules = dict(self.gm.named_modules())
        interp = fx.Interpreter(self.gm)
        env = self.env

        orig_run_node = interp.run_node

        def run_node(n):
            v = orig_run_node(n)
            env[n] = v
            return v
        interp.run_node = run_node
        with torch.inference_mode():
            self.output = logits_of(interp.run(x))
        self.out_node = next(n for n in self.nodes if n.op == "output")
        self.calls: dict[str, list] = {}
        for n in self.nodes:
            if n.op == "call_module":
                self.calls.setdefault(str(n.target), []).append(n)
        self.fused = self._fuse_conv_bn()

    def _fuse_conv_bn(self) -> dict:
        """BatchNorm folded into the conv before it, for replaying layers that do not change:
        {bn node: (conv node, fused conv)}. Saves one pass over every such activation."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        out = {}
        for n in self.nodes:
            if n.op != "call_module" or not isinstance(self.modules[str(n.target)], nn.BatchNorm2d):
                continue
            c = n.args[0] if n.args else None
            if not (hasattr(c, "op") and c.op == "call_module" and len(c.users) == 1 and len(n.args) == 1
                    and type(self.modules[str(c.target)]) is nn.Conv2d and not n.kwargs
                    and self.modules[str(n.target)].track_running_stats):
                continue
            try:
                fused = fuse_conv_bn_eval(self.modules[str(c.target)], self.modules[str(n.target)])
            except Exception:
                continue
            if self.channels_last:
                fused = fused.to(memory_format=torch.channels_last)
            out[n] = (c, fused)
        return out

    def variants_per_pass(self, k: int) -> int:
        """How many sparsities to stack in one suffix pass: enough to amortise per-op overhead, few enough
        that the largest activation stays cache-sized (bigger stacks run slower per sample on CPU)."""
        biggest = max((v.numel() * v.element_size() for v in self.env.values()
                       if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == self.N), default=1)
        return int(max(1, min(k, VARIANT_PASS_BYTES // max(1, biggest))))

    def cached_bytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.env.values() if isinstance(v, torch.Tensor))

    def suffix(self, module_names: set[str]) -> list:
        start = [n for name in module_names for n in self.calls.get(name, [])]
        seen = set(start)
        for n in sorted(start, key=self.order.get):
            pass
        todo = list(start)
        while todo:
            n = todo.pop()
            for u in n.users:
                if u not in seen:
                    seen.add(u)
                    todo.append(u)
        return sorted(seen, key=self.order.get)

    def _batched(self, v, K: int):
        if K > 1 and isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == self.N:
            return v.repeat(K, *([1] * (v.dim() - 1)))
        return v

    def _inplace(self, n) -> bool:
        """Does this node write into its first argument (ReLU(inplace=True), x += y, x.relu_())?"""
        import operator
        if n.op == "call_module":
            return bool(getattr(self.modules[str(n.target)], "inplace", False))
        if n.op == "call_function":
            return n.target in (operator.iadd, operator.isub, operator.imul, operator.itruediv) or \
                bool(n.kwargs.get("inplace", False))
        if n.op == "call_method":
            return str(n.target).endswith("_")
        return False

    def _stackable(self, mod, args, kwargs, variants, name: str) -> bool:
        """One call can compute every variant of this layer: a plain conv/linear on a shared input."""
        if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor) or args[0].shape[0] != self.N:
            return False
        if isinstance(mod, nn.Conv2d):
            if mod.groups != 1 or mod.padding_mode != "zeros":
                return False
        elif not isinstance(mod, nn.Linear):
            return False
        keys = {k for v in variants for k in v if k.startswith(name + ".")}
        return keys <= {f"{name}.weight", f"{name}.bias"}

    def _stacked(self, mod, x, variants, name: str) -> torch.Tensor:
        """All K variants of a conv/linear in one call (weights stacked along output channels; the input is
        read and unfolded once), rearranged to the K*N batch layout of the rest of the suffix."""
        import torch.nn.functional as F

        K = len(variants)
        ws = [v.get(f"{name}.weight", mod.weight) for v in variants]
        bs = [v.get(f"{name}.bias", mod.bias) for v in variants] if mod.bias is not None else None
        w = torch.cat(ws, 0)
        b = torch.cat(bs, 0) if bs is not None else None
        if isinstance(mod, nn.Linear):
            y = F.linear(x, w, b)                                   # N x (K*out)
            out = y.shape[-1] // K
            return y.reshape(x.shape[0], K, out).transpose(0, 1).reshape(K * x.shape[0], out)
        if self.channels_last:
            w = w.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, w, b, mod.stride, mod.padding, mod.dilation, 1)   # N x (K*C) x H x W
        N, KC, H, W = y.shape
        C = KC // K
        y = y.reshape(N, K, C, H, W).transpose(0, 1).reshape(K * N, C, H, W)
        return y.contiguous(memory_format=torch.channels_last) if self.channels_last else y

    def run_variants(self, changed: set[str], variants: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Logits (K*N, C) with parameter ``variants[k]`` (param name -> tensor) for variant k."""
        import torch.fx as fx

        K = len(variants)
        nodes = self.suffix(changed)
        in_suffix = set(nodes)
        position = {n: i for i, n in enumerate(nodes)}
        last_use = {}
        for i, n in enumerate(nodes):
            for a in n.all_input_nodes:
                if a in in_suffix:
                    last_use[a] = i
        expanded: dict = {}
        params = dict(self.gm.named_parameters())

        def arg(a):
            if isinstance(a, fx.Node):
                if a in expanded:
                    return expanded[a]
                return self._batched(self.env[a], K)
            return a

        # conv -> bn pairs outside the changed modules run as one folded conv
        folded = {c: bn for bn, (c, _) in self.fused.items()
                  if bn in in_suffix and c in in_suffix and str(c.target) not in changed
                  and str(bn.target) not in changed}
        with torch.inference_mode():
            for i, n in enumerate(nodes):
                if n.op == "output":
                    break
                if n in folded:
                    bn = folded[n]
                    expanded[bn] = self.fused[bn][1](arg(n.args[0]))
                    continue
                if n in expanded:          # a bn already computed by its folded conv
                    continue
                if n.op == "call_module" and str(n.target) in changed and K > 1 and n.args and \
                        isinstance(n.args[0], fx.Node) and n.args[0] not in expanded:
                    raw = (self.env[n.args[0]], *n.args[1:])      # one shared input: stack the variants
                    if self._stackable(self.modules[str(n.target)], raw, n.kwargs, variants, str(n.target)):
                        expanded[n] = self._stacked(self.modules[str(n.target)], raw[0], variants, str(n.target))
                        continue
                args = fx.node.map_aggregate(n.args, arg)
                kwargs = fx.node.map_aggregate(n.kwargs, arg)
                if K == 1 and self._inplace(n) and n.args and isinstance(n.args[0], fx.Node) \
                        and n.args[0] not in expanded and isinstance(args[0], torch.Tensor):
                    args = (args[0].clone(), *args[1:])     # never write into the cache
                if n.op == "call_module" and str(n.target) in changed:
                    mod = self.modules[str(n.target)]
                    prefix = str(n.target) + "."
                    outs = []
                    x_in = args[0]
                    chunks = x_in.chunk(K, 0) if K > 1 and x_in.shape[0] == K * self.N else [x_in] * K
                    for k in range(K):
                        saved = {}
                        for pname, t in variants[k].items():
                            if pname.startswith(prefix) and pname in params:
                                saved[pname] = params[pname].data
                                if self.channels_last and t.dim() == 4:
                                    t = t.contiguous(memory_format=torch.channels_last)
                                params[pname].data = t
                        try:
                            outs.append(mod(chunks[k], *args[1:], **kwargs))
                        finally:
                            for pname, t in saved.items():
                                params[pname].data = t
                    expanded[n] = outs[0] if K == 1 else torch.cat(outs, 0)
                elif n.op == "call_module":
                    expanded[n] = self.modules[str(n.target)](*args, **kwargs)
                elif n.op == "call_function":
                    expanded[n] = n.target(*args, **kwargs)
                elif n.op == "call_method":
                    expanded[n] = getattr(args[0], n.target)(*args[1:], **kwargs)
                else:
                    expanded[n] = self.env[n]
                for a in n.all_input_nodes:          # free what no later node needs
                    if a in expanded and last_use.get(a, -1) <= i and a is not n:
                        del expanded[a]
            out_arg = self.out_node.args[0]
            out = fx.node.map_aggregate(out_arg, arg)
        del position
        return logits_of(out)


def _variant_params(session, names: tuple[str, ...], lp: LayerPlan, sparsity: float) -> dict[str, torch.Tensor]:
    """Masked tensors of the layers in ``names`` (and their BN/bias entries for channels) at ``sparsity``."""
    out = {}
    base = session.base_state()
    for n in names:
        view = session.layer_mask(n, lp)
        w = base[f"{n}.weight"]
        out[f"{n}.weight"] = torch.where(view.element_mask(sparsity), w, torch.zeros((), dtype=w.dtype))
        if isinstance(view.granularity, Channel) and view.group is not None and n == names[0]:
            keep = view.ranking.keep(view.units_for(sparsity))
            for pname, idx in view.group.aux:
                t = base[pname].clone()
                m = torch.ones(t.shape[0], dtype=torch.bool)
                m[torch.as_tensor(idx)] = keep
                t[~m] = 0
                out[pname] = t
    return out


def _scan_units(session, spec: ScanSpec) -> list[tuple[str, tuple[str, ...]]]:
    """(row name, layers pruned together) per scanned layer; channel scans prune the whole group."""
    explicit = bool(spec.layers)
    names = spec.layers or session.layer_names
    for n in names:
        session.layer(n)
    gran = get_granularity(spec.granularity)
    units, skipped = [], {}
    for n in names:
        lp = LayerPlan(0.5, gran.name, spec.criterion)
        try:
            session.check_layer_plan(n, lp)
        except PlanError as e:
            if explicit:
                raise
            skipped[n] = e.message
            continue
        members = session.linked_layers(n) if isinstance(gran, Channel) else (n,)
        units.append((n, tuple(members)))
    if not units:
        raise PlanError(f"No layer can be scanned with '{gran.name}' granularity.",
                        "; ".join(list(skipped.values())[:2]))
    return units, skipped


def _dataset_tensors(ds, split: str):
    xs, ys = [], []
    for x, y in ds.batches(split, batch_size=1024):
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ExplorerError(f"The {split} split of {ds.spec} is empty: nothing to scan.")
    return torch.cat(xs), (torch.cat(ys) if ys[0] is not None else None)


def _accuracy(logits: torch.Tensor, y: torch.Tensor, num_classes: int | None) -> float:
    if num_classes and logits.shape[1] > num_classes:
        logits = logits[:, :num_classes]
    return 100.0 * float((logits.argmax(1) == y).sum()) / y.shape[0]


def scan(session, spec: ScanSpec, progress: ProgressFn | None = None, cancel: CancelToken | None = None,
         naive: bool = False, state: dict[str, torch.Tensor] | None = None) -> ScanResult:
    """Run a sensitivity scan on the session's current (applied) weights -- or on ``state``, e.g. the
    masked state of a plan not applied yet. Emits a Progress per point with ``data`` = :class:`ScanPoint`."""
    progress = progress or (lambda p: None)
    ds = session.dataset
    if not ds.has_labels:
        raise ExplorerError(f"A sensitivity scan measures accuracy, which needs labels; {ds.spec} has none.",
                            "Choose a labelled dataset.")
    sparsities = parse_sparsities(spec.sparsities)
    units, skipped = _scan_units(session, spec)
    t0 = time.perf_counter()
    with session.lock:   # the applied model, copied: the scan swaps weights in and out, never on the live model
        module = copy.deepcopy(session.module)
    if state is not None:
        module.load_state_dict(state)
    module.eval()
    lp_for = LayerPlan(0.0, get_granularity(spec.granularity).name, spec.criterion)
    x, y = _dataset_tensors(ds, spec.split)
    total = len(units) * len(sparsities)
    done = 0

    replayer = None
    method = "naive"
    if not naive:
        try:
            replayer = _Replayer(module, x)
            dense_acc = _accuracy(replayer.output, y, ds.num_classes)
            method = "fast"
            if replayer.cached_bytes() > CACHE_BUDGET_BYTES:
                replayer, method = None, "naive"
        except Exception:
            replayer, method = None, "naive"
    if replayer is None:
        dense_acc = evaluate(module, ds, spec.split, cancel=cancel).accuracy
    else:
        # check that replaying reproduces the full forward (dense weights as the only variant)
        first = units[0][1]
        current = dict(module.named_parameters())
        dense_variant = {f"{n}.weight": current[f"{n}.weight"].detach() for n in first}
        try:
            again = replayer.run_variants(set(first), [dense_variant])
            ok = again.shape == replayer.output.shape and torch.allclose(again, replayer.output, rtol=1e-4, atol=1e-5)
        except Exception:
            ok = False
        if not ok:
            replayer, method = None, "naive"
            dense_acc = evaluate(module, ds, spec.split, cancel=cancel).accuracy

    dense_latency = None
    example = None
    if spec.latency:
        from .latency import latency_input, measure_latency
        if not get_granularity(spec.granularity).structured:
            raise PlanError("Latency sensitivity needs a structured granularity (channel): unstructured zeros do not "
                            "change dense latency.")
        example = latency_input(ds, session.require().input_shape, spec.latency_batch)
        dense_latency = measure_latency(module, example, runs=spec.latency_runs, cancel=cancel).median_ms

    result = ScanResult(model=session.model_spec, dataset=ds.spec, granularity=lp_for.granularity,
                        criterion=spec.criterion, split=spec.split, dense_accuracy=dense_acc,
                        sparsities=sparsities, method=method, early_stop=spec.early_stop,
                        dense_latency_ms=dense_latency, samples=int(x.shape[0]), skipped=skipped)
    base = session.base_state()
    params_by_name = dict(module.named_parameters())
    by_group: dict[tuple, dict] = {}
    for row, members in units:
        if len(members) > 1 and members in by_group:   # a linked layer: same group, same curve
            prev = by_group[members]
            entry = {**prev, "name": row, "params": session.layer(row).params}
            result.layers.append(entry)
            for i, s in enumerate(sparsities):
                done += 1
                progress(Progress(done / total, f"{row}: same channel group as {prev['name']}",
                                  ScanPoint(row, i, s, prev["accuracy"][i], (prev.get("latency_ms") or [None] * len(sparsities))[i])))
            continue
        accs: list[float | None] = [None] * len(sparsities)
        lats: list[float | None] = [None] * len(sparsities)
        stop = False
        per_pass = 1 if spec.early_stop is not None or replayer is None else replayer.variants_per_pass(len(sparsities))
        for i0 in range(0, len(sparsities), per_pass):
            if cancel is not None:
                cancel.check()
            idx = list(range(i0, min(i0 + per_pass, len(sparsities))))
            if stop:
                for i in idx:
                    done += 1
                    progress(Progress(done / total, f"{row}: skipped {sparsities[i]:.0%} (early stop)",
                                      ScanPoint(row, i, sparsities[i], None)))
                continue
            variants = [_variant_params(session, members, lp_for, sparsities[i]) for i in idx]
            if replayer is not None:
                changed = {k.rsplit(".", 1)[0] for v in variants for k in v}
                logits = replayer.run_variants(changed, variants)
                for j, i in enumerate(idx):
                    accs[i] = _accuracy(logits[j * x.shape[0]:(j + 1) * x.shape[0]], y, ds.num_classes)
            else:
                for j, i in enumerate(idx):
                    saved = {}
                    with torch.no_grad():
                        for pname, t in variants[j].items():
                            saved[pname] = params_by_name[pname].data
                            params_by_name[pname].data = t
                    try:
                        accs[i] = evaluate(module, ds, spec.split, cancel=cancel).accuracy
                    finally:
                        for pname, t in saved.items():
                            params_by_name[pname].data = t
            if spec.latency:
                for j, i in enumerate(idx):
                    lats[i] = _latency_point(session, members, lp_for, sparsities[i], variants[j], example, spec,
                                             cancel)
            for i in idx:
                done += 1
                progress(Progress(done / total, f"{row}: {sparsities[i]:.0%} -> {accs[i]:.2f}%",
                                  ScanPoint(row, i, sparsities[i], accs[i], lats[i])))
                if spec.early_stop is not None and accs[i] is not None and accs[i] < spec.early_stop:
                    stop = True
        entry = {"name": row, "params": session.layer(row).params, "accuracy": accs}
        if len(members) > 1:
            entry["group"] = list(members)
        if spec.latency:
            entry["latency_ms"] = lats
        result.layers.append(entry)
        by_group[members] = entry
    result.seconds = time.perf_counter() - t0
    del base
    return result


def _latency_point(session, members, lp, sparsity, variant, example, spec, cancel) -> float:
    from ..deploy.compact import compact_model
    from .latency import measure_latency

    view = session.layer_mask(members[0], lp)
    keep = view.ranking.keep(view.units_for(sparsity))
    own = view.group.member_index[members[0]] if view.group is not None else tuple(range(keep.numel()))
    removals = {members[0]: [int(own[c]) for c in torch.nonzero(~keep).flatten().tolist()]}
    state = dict(session.module.state_dict())
    state.update(variant)
    m = compact_model(session.module, state, removals if removals[members[0]] else {}, example, cancel=cancel)
    return measure_latency(m, example, runs=spec.latency_runs, cancel=cancel).median_ms


# ---------------------------------------------------------------- files

def write_csv(result: ScanResult, path: Path) -> Path:
    from ..deploy.export import _atomic_write

    def w(tmp):
        with open(tmp, "w", newline="") as f:
            wr = csv_mod.writer(f)
            wr.writerow(["layer", "params"] + [f"{s:g}" for s in result.sparsities])
            wr.writerow(["(dense)", ""] + [f"{result.dense_accuracy:.4f}"] * len(result.sparsities))
            for l in result.layers:
                wr.writerow([l["name"], l["params"]] + ["" if a is None else f"{a:.4f}" for a in l["accuracy"]])
    return _atomic_write(Path(path), w)


def read_scan(path: str | Path) -> ScanResult:
    from ..deploy.export import read_json

    return ScanResult.from_json(read_json(path, "sensitivity scan",
                                          "Use a JSON written by `pruning-explorer sensitivity` or the window's scan."))


def run_scan_to_files(session, sparsities, granularity, criterion, layers, out: Path, csv=None, split="test",
                      early_stop=None, latency=False, naive=False, progress=None, cancel=None) -> dict:
    from ..deploy.export import atomic_write_json

    spec = ScanSpec(sparsities=parse_sparsities(sparsities), granularity=granularity, criterion=criterion,
                    layers=layers, split=split, early_stop=early_stop, latency=latency)
    result = scan(session, spec, progress, cancel, naive=naive)
    d = result.to_json()
    atomic_write_json(Path(out), d)
    if csv:
        write_csv(result, Path(csv))
    return d
