"""`lit-pretrain prepare`: documents -> tokenizer -> token stream with EOS -> litdata shards + manifest."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lit_pretrain.data.manifest import FORMAT_VERSION, TOKENIZER_NAME, write_manifest
from lit_pretrain.data.sources import Document, ReadReport, documents_for
from lit_pretrain.data.tokenizer import (
    find_eos_id,
    load_tokenizer,
    tokenizer_sha256,
    train_bpe_tokenizer,
)

SPLITS = ("train", "val")
# Pieces handed to litdata; small next to a chunk so chunks fill up evenly.
PIECE_TOKENS = 4096
ENCODE_BATCH_DOCUMENTS = 512


def in_validation(document_id: str, val_fraction: float) -> bool:
    """Whether a document is held out, decided by a hash of its id alone (stable across runs)."""
    return _id_fraction(document_id) < val_fraction


def _id_fraction(document_id: str) -> float:
    return int(hashlib.sha256(document_id.encode()).hexdigest()[:16], 16) / 2**64


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every token id."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def read_documents(
    inputs: Sequence[str],
    max_documents_per_source: int | None,
    report: ReadReport | None = None,
    text_field: str = "text",
    id_field: str | None = None,
) -> list[Document]:
    """All documents of all inputs, in input order; a source that yields nothing is an error."""
    report = report if report is not None else ReadReport()
    documents: list[Document] = []
    for spec in inputs:
        for name, stream in documents_for(spec, report, text_field, id_field):
            count = 0
            for document in stream:
                if max_documents_per_source is not None and count >= max_documents_per_source:
                    break
                report.documents_in += 1
                if not document.text.strip():
                    report.empty_documents += 1
                    continue
                documents.append(document)
                count += 1
            if count == 0:
                raise ValueError(
                    f"source {name!r} (input {spec!r}) has no documents with text: nothing to train on"
                    + _malformed_hint(report)
                )
    seen: set[str] = set()
    for document in documents:
        if document.id in seen:
            raise ValueError(
                f"document id {document.id!r} ({document.origin}) occurs twice: the same input was given "
                "twice, or --id_field is not unique"
            )
        seen.add(document.id)
    return documents


def _malformed_hint(report: ReadReport) -> str:
    if not report.malformed_records:
        return ""
    return f" ({report.malformed_records} malformed records, first: {report.malformed_locations[0]})"


def split_documents(documents: list[Document], val_fraction: float) -> dict[str, list[Document]]:
    """Train and validation lists; with val_fraction > 0 the validation list is never empty."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    split = {"train": [], "val": []}
    for document in documents:
        split["val" if in_validation(document.id, val_fraction) else "train"].append(document)
    if val_fraction > 0 and not split["val"]:
        # A small corpus can hash no document below the threshold: hold out the lowest-hash one instead.
        lowest = min(split["train"], key=lambda d: _id_fraction(d.id))
        split["train"].remove(lowest)
        split["val"].append(lowest)
    if not split["train"]:
        raise ValueError(f"no training documents are left after holding out val_fraction={val_fraction}")
    return split


def _encode(tokenizer, documents: list[Document], eos_id: int, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Token ids of each document followed by EOS; `encode_batch` runs on all cores."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    for start in range(0, len(documents), ENCODE_BATCH_DOCUMENTS):
        batch = documents[start : start + ENCODE_BATCH_DOCUMENTS]
        for encoding in encode([d.text for d in batch], add_special_tokens=False):
            ids = np.empty(len(encoding.ids) + 1, dtype=dtype)
            ids[:-1] = encoding.ids
            ids[-1] = eos_id
            yield ids


class _TokenPieces:
    """litdata `optimize` worker function: yields fixed-size pieces of a token file (picklable)."""

    def __init__(self, path: str, dtype: str) -> None:
        self.path = path
        self.dtype = dtype

    def __call__(self, start: int) -> Iterator[torch.Tensor]:
        tokens = np.load(self.path, mmap_mode="r")
        yield torch.from_numpy(np.array(tokens[start : start + PIECE_TOKENS], dtype=self.dtype))


def _write_shards(tokens: np.ndarray, split_dir: Path, chunk_tokens: int) -> None:
    from litdata import optimize
    from litdata.streaming.item_loader import TokensLoader

    token_file = split_dir.parent / f"_{split_dir.name}_tokens.npy"
    np.save(token_file, tokens)
    # The tokenizer's threads are done; children only read the memmap, so silence the fork warning.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    optimize(
        fn=_TokenPieces(str(token_file), tokens.dtype.name),
        inputs=list(range(0, len(tokens), PIECE_TOKENS)),
        output_dir=str(split_dir),
        chunk_size=chunk_tokens,
        item_loader=TokensLoader(),
        # One writer keeps chunk order, and so the shards' bytes, identical across runs.
        num_workers=1,
        # fork: the worker needs nothing re-imported, and spawn would re-run an unguarded caller script.
        start_method="fork" if sys.platform == "linux" else None,
        verbose=False,
    )
    token_file.unlink()
    _make_index_reproducible(split_dir)


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


