"""Tiny models the tests build from configs (random init, no downloads).

``TinyViT`` is also a user class for ``--arch tests.tiny_models:TinyViT`` (torchvision's VisionTransformer,
two layers: nn.MultiheadAttention inside). The Hugging Face builders write folders with ``save_pretrained``.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
from torch import nn

VOCAB = 256     # byte-level: text:FILE without a tokenizer uses the 256 byte values


class TinyViT(nn.Module):
    input_shape = (3, 32, 32)

    def __init__(self):
        super().__init__()
        from torchvision.models import VisionTransformer

        self.vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                     mlp_dim=64, num_classes=10)

    def forward(self, x):
        return self.vit(x)


class NeedsArgs(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, 2)


def write_text(path: Path, words: int = 4000, seed: int = 0) -> Path:
    rng = random.Random(seed)
    vocab = ("the quick brown fox jumps over the lazy dog while pruning removes weights from neural networks "
             "and keeps their accuracy").split()
    path.write_text(" ".join(rng.choice(vocab) for _ in range(words)), encoding="utf-8")
    return path


def llama_folder(path: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(str(path))
    return path


def gpt2_folder(path: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    GPT2LMHeadModel(cfg).save_pretrained(str(path))
    return path


def vit_folder(path: Path) -> Path:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=10)
    ViTForImageClassification(cfg).save_pretrained(str(path))
    return path
