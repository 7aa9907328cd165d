"""Token streams on disk: append-only token files, then litdata shards made from them."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Pieces handed to litdata; small next to a chunk so chunks fill up evenly.
PIECE_TOKENS = 4096
# Where write_chunk_range leaves the SHA-256 of each chunk it wrote, for write_index.
_DIGESTS = "chunk-digests.json"


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

    def append_file(self, token_file: Path, documents: int) -> None:
        """Append another closed token file of the same dtype holding `documents` documents."""
        with open(token_file, "rb") as source:
            shutil.copyfileobj(source, self._file, length=16 << 20)
        self.tokens += token_file.stat().st_size // self.dtype.itemsize
        self.documents += documents

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


# A stretch [start, end) of a token file's tokens. A (source, split) holds a list of them, in order. The
# file is a local path, or whatever names it to the stream's `open_tokens`.
Segment = tuple[Any, int, int]


class TokenStream:
    """The tokens of segments of token files, one after another, read by position; each file is opened
    (by default, mapped in memory) when first read."""

    def __init__(
        self,
        segments: list[Segment],
        dtype: np.dtype,
        open_tokens: Callable[[Any], np.ndarray] | None = None,
    ) -> None:
        self.segments = [segment for segment in segments if segment[2] > segment[1]]
        self.dtype = dtype
        self.open_tokens = open_tokens or (lambda path: np.memmap(path, dtype=dtype, mode="r"))
        lengths = [end - start for _, start, end in self.segments]
        # Where each segment starts in the stream.
        self.offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        self.tokens = int(self.offsets[-1])
        self._maps: dict[Any, np.ndarray] = {}

    def read(self, start: int, end: int) -> np.ndarray:
        """Tokens [start, end) of the stream, as one array."""
        parts = []
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        for index in range(first, len(self.segments)):
            if self.offsets[index] >= end:
                break
            path, segment_start, _ = self.segments[index]
            if path not in self._maps:
                self._maps[path] = self.open_tokens(path)
            low = segment_start + max(start - int(self.offsets[index]), 0)
            high = segment_start + min(end, int(self.offsets[index + 1])) - int(self.offsets[index])
            parts.append(self._maps[path][low:high])
        return np.concatenate(parts) if len(parts) != 1 else np.array(parts[0])

    def close(self) -> None:
        """Let go of the memory maps."""
        self._maps.clear()


def chunk_starts(tokens: int, chunk_tokens: int) -> list[int]:
    """The first piece of each litdata chunk `write_shards` makes of `tokens` tokens, then the piece count.

    litdata fills a chunk with pieces while they fit in `chunk_tokens` (a piece larger than that goes
    alone): every chunk holds the same number of full pieces, and the last, shorter piece joins the last
    chunk if it still fits there.
    """
    full, rest = divmod(tokens, PIECE_TOKENS)
    per_chunk = max(1, chunk_tokens // PIECE_TOKENS)
    starts = list(range(0, full, per_chunk))
    if rest and not (starts and (full - starts[-1]) * PIECE_TOKENS + rest <= chunk_tokens):
        starts.append(full)
    return [*starts, full + bool(rest)]


def write_shards(segments: list[Segment], dtype: np.dtype, output_dir: Path, chunk_tokens: int) -> None:
    """Turn token-file segments into litdata chunks readable with `TokensLoader`, byte-identical across
    runs: `write_chunk_range` of every chunk, then `write_index`.

    litdata's own `BinaryWriter` runs in this process: `optimize` would fork a writer per split and
    source, which cost more than the writing itself (0.8 s against 0.1 s for 9M tokens), and one writer
    keeps chunk order, and so the bytes, the same on every run.
    """
    stream = TokenStream(segments, dtype)
    write_chunk_range(stream, output_dir, chunk_tokens, 0, len(chunk_starts(stream.tokens, chunk_tokens)) - 1)
    stream.close()
    write_index(output_dir, [output_dir])


def write_chunk_range(stream: TokenStream, output_dir: Path, chunk_tokens: int, first: int, end: int) -> None:
    """Chunks [first, end) of the stream's shards into `output_dir`, with litdata's index of just them
    (a `*.index.json` that `write_index` gathers). Ranges written apart, by different processes, are the
    chunks one writer would write: each range starts where one of its chunks starts (`chunk_starts`)."""
    from litdata.streaming.item_loader import TokensLoader
    from litdata.streaming.writer import BinaryWriter

    writer = BinaryWriter(
        str(output_dir), chunk_size=chunk_tokens, item_loader=TokensLoader(), chunk_index=first
    )
    starts = chunk_starts(stream.tokens, chunk_tokens)
    first_piece, end_piece = starts[first], starts[end]
    written = []
    for index, piece in enumerate(range(first_piece, end_piece)):
        start = piece * PIECE_TOKENS
        tokens = stream.read(start, min(start + PIECE_TOKENS, stream.tokens))
        chunk = writer.add_item(index, torch.from_numpy(tokens))
        if chunk is not None:
            written.append(chunk)
    written += writer.done()
    # Each chunk is hashed by the process that wrote it, while it is likely still in the page cache, so
    # that the index's content hash costs the gathering step nothing per byte.
    digests = {Path(path).name: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in written}
    (output_dir / _DIGESTS).write_text(json.dumps(digests))


def write_index(output_dir: Path, range_dirs: list[Path]) -> None:
    """`output_dir`'s index.json, from the partial indexes and chunk digests `write_chunk_range` left in
    `range_dirs` (in chunk order), which are removed; its `updated_at` is a hash of the chunks' hashes,
    so reruns are byte-identical."""
    chunks: list[dict] = []
    digests: dict[str, str] = {}
    config = None
    for directory in range_dirs:
        for partial_index in sorted(directory.glob("*.index.json")):
            written = json.loads(partial_index.read_text())
            config = config if config is not None else written["config"]
            chunks.extend(written["chunks"])
            partial_index.unlink()
        digests.update(json.loads((directory / _DIGESTS).read_text()))
        (directory / _DIGESTS).unlink()
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(digests[chunk["filename"]].encode())
    # litdata uses updated_at to invalidate caches of remote copies: a content hash does that job too.
    index = {"chunks": chunks, "config": config, "updated_at": digest.hexdigest()[:16]}
    (output_dir / "index.json").write_text(json.dumps(index, sort_keys=True))