def prepare(
    inputs: Sequence[str],
    output_dir: str | Path,
    tokenizer: str | Path | None = None,
    vocab_size: int = 8192,
    eos_token: str | None = None,
    val_fraction: float = 0.01,
    max_documents_per_source: int | None = None,
    chunk_tokens: int = 2**21,
    overwrite: bool = False,
    text_field: str = "text",
    id_field: str | None = None,
) -> dict[str, Any]:
    """Prepare `inputs` into train/val litdata shards, `tokenizer.json` and `manifest.json` in `output_dir`."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists: pass --overwrite true to replace it")
    if not inputs:
        raise ValueError("no inputs: name files, directories, globs, or python-stdlib")
    # Everything is written beside the target and renamed at the end: a half-written dataset never
    # sits where training looks for one.
    partial_dir = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(partial_dir, ignore_errors=True)
    partial_dir.mkdir(parents=True)

    started = time.perf_counter()
    report = ReadReport()
    documents = read_documents(inputs, max_documents_per_source, report, text_field, id_field)
    characters = sum(len(d.text) for d in documents)
    _log(f"read {len(documents):,} documents ({characters / 1e6:.1f}M characters)", started)

    splits = split_documents(documents, val_fraction)
    stage = time.perf_counter()
    if tokenizer is None:
        texts = (d.text for d in splits["train"])
        bpe = train_bpe_tokenizer(texts, vocab_size, length=len(splits["train"]))
        _log(f"trained a byte-level BPE tokenizer with {bpe.get_vocab_size():,} tokens", stage)
    else:
        bpe = load_tokenizer(tokenizer)
        _log(f"loaded tokenizer {tokenizer} with {bpe.get_vocab_size():,} tokens", stage)
    eos_id = find_eos_id(bpe, eos_token)
    vocab = bpe.get_vocab_size()
    dtype = token_dtype(vocab)
    bpe.save(str(partial_dir / TOKENIZER_NAME))

    per_source: dict[str, dict[str, dict[str, int]]] = {}
    per_split: dict[str, dict[str, int]] = {}
    for split_name in SPLITS:
        stage = time.perf_counter()
        split_docs = splits[split_name]
        arrays = list(_encode(bpe, split_docs, eos_id, dtype))
        for document, ids in zip(split_docs, arrays, strict=True):
            counts = per_source.setdefault(
                document.source, {s: {"documents": 0, "tokens": 0} for s in SPLITS}
            )
            counts[split_name]["documents"] += 1
            counts[split_name]["tokens"] += len(ids)
        tokens = np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)
        per_split[split_name] = {"documents": len(split_docs), "tokens": int(len(tokens))}
        elapsed = time.perf_counter() - stage
        _log(
            f"tokenized {split_name}: {len(tokens):,} tokens ({len(tokens) / max(elapsed, 1e-9):,.0f} tokens/s)",
            stage,
        )
        if len(tokens):
            stage = time.perf_counter()
            _write_shards(tokens, partial_dir / split_name, chunk_tokens)
            _log(f"wrote {split_name} shards to {output_dir / split_name}", stage)

    manifest = {
        "format_version": FORMAT_VERSION,
        "inputs": list(inputs),
        "tokenizer_sha256": tokenizer_sha256(bpe),
        "vocab_size": vocab,
        "eos_id": eos_id,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "splits": per_split,
        "sources": per_source,
        **report.to_manifest(),
    }
    write_manifest(partial_dir, manifest)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    partial_dir.rename(output_dir)
    _log(f"done: {output_dir} (manifest.json, tokenizer.json, train/, val/)", started)
    _print_summary(manifest)
    _print_read_problems(manifest)
    return manifest


def _log(message: str, since: float) -> None:
    print(f"[prepare {time.perf_counter() - since:6.1f}s] {message}", flush=True)


def _print_read_problems(manifest: dict[str, Any]) -> None:
    malformed = manifest["malformed_records"]
    print(
        f"documents read: {manifest['documents_in']:,}   empty: {manifest['empty_documents']:,}   "
        f"invalid UTF-8 (replaced): {manifest['invalid_utf8_documents']:,}   malformed records: {malformed['count']:,}"
    )
    for location in malformed["first"]:
        print(f"  malformed: {location}")


def _print_summary(manifest: dict[str, Any]) -> None:
    rows = [("source", "train docs", "train tokens", "val docs", "val tokens")]
    for name, counts in sorted(manifest["sources"].items()):
        train, val = counts["train"], counts["val"]
        rows.append(
            (
                name,
                f"{train['documents']:,}",
                f"{train['tokens']:,}",
                f"{val['documents']:,}",
                f"{val['tokens']:,}",
            )
        )
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    rows.append(
        (
            "total",
            f"{train['documents']:,}",
            f"{train['tokens']:,}",
            f"{val['documents']:,}",
            f"{val['tokens']:,}",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
