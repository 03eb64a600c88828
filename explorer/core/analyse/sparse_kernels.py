"""Sparse-kernel versions of a layer: what the speed map times and what the sparse runtime runs.

* ``csr``: the weight as a PyTorch sparse CSR tensor (``Tensor.to_sparse_csr()``: only the nonzeros, MKL on the
  CPU, cuSPARSE on CUDA). :class:`CsrLinear` computes ``W·xᵀ`` with ``torch.addmv`` for a single row (measured
  here several times faster than ``addmm`` with one column) and ``torch.addmm`` otherwise. :class:`CsrConv`
  (Conv1d/Conv2d, groups 1) unfolds the input (im2col, ``F.unfold``) and multiplies the CSR weight
  (out × in·kh·kw) with the unfolded columns of the whole batch in one GEMM -- the same lowering dense
  convolutions use, so the comparison is kernel against kernel.
* ``2:4``: semi-structured sparsity on CUDA GPUs with sparse tensor cores (compute capability 8.0+),
  ``torch.sparse.to_sparse_semi_structured`` in float16, Linear layers (:func:`semi_structured_linear`).
* ``channel``: the same layer with fewer output channels, a smaller dense layer (:func:`fewer_channels`).

Both CSR modules are TorchScript-scriptable (the sparse runtime is saved scripted) and hold their weight as a
CSR buffer plus a dense bias (zeros when the layer has none), so ``state_dict`` round-trips them too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ExplorerError

KERNELS = ("csr", "2:4", "channel")
UNFOLD_LIMIT_BYTES = 512 << 20     # the CSR convolution's unfolded input may take at most this much memory


def _csr(weight2d: torch.Tensor) -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():     # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return weight2d.detach().contiguous().to_sparse_csr()


def _bias(layer: nn.Module, out: int, like: torch.Tensor) -> torch.Tensor:
    b = getattr(layer, "bias", None)
    return b.detach().clone() if b is not None else torch.zeros(out, dtype=like.dtype, device=like.device)


class CsrLinear(nn.Module):
    """``y = x·Wᵀ + b`` with ``W`` stored as CSR (out × in). Any leading dimensions, like ``nn.Linear``."""

    def __init__(self, layer: nn.Linear):
        super().__init__()
        w = layer.weight.detach()
        self.in_features = int(w.shape[1])
        self.out_features = int(w.shape[0])
        self.register_buffer("weight", _csr(w))
        self.register_buffer("bias", _bias(layer, self.out_features, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = list(x.shape[:-1])
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 1:
            y = torch.addmv(self.bias, self.weight, x2[0]).unsqueeze(0)
        else:
            y = torch.addmm(self.bias.unsqueeze(1), self.weight, x2.t().contiguous()).t()
        return y.reshape(lead + [self.out_features])

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, nnz={self.weight.values().numel()}"


class CsrConv(nn.Module):
    """A Conv2d (or Conv1d, as a 1×k Conv2d) with groups 1 and zero padding: unfold, one CSR GEMM, fold back."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        check_csr(layer)
        one_d = isinstance(layer, nn.Conv1d)
        w = layer.weight.detach()
        self.one_d = one_d
        self.out_channels = int(w.shape[0])
        k = tuple(w.shape[2:])
        pair = (lambda t: (1, int(t[0])) if one_d else (int(t[0]), int(t[1])))
        pad = (lambda t: (0, int(t[0])) if one_d else (int(t[0]), int(t[1])))
        self.kernel_size = pair(k)
        self.stride = pair(layer.stride)
        self.padding = pad(layer.padding)
        self.dilation = pair(layer.dilation)
        self.register_buffer("weight", _csr(w.reshape(self.out_channels, -1)))
        self.register_buffer("bias", _bias(layer, self.out_channels, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.one_d:
            x = x.unsqueeze(2)
        b, h, w = x.shape[0], x.shape[2], x.shape[3]
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)   # b × (c·kh·kw) × L
        if b == 1:
            flat = cols[0]
        else:
            flat = cols.transpose(0, 1).reshape(cols.shape[1], -1)
        y = torch.addmm(self.bias.unsqueeze(1), self.weight, flat)                      # out × (b·L)
        y = y.reshape(self.out_channels, b, ho, wo).transpose(0, 1)
        if self.one_d:
            y = y.squeeze(2)
        return y.contiguous()

    def extra_repr(self) -> str:
        return (f"out={self.out_channels}, kernel={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, nnz={self.weight.values().numel()}")


def csr_reason(layer: nn.Module) -> str | None:
    """Why ``layer`` has no CSR kernel here (None: it has one)."""
    if isinstance(layer, nn.Linear):
        return None
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        if layer.groups != 1:
            return f"grouped convolution (groups={layer.groups}): the CSR kernel here multiplies one weight matrix"
        if isinstance(layer.padding, str):
            return f"padding='{layer.padding}' is not supported by the CSR convolution (numeric padding only)"
        if layer.padding_mode != "zeros":
            return f"padding_mode='{layer.padding_mode}' is not supported by the CSR convolution (zeros only)"
        return None
    return f"no sparse kernel for {type(layer).__name__} (CSR covers Linear, Conv1d and Conv2d)"


def check_csr(layer: nn.Module) -> None:
    why = csr_reason(layer)
    if why:
        raise ExplorerError(why[0].upper() + why[1:] + ".")


def unfold_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the unfolded input the CSR convolution makes for ``x`` (0 for a Linear layer)."""
    if not isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        return 0
    k = 1
    for d in layer.kernel_size:
        k *= int(d)
    with torch.no_grad():
        spatial = 1
        for d in layer(x[:1]).shape[2:]:
            spatial *= int(d)
    return int(x.shape[0]) * int(x.shape[1]) * k * spatial * x.element_size()


def csr_module(layer: nn.Module) -> nn.Module:
    """The CSR version of ``layer`` (its weight as it is: zeros are dropped)."""
    check_csr(layer)
    return CsrLinear(layer) if isinstance(layer, nn.Linear) else CsrConv(layer)


def semi_structured_reason(layer: nn.Module, device: torch.device) -> str | None:
    """Why the 2:4 kernel is unavailable (None: available)."""
    if device.type != "cuda":
        return f"2:4 semi-structured sparsity needs a CUDA GPU with sparse tensor cores (this device: {device.type})"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"2:4 needs compute capability 8.0 or newer (this GPU: {major}.{minor})"
    if not isinstance(layer, nn.Linear):
        return f"the 2:4 kernel here is for Linear layers (not {type(layer).__name__})"
    return None


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the 2 largest |w| of every 4 consecutive inputs (the 2:4 pattern)."""
    w = weight.reshape(-1, 4)
    idx = w.abs().topk(2, dim=1).indices
    keep = torch.zeros_like(w, dtype=torch.bool).scatter_(1, idx, True)
    return keep.reshape(weight.shape)


def semi_structured_linear(layer: nn.Linear, dtype: torch.dtype = torch.float16) -> tuple[nn.Module, nn.Module]:
    """(dense half-precision twin, 2:4 twin) of a Linear layer on its CUDA device; the 2:4 weight keeps the two
    largest |w| of every four. Raises ExplorerError when torch refuses the shape."""
    from torch.sparse import to_sparse_semi_structured

    dense = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                      device=layer.weight.device, dtype=dtype)
    with torch.no_grad():
        w = layer.weight.detach().to(dtype)
        dense.weight.copy_(w * two_four_mask(w))
        if layer.bias is not None:
            dense.bias.copy_(layer.bias.detach().to(dtype))
    sparse = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                       device=layer.weight.device, dtype=dtype)
    with torch.no_grad():
        if layer.bias is not None:
            sparse.bias.copy_(dense.bias)
    try:
        sparse.weight = nn.Parameter(to_sparse_semi_structured(dense.weight.detach()), requires_grad=False)
    except (RuntimeError, ValueError) as e:
        raise ExplorerError(f"torch refuses 2:4 for a {layer.out_features}×{layer.in_features} weight: {e}") from None
    return dense, sparse


