"""Kept documents' token ids into one token file per (source, split), then into litdata shards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lit_pretrain.data.ledger import Ledger, id_fraction
from lit_pretrain.data.manifest import write_manifest
from lit_pretrain.data.shards import TokenFileWriter, write_shards

# (hash fraction, source, first token, tokens) of the training document a small corpus would hold out.
LowestTrain = tuple[float, str, int, int]


class SplitWriters:
    """What each (source, split) holds, as segments of token files in the order documents arrive: token
    files written here (one per (source, split) under `work`) and closed token files added whole."""

    def __init__(self, work: Path, dtype: np.dtype, held_out: Callable[[str, str], bool]) -> None:
        self.work, self.dtype, self.held_out = work, dtype, held_out
        self.writers: dict[tuple[str, str], TokenFileWriter] = {}
        # A segment whose end is None runs to the end of this object's own file of that (source, split).
        self.segments: dict[tuple[str, str], list[tuple[Any, int, int | None]]] = {}
        self.documents: dict[tuple[str, str], int] = {}
        self.lowest_train: LowestTrain | None = None

    def writer(self, name: str, split: str) -> TokenFileWriter:
        """The token file of (source, split), opened at its first use."""
        if (name, split) not in self.writers:
            path = self.work / f"{len(self.writers):04d}.{split}.bin"
            self.writers[name, split] = TokenFileWriter(path, self.dtype)
            self.segments.setdefault((name, split), []).append((path, 0, None))
        return self.writers[name, split]

    def write(self, name: str, document_id: str, ids: np.ndarray) -> None:
        """Append one document's ids to its source's split."""
        split = "val" if self.held_out(document_id, name) else "train"
        writer = self.writer(name, split)
        if split == "train":
            self._offer_lowest((id_fraction(document_id), name, writer.tokens, len(ids)))
        writer.write(ids)
        self.documents[name, split] = self.documents.get((name, split), 0) + 1

    def add_file(
        self,
        name: str,
        split: str,
        token_file: Any,
        documents: int,
        tokens: int,
        lowest: LowestTrain | None,
    ) -> None:
        """Add another writer's closed token file of (source, split) holding `documents` documents and
        `tokens` tokens, after what (source, split) holds (its tokens are read from there, not copied).

        `lowest` is that writer's lowest-hash training document, its offset counted in that file.
        """
        key = (name, split)
        if key in self.writers:
            raise ValueError(f"{key} is written here: add files only to what is not")
        held = sum(end - start for _, start, end in self.segments.get(key, []))
        if lowest is not None:
            self._offer_lowest((lowest[0], lowest[1], held + lowest[2], lowest[3]))
        self.segments.setdefault(key, []).append((token_file, 0, tokens))
        self.documents[key] = self.documents.get(key, 0) + documents

    def _offer_lowest(self, candidate: LowestTrain) -> None:
        # Strictly lower: of equal hashes the first document in input order is the one.
        if self.lowest_train is None or candidate[0] < self.lowest_train[0]:
            self.lowest_train = candidate

    def tokens(self, split: str) -> int:
        """Tokens held by `split` over all sources (once closed)."""
        return sum(self.stream_tokens(key) for key in self.segments if key[1] == split)

    def stream_tokens(self, key: tuple[str, str]) -> int:
        """Tokens held by (source, split) (once closed)."""
        return sum(end - start for _, start, end in self.segments[key])

    def hold_out_lowest_train_document(self) -> None:
        """A small corpus may hash no document below val_fraction: move the lowest-hash one to validation."""
        _, name, start, length = self.lowest_train
        taken, kept, offset = [], [], 0
        for path, first, end in self.segments[name, "train"]:
            # The parts of this segment before, inside and after [start, start + length) of the stream.
            cut_low = first + min(max(start - offset, 0), end - first)
            cut_high = first + min(max(start + length - offset, 0), end - first)
            kept += [(path, first, cut_low), (path, cut_high, end)]
            taken.append((path, cut_low, cut_high))
            offset += end - first
        self.segments[name, "train"] = [segment for segment in kept if segment[2] > segment[1]]
        self.documents[name, "train"] -= 1
        self.segments.setdefault((name, "val"), []).extend(s for s in taken if s[2] > s[1])
        self.documents[name, "val"] = self.documents.get((name, "val"), 0) + 1

    def close(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Close every token file written here; (documents, tokens) per (source, split)."""
        for key, writer in self.writers.items():
            writer.close()
            self.segments[key] = [(p, a, writer.tokens if b is None else b) for p, a, b in self.segments[key]]
        return self.counts()

    def counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(documents, tokens) per (source, split), once closed."""
        return {key: (self.documents.get(key, 0), self.stream_tokens(key)) for key in self.segments}

    def write_shards(self, out: Path, chunk_tokens: int) -> None:
        """litdata shards of every non-empty (source, split) under out/SPLIT/SOURCE; the token files
        written here go."""
        for (name, split), segments in self.segments.items():
            if self.stream_tokens((name, split)):
                write_shards(segments, self.dtype, out / split / name, chunk_tokens)
        for writer in self.writers.values():
            writer.path.unlink()


def settle_splits(ledger: Ledger, writers: SplitWriters) -> None:
    """Every kept document is in `writers`: close them, hold out validation if none was, and count each
    split in the ledger."""
    options = ledger.options
    writers.close()
    if options.val_fraction > 0 and not ledger.val_inputs and not writers.tokens("val"):
        writers.hold_out_lowest_train_document()
    if not writers.tokens("train"):
        raise ValueError(
            f"no training documents are left after holding out validation data "
            f"(val_fraction={options.val_fraction}, val_inputs={ledger.val_inputs}): add documents"
        )
    for (name, split), (documents, tokens) in writers.counts().items():
        ledger.stats[name][split] = {"documents": documents, "tokens": tokens}


def finish_dataset(
    out: Path, ledger: Ledger, writers: SplitWriters, bpe: Any, eos_id: int, bos_id: int | None
) -> dict[str, Any]:
    """Every kept document is in `writers`: hold out validation if none was, write shards and manifest."""
    settle_splits(ledger, writers)
    writers.write_shards(out, ledger.options.chunk_tokens)
    return write_dataset_manifest(out, ledger, writers, bpe, eos_id, bos_id)


def write_dataset_manifest(
    out: Path, ledger: Ledger, writers: SplitWriters, bpe: Any, eos_id: int, bos_id: int | None
) -> dict[str, Any]:
    """Write and return manifest.json, once the splits are settled."""
    manifest = ledger.manifest(bpe, eos_id, bos_id, writers.dtype)
    write_manifest(out, manifest)
    return manifest
