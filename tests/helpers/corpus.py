"""Small text corpora written by tests: varied prose and JSONL files."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import zstandard


def prose(seed: int, words: int = 400) -> str:
    """Varied text that the default quality filters keep."""
    rng = random.Random(seed)
    vocabulary = [
        "the",
        "a",
        "tokenizer",
        "model",
        "reads",
        "writes",
        "text",
        "data",
        "every",
        "many",
        "some",
        "large",
        "small",
        "new",
        "old",
    ]
    return " ".join(rng.choice(vocabulary) + ("." if rng.random() < 0.1 else "") for _ in range(words)) + "\n"


def write_jsonl_texts(path: Path, texts: list[str]) -> Path:
    """One {"text": ...} record per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def write_jsonl_lines(path: Path, lines: list[bytes]) -> Path:
    """Raw lines, compressed by the name's suffix (.gz, .zst)."""
    data = b"\n".join(lines) + b"\n"
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path
