"""Train or load a Hugging Face `tokenizers` tokenizer and identify it by content."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS_TOKEN = "<|endoftext|>"
# Tried in order when loading a tokenizer someone else trained.
KNOWN_EOS_TOKENS = (EOS_TOKEN, "</s>", "<|end_of_text|>", "<eos>", "<|eot_id|>")


def train_bpe_tokenizer(texts: Iterator[str], vocab_size: int, length: int | None = None) -> Tokenizer:
    """A byte-level BPE (GPT-2 style) trained on `texts`, with `<|endoftext|>` as id 0."""
    if vocab_size < 257:
        raise ValueError(f"vocab_size must be at least 257 (256 bytes + EOS), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        # Every byte is in the vocabulary, so no text is ever out of vocabulary.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a `tokenizer.json` file or a directory holding one (a Hugging Face model folder)."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no tokenizer at {file}: pass a tokenizer.json or a directory containing one"
        )
    return Tokenizer.from_file(str(file))


def find_eos_id(tokenizer: Tokenizer, eos_token: str | None = None) -> int:
    """The id of the end-of-document token: `eos_token` if given, else the first known EOS spelling."""
    candidates = (eos_token,) if eos_token else KNOWN_EOS_TOKENS
    for token in candidates:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    raise ValueError(
        f"the tokenizer has none of the end-of-document tokens {', '.join(candidates)}; name one with --eos_token"
    )


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    """Content hash of the tokenizer's canonical JSON: two tokenizers that encode alike hash alike."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def find_special_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of a named token such as a BOS token, or a clear error."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the tokenizer has no token {token!r} (asked for by --bos_token)")
    return token_id
