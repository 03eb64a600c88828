"""Suffix replay with torch.fx: one forward caches every node's value; replaying after a layer changes
recomputes only the nodes downstream of it, with K weight variants of that layer stacked along the batch.

This is what makes a sensitivity scan fast (see sensitivity.py); it reproduces the full forward, which the
scan checks before trusting it.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

from ..model.layers import logits_of

VARIANT_PASS_BYTES = 4 * 2**20     # stack sparsities while the largest activation of a pass stays below this


def fx_map(v, fn):
    """``fn`` applied to every tensor in ``v`` (a tensor, or tuples/lists/dicts of them)."""
    if isinstance(v, (tuple, list)):
        return type(v)(fx_map(a, fn) for a in v) if not hasattr(v, "_fields") else type(v)(*(fx_map(a, fn) for a in v))
    if isinstance(v, dict):
        return {k: fx_map(a, fn) for k, a in v.items()}
    return fn(v)


_TRACES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()    # model -> (structure, its traced graph)


def traced(module: nn.Module, key=None):
    """``torch.fx.symbolic_trace(module)``; with ``key`` (the model ``module`` is a deep copy of) the graph of an
    earlier copy with the same structure (every submodule's name, type and settings) is reused: tracing a small
    network costs more than the rest of building its replayer."""
    import torch.fx as fx

    if key is None:
        return fx.symbolic_trace(module)
    structure = tuple((n, type(m), m.extra_repr()) for n, m in module.named_modules())
    hit = _TRACES.get(key)
    if hit is not None and hit[0] == structure:
        try:
            graph = fx.Graph()
            graph.output(graph.graph_copy(hit[1], {}))
            return fx.GraphModule(module, graph)
        except Exception:            # e.g. a constant the first trace kept on its own module: trace again
            pass
    gm = fx.symbolic_trace(module)
    try:
        _TRACES[key] = (structure, gm.graph)
    except TypeError:                # a key that cannot be weakly referenced: no reuse
        pass
    return gm


class Replayer:
    """Caches every node value of one forward pass; replays the part downstream of changed modules."""

    def __init__(self, module: nn.Module, x: torch.Tensor, dtype: torch.dtype | None = None, key=None):
        """``dtype`` (e.g. bfloat16): replay in that precision -- the traced module, its folded conv+BN pairs
        (folded in the module's own precision first) and ``x`` are converted, the module is not (the caller
        passes a copy it may spare: tracing shares its submodules). Variants are then given in ``dtype``.
        ``key``: the model ``module`` is a copy of; its trace is kept (``traced``) for the next copy."""
        import torch.fx as fx

        # channels-last (NHWC) runs oneDNN's convolutions faster on CPU; same math, float-rounding-level
        # differences only (the scan checks its replay against the full forward before trusting it)
        self.channels_last = x.dim() == 4 and any(isinstance(m, nn.Conv2d) for m in module.modules())
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        self.gm = traced(module, key)
        self.dtype = dtype
        self.N = x.shape[0]
        self.env: dict = {}
        self.nodes = list(self.gm.graph.nodes)
        self.order = {n: i for i, n in enumerate(self.nodes)}
        self.modules = dict(self.gm.named_modules())
        self.fused = self._fuse_conv_bn()
        if dtype is not None:
            self.gm.to(dtype)
            for bn, (c, f) in self.fused.items():
                self.fused[bn] = (c, f.to(dtype))
            x = x.to(dtype)
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
        self._plans: dict = {}
        self.calls: dict[str, list] = {}
        for n in self.nodes:
            if n.op == "call_module":
                self.calls.setdefault(str(n.target), []).append(n)

    def subset(self, idx) -> "Replayer":
        """The same replayer for the samples ``idx`` only (an index tensor: copies; a slice: views): every cached
        value that depends on the input, cut (no new trace, no new forward). The sequential scan uses them."""
        import copy

        r = copy.copy(self)
        r.N = int(idx.shape[0]) if isinstance(idx, torch.Tensor) else len(range(*idx.indices(self.N)))
        batched = self._batched_nodes()

        def cut(v):
            if not (isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == self.N):
                return v
            v = v[idx]
            return v.contiguous(memory_format=torch.channels_last) if self.channels_last and v.dim() == 4 and \
                isinstance(idx, torch.Tensor) else v
        r.env = {n: (fx_map(v, cut) if n in batched else v) for n, v in self.env.items()}
        r.output = self.output[idx]
        return r

    def _batched_nodes(self) -> set:
        """The nodes whose values depend on the input."""
        batched = {n for n in self.nodes if n.op == "placeholder"}
        for n in self.nodes:
            if n.op != "placeholder" and any(a in batched for a in n.all_input_nodes):
                batched.add(n)
        return batched

    def sliceable(self) -> bool:
        """Can :meth:`subset` cut this cache? Only when every value that depends on the input is a tensor (or a
        tuple/list/dict of them) with the samples along dim 0 -- not, e.g., ``x.size(0)`` kept for a later
        ``view`` or a transposed batch."""
        def ok(v) -> bool:
            if isinstance(v, (tuple, list)):
                return all(ok(a) for a in v)
            if isinstance(v, dict):
                return all(ok(a) for a in v.values())
            return isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == self.N
        return all(ok(self.env[n]) for n in self._batched_nodes() if n in self.env and n.op != "output")

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
        if self.channels_last and y.is_contiguous(memory_format=torch.channels_last):
            # N x H x W x (K*C) in memory -> K*N x H x W x C: one copy, already channels-last
            y = y.permute(0, 2, 3, 1).reshape(N, H, W, K, C).permute(3, 0, 1, 2, 4).reshape(K * N, H, W, C)
            return y.permute(0, 3, 1, 2)
        y = y.reshape(N, K, C, H, W).transpose(0, 1).reshape(K * N, C, H, W)
        return y.contiguous(memory_format=torch.channels_last) if self.channels_last else y

    def run_variants(self, changed: set[str], variants: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Logits (K*N, C) with parameter ``variants[k]`` (param name -> tensor) for variant k."""
        import torch.fx as fx

        K = len(variants)
        nodes, last_use, folded = self._plan(changed)
        expanded: dict = {}
        if "_params" not in self.__dict__:
            self._params = dict(self.gm.named_parameters())
        params = self._params

        def arg(a):
            if isinstance(a, fx.Node):
                if a in expanded:
                    return expanded[a]
                return self._batched(self.env[a], K)
            return a

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
        return logits_of(out)

    def _plan(self, changed: set[str]):
        """(suffix nodes, each node's last use in it, conv -> bn pairs outside the changed modules that run as one
        folded conv) for ``changed``; kept per set of changed modules (shared with the subsets: same graph)."""
        key = frozenset(changed)
        plans = self.__dict__.setdefault("_plans", {})
        if key not in plans:
            nodes = self.suffix(changed)
            in_suffix = set(nodes)
            last_use = {}
            for i, n in enumerate(nodes):
                for a in n.all_input_nodes:
                    if a in in_suffix:
                        last_use[a] = i
            folded = {c: bn for bn, (c, _) in self.fused.items()
                      if bn in in_suffix and c in in_suffix and str(c.target) not in changed
                      and str(bn.target) not in changed}
            plans[key] = (nodes, last_use, folded)
        return plans[key]
