"""``tiny-lm``: the built-in language model, a small LLaMA-style decoder-only transformer in plain torch.

Shaped like the field's decoders so that the pruning methods written for them apply unchanged: a token
embedding over the 256 byte values, ``layers`` (an ``nn.ModuleList``) of pre-norm blocks -- RMSNorm, causal
self-attention ``attn.q_proj/k_proj/v_proj/o_proj`` (bias-free ``nn.Linear``, rotary positions on queries and
keys, torch's ``scaled_dot_product_attention`` with ``is_causal=True``), RMSNorm, a SwiGLU MLP
``mlp.gate_proj/up_proj/down_proj`` -- then a final RMSNorm and an ``lm_head`` that is *not* tied to the
embedding (so it is a prunable layer of its own, as in LLaMA). ``forward(x: LongTensor[N, T])`` returns the
next-byte logits ``[N, T, 256]``. No transformers dependency: the built-in opens without extras.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

VOCAB = 256          # byte values
BLOCK = 128          # tokens per block of the built-in text (the model takes any length)
DIM, DEPTH, HEADS, HIDDEN = 256, 4, 8, 688
ROPE_BASE = 10000.0


def rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of ``x`` (N, heads, T, head_dim): pairs (i, i + head_dim/2) rotated by
    position x frequency (the LLaMA "rotate half" layout)."""
    t, d = x.shape[-2], x.shape[-1]
    inv = ROPE_BASE ** (-torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d)
    ang = torch.arange(t, dtype=torch.float32, device=x.device)[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1).to(x.dtype), torch.cat([ang.sin()] * 2, -1).to(x.dtype)
    x1, x2 = x[..., :d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape

        def split(v: torch.Tensor) -> torch.Tensor:       # (N, T, D) -> (N, heads, T, D/heads)
            return v.view(n, t, self.heads, -1).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        y = F.scaled_dot_product_attention(rotary(q), rotary(k), v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(n, t, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.input_norm = nn.RMSNorm(dim, eps=1e-5)
        self.attn = Attention(dim, heads)
        self.post_attention_norm = nn.RMSNorm(dim, eps=1e-5)
        self.mlp = MLP(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.input_norm(x))
        return x + self.mlp(self.post_attention_norm(x))


class TinyLM(nn.Module):
    """Byte-level decoder-only transformer: (N, T) token ids -> (N, T, 256) next-token logits."""

    def __init__(self, vocab: int = VOCAB, dim: int = DIM, depth: int = DEPTH, heads: int = HEADS,
                 hidden: int = HIDDEN):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, heads, hidden) for _ in range(depth))
        self.norm = nn.RMSNorm(dim, eps=1e-5)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.apply(_init)
        for b in self.layers:        # residual branches scaled down with depth (GPT-2's init)
            for p in (b.attn.o_proj.weight, b.mlp.down_proj.weight):
                nn.init.normal_(p, std=0.02 / (2 * depth) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(x)
        for block in self.layers:
            h = block(h)
        return self.lm_head(self.norm(h))


def _init(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
