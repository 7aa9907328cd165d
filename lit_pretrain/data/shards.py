"""Token streams on disk: append-only token files, then litdata shards made from them."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

# Pieces handed to litdata; small next to a chunk so chunks fill up evenly.
PIECE_TOKENS = 4096


class TokenFileWriter:
    """Appends token ids to a raw binary file, so memory stays flat whatever the corpus size."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path = path
        self.dtype = dtype
        self.tokens = 0
        self.documents = 0
        self._file = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, ids: np.ndarray) -> None:
        """Append one document's ids (already ending in EOS)."""
        self._file.write(ids.astype(self.dtype, copy=False).tobytes())
        self.tokens += len(ids)
        self.documents += 1

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


class _TokenPieces:
    """litdata `optimize` worker function: yields fixed-size pieces of a token file (picklable)."""

    def __init__(self, path: str, dtype: str) -> None:
        self.path = path
        self.dtype = dtype

    def __call__(self, start: int) -> Iterator[torch.Tensor]:
        tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        yield torch.from_numpy(np.array(tokens[start : start + PIECE_TOKENS]))


@contextmanager
def _tokenizer_threads_off() -> Iterator[None]:
    """TOKENIZERS_PARALLELISM=false while a child is forked, then as before.

    The forked writer only reads a memmap; the variable silences the tokenizer's fork warning there.
    This process reads it again on every batch it encodes, so leaving it set would make all later
    tokenization single-threaded.
    """
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def write_shards(token_file: Path, dtype: np.dtype, output_dir: Path, chunk_tokens: int) -> None:
    """Turn a raw token file into litdata chunks readable with `TokensLoader`, byte-identical across runs."""
    from litdata import optimize
    from litdata.streaming.item_loader import TokensLoader

    num_tokens = token_file.stat().st_size // dtype.itemsize
    with _tokenizer_threads_off():
        optimize(
            fn=_TokenPieces(str(token_file), dtype.name),
            inputs=list(range(0, num_tokens, PIECE_TOKENS)),
            output_dir=str(output_dir),
            chunk_size=chunk_tokens,
            item_loader=TokensLoader(),
            # One writer keeps chunk order, and so the shards' bytes, identical across runs.
            num_workers=1,
            # fork: the worker needs nothing re-imported; spawn would re-run an unguarded caller script.
            start_method="fork" if sys.platform == "linux" else None,
            verbose=False,
        )
    _make_index_reproducible(output_dir)


def _make_index_reproducible(split_dir: Path) -> None:
    """Replace litdata's wall-clock `updated_at` with a hash of the chunks, so reruns are byte-identical."""
    index_path = split_dir / "index.json"
    index = json.loads(index_path.read_text())
    digest = hashlib.sha256()
    for chunk in index["chunks"]:
        digest.update((split_dir / chunk["filename"]).read_bytes())
    # litdata uses updated_at to invalidate caches of remote copies: a content hash does that job too.
    index["updated_at"] = digest.hexdigest()[:16]
    index_path.write_text(json.dumps(index, sort_keys=True))
