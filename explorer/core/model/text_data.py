"""``text:FILE``: a local UTF-8 text file as next-token data for a causal language model.

The text is tokenized with the model folder's tokenizer when it has one (transformers' AutoTokenizer
on the folder, local files only), else as its UTF-8 bytes (token ids 0..255: the model's vocabulary must
hold 256 ids). The token stream is cut into consecutive blocks of ``block`` + 1 tokens (overlapping by
one): the inputs are a block's first ``block`` tokens and the labels the same block shifted by one, so
every position predicts the next token. The blocks are split in order -- the last tenth is the test split,
the tenth before it the validation split, the rest trains -- so no text is shared between splits. The
metric is perplexity (``DatasetBundle.metric``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from ..errors import DatasetError
from ..safe_read import regular_file

TEXT_MAX_BYTES = 512 * 2**20
TINY_TEXT = "tiny-text"                 # the built-in text of tiny-lm (resources/data, made by scripts/make_tiny_text.py)
TINY_TEXT_FILE = "python-docs.txt"
MIN_BLOCKS = 3


def tiny_text_path() -> Path:
    from explorer import RESOURCES

    return RESOURCES / "data" / TINY_TEXT_FILE


def tiny_text_file(spec: str, tokens: dict | None) -> Path:
    """``tiny-text``: ``text:FILE`` on the text that ships with the app (Python's documentation of its language
    topics, UTF-8 bytes as tokens), named so that reports and recipes do not depend on where the app lives."""
    if spec != TINY_TEXT:
        raise DatasetError(f"The dataset spec '{spec}' takes no argument; write it as {TINY_TEXT}.")
    if not tokens:
        raise DatasetError(f"{TINY_TEXT} is text, for a causal language model; this model takes other inputs.",
                           "Open a language model (tiny-lm, or hf:DIR with a …ForCausalLM), or choose an image "
                           "dataset.")
    if tokens.get("tokenizer"):
        raise DatasetError(f"{TINY_TEXT} is read as UTF-8 bytes, but this model has its own tokenizer.",
                           f"Use text:{tiny_text_path()} (tokenized with the model's tokenizer) instead.")
    return tiny_text_path()


def read_text(path: str | Path) -> str:
    p = regular_file(path, "text", DatasetError)
    size = p.stat().st_size
    if size > TEXT_MAX_BYTES:
        raise DatasetError(f"'{p.name}' is {size / 2**20:.0f} MiB; text:FILE reads at most "
                           f"{TEXT_MAX_BYTES // 2**20} MiB.", "Use a smaller excerpt of the text.")
    raw = p.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"'{p.name}' is not UTF-8 text (byte {e.start} cannot be decoded).",
                           "text:FILE needs a UTF-8 text file; convert it first (e.g. iconv -t utf-8).") from None


def tokenize(text: str, tokenizer_dir: str | None, vocab_size: int | None) -> tuple[torch.Tensor, str]:
    """(token ids, how they were made)."""
    if tokenizer_dir:
        from ..extras import offline, require

        offline()
        tf = require("transformers", "Tokenizing text with the model's tokenizer")
        try:
            tok = tf.AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True, trust_remote_code=False)
        except Exception as e:
            raise DatasetError(f"The tokenizer in '{tokenizer_dir}' cannot be loaded ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:160] if str(e) else ''}).",
                               "Save it with tokenizer.save_pretrained(DIR), or remove its files to use bytes.") \
                from None
        ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        how = f"tokenized with the tokenizer in {Path(tokenizer_dir).name}"
    else:
        ids = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()
        how = "UTF-8 bytes as tokens (the model has no tokenizer)"
        if vocab_size is not None and vocab_size < 256:
            raise DatasetError(f"The model's vocabulary has {vocab_size} tokens, fewer than the 256 byte values "
                               "text:FILE uses without a tokenizer.",
                               "Put the model's tokenizer into its folder (tokenizer.save_pretrained(DIR)).")
    if vocab_size is not None and ids.numel() and int(ids.max()) >= vocab_size:
        raise DatasetError(f"The text has token id {int(ids.max())}, outside the model's vocabulary of {vocab_size}.",
                           "Use the tokenizer the model was trained with.")
    return ids, how


def text_splits(path: str, block: int, tokenizer_dir: str | None = None,
                vocab_size: int | None = None) -> tuple[dict[str, TensorDataset], str]:
    """({split: (inputs, labels) blocks}, a note saying how the text was cut)."""
    if block < 1:
        raise DatasetError(f"The block length must be at least 1 token (got {block}).")
    ids, how = tokenize(read_text(path), tokenizer_dir, vocab_size)
    n = (ids.numel() - 1) // block
    if n < MIN_BLOCKS:
        raise DatasetError(f"'{Path(path).name}' holds {ids.numel():,} tokens: fewer than the {MIN_BLOCKS} blocks of "
                           f"{block} + 1 tokens that train, validation and test need.",
                           "Use a longer text, or a shorter block with --input-shape N (tokens per block).")
    starts = torch.arange(n) * block
    idx = starts[:, None] + torch.arange(block + 1)[None, :]
    blocks = ids[idx]
    x, y = blocks[:, :-1].contiguous(), blocks[:, 1:].contiguous()
    n_test = max(1, n // 10)
    n_val = max(1, n // 10)
    n_train = n - n_val - n_test
    splits = {"train": TensorDataset(x[:n_train], y[:n_train]),
              "val": TensorDataset(x[n_train:n_train + n_val], y[n_train:n_train + n_val]),
              "test": TensorDataset(x[n_train + n_val:], y[n_train + n_val:])}
    return splits, f"{ids.numel():,} tokens ({how}) in {n} blocks of {block}: {n_train} train, {n_val} val, {n_test} test"


def token_splits(input_shape, vocab_size: int, samples: int, seed: int) -> dict[str, TensorDataset]:
    """Random token ids of a language model's block length, without labels (latency and size only)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab_size, (samples, *input_shape), generator=g)
    half = samples // 2
    return {"train": TensorDataset(x[:half]), "val": TensorDataset(x[half:3 * half // 2]),
            "test": TensorDataset(x[3 * half // 2:])}