def fewer_channels(layer: nn.Module, sparsity: float) -> nn.Module:
    """A dense copy of ``layer`` keeping ``round((1 - sparsity)·out)`` output channels (at least one): what channel
    pruning leaves of it, timed on its own (the next layer's narrower input is not counted)."""
    out = int(layer.weight.shape[0])
    keep = max(1, int(round((1.0 - sparsity) * out)))
    w = layer.weight.detach()[:keep].clone()
    b = layer.bias.detach()[:keep].clone() if getattr(layer, "bias", None) is not None else None
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, keep, bias=b is not None, device=w.device, dtype=w.dtype)
    elif isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        if layer.groups != 1:
            raise ExplorerError(f"No channel kernel for a grouped convolution (groups={layer.groups}).")
        new = type(layer)(layer.in_channels, keep, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                          1, b is not None, layer.padding_mode, device=w.device, dtype=w.dtype)
    else:
        raise ExplorerError(f"No channel kernel for {type(layer).__name__}.")
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def magnitude_order(weight: torch.Tensor) -> torch.Tensor:
    """The weight's flat indices by increasing |w| (ties by position): sort once, mask at any sparsity."""
    return weight.detach().reshape(-1).abs().argsort(stable=True)


def magnitude_masked(weight: torch.Tensor, sparsity: float, order: torch.Tensor | None = None) -> torch.Tensor:
    """``weight`` with exactly ``round(sparsity·n)`` of its smallest |w| set to zero (the app's element/l1 mask);
    ``order``: :func:`magnitude_order` of ``weight`` when already computed."""
    n = weight.numel()
    zeros = int(round(sparsity * n))
    if zeros <= 0:
        return weight.clone()
    flat = weight.reshape(-1)
    idx = (order if order is not None else magnitude_order(weight))[:zeros]
    out = flat.clone()
    out[idx] = 0
    return out.reshape(weight.shape)


def with_weight(layer: nn.Module, weight: torch.Tensor) -> nn.Module:
    """A copy of ``layer`` holding ``weight``."""
    import copy

    new = copy.deepcopy(layer)
    with torch.no_grad():
        new.weight.copy_(weight)
    return new
