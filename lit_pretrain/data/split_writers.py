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
    """One append-only token file per (source, split) under `work`, in the order documents arrive."""

    def __init__(self, work: Path, dtype: np.dtype, held_out: Callable[[str, str], bool]) -> None:
        self.work, self.dtype, self.held_out = work, dtype, held_out
        self.writers: dict[tuple[str, str], TokenFileWriter] = {}
        self.lowest_train: LowestTrain | None = None

    def writer(self, name: str, split: str) -> TokenFileWriter:
        """The token file of (source, split), opened at its first use."""
        if (name, split) not in self.writers:
            path = self.work / f"{len(self.writers):04d}.{split}.bin"
            self.writers[name, split] = TokenFileWriter(path, self.dtype)
        return self.writers[name, split]

    def write(self, name: str, document_id: str, ids: np.ndarray) -> None:
        """Append one document's ids to its source's split."""
        split = "val" if self.held_out(document_id, name) else "train"
        writer = self.writer(name, split)
        if split == "train":
            self._offer_lowest((id_fraction(document_id), name, writer.tokens, len(ids)))
        writer.write(ids)

    def append(
        self, name: str, split: str, token_file: Path, documents: int, lowest: LowestTrain | None
    ) -> None:
        """Append another writer's closed token file of (source, split) holding `documents` documents.

        `lowest` is that writer's lowest-hash training document, its offset counted in that file.
        """
        writer = self.writer(name, split)
        if lowest is not None:
            self._offer_lowest((lowest[0], lowest[1], writer.tokens + lowest[2], lowest[3]))
        writer.append_file(token_file, documents)

    def _offer_lowest(self, candidate: LowestTrain) -> None:
        # Strictly lower: of equal hashes the first document in input order is the one.
        if self.lowest_train is None or candidate[0] < self.lowest_train[0]:
            self.lowest_train = candidate

    def tokens(self, split: str) -> int:
        """Tokens written to `split` over all sources."""
        return sum(w.tokens for (_, s), w in self.writers.items() if s == split)

    def hold_out_lowest_train_document(self) -> None:
        """A small corpus may hash no document below val_fraction: move the lowest-hash one to validation."""
        _, name, start, length = self.lowest_train
        train = self.writers[name, "train"]
        train.close()
        tokens = np.fromfile(train.path, dtype=self.dtype)
        self.writer(name, "val").write(tokens[start : start + length])
        rest = np.concatenate([tokens[:start], tokens[start + length :]])
        replacement = TokenFileWriter(train.path, self.dtype)
        if len(rest):
            replacement.write(rest)
        replacement.documents = train.documents - 1
        self.writers[name, "train"] = replacement

    def close(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Close every token file; (documents, tokens) per (source, split)."""
        for writer in self.writers.values():
            writer.close()
        return {key: (w.documents, w.tokens) for key, w in self.writers.items()}

    def write_shards(self, out: Path, chunk_tokens: int) -> None:
        """litdata shards of every non-empty (source, split) under out/SPLIT/SOURCE; the token files go."""
        for (name, split), writer in self.writers.items():
            if writer.tokens:
                write_shards(writer.path, self.dtype, out / split / name, chunk_tokens)
            writer.path.unlink()


def finish_dataset(
    out: Path, ledger: Ledger, writers: SplitWriters, bpe: Any, eos_id: int, bos_id: int | None
) -> dict[str, Any]:
    """Every kept document is in `writers`: hold out validation if none was, write shards and manifest."""
    options = ledger.options
    if options.val_fraction > 0 and not ledger.val_inputs and not writers.tokens("val"):
        writers.hold_out_lowest_train_document()
    if not writers.tokens("train"):
        raise ValueError(
            f"no training documents are left after holding out validation data "
            f"(val_fraction={options.val_fraction}, val_inputs={ledger.val_inputs}): add documents"
        )
    for (name, split), (documents, tokens) in writers.close().items():
        ledger.stats[name][split] = {"documents": documents, "tokens": tokens}
    writers.write_shards(out, options.chunk_tokens)
    manifest = ledger.manifest(bpe, eos_id, bos_id, writers.dtype)
    write_manifest(out, manifest)
    return manifest
