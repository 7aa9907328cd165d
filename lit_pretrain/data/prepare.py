"""`lit-pretrain prepare`: read -> clean/filter -> deduplicate -> split -> tokenize with EOS -> litdata shards.

Stages stream: documents are read once, spooled to disk after filtering and deduplication, then read back
for tokenizer training and tokenization, so memory stays flat whatever the corpus size.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from lit_pretrain.data.dedup import DedupConfig, Deduplicator
from lit_pretrain.data.filters import CONTROL_CHARS_REMOVED, NFC_CHANGED, DocumentFilter, FilterConfig
from lit_pretrain.data.manifest import FORMAT_VERSION, TOKENIZER_NAME, print_summary, write_manifest
from lit_pretrain.data.progress import Progress
from lit_pretrain.data.shards import TokenFileWriter, write_shards
from lit_pretrain.data.sources import Document, ReadReport, documents_for
from lit_pretrain.data.tokenizer import (
    find_eos_id,
    find_special_id,
    load_tokenizer,
    tokenizer_sha256,
    train_bpe_tokenizer,
)

SPLITS = ("train", "val")
CLEANING_COUNTERS = (NFC_CHANGED, CONTROL_CHARS_REMOVED)
ENCODE_BATCH_DOCUMENTS = 512
# Longer documents are encoded in pieces cut at line breaks: one huge string would make the tokenizer
# hold all its intermediate state at once.
MAX_ENCODE_CHARS = 1_000_000


def in_validation(document_id: str, val_fraction: float) -> bool:
    """Whether a document is held out, decided by a hash of its id alone (stable across runs)."""
    return _id_fraction(document_id) < val_fraction


def _id_fraction(document_id: str) -> float:
    return int(hashlib.sha256(document_id.encode()).hexdigest()[:16], 16) / 2**64


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every token id."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _empty_source_stats() -> dict[str, Any]:
    return {
        "documents_in": 0,
        "documents_kept": 0,
        "exact_duplicates": 0,
        "near_duplicates": 0,
        "malformed_records": 0,
        "filtered": {},
        "cleaned": {},
        "train": {"documents": 0, "tokens": 0},
        "val": {"documents": 0, "tokens": 0},
    }


def iter_documents(
    inputs: Sequence[str],
    report: ReadReport,
    max_documents_per_source: int | None = None,
    text_field: str = "text",
    id_field: str | None = None,
) -> Iterator[tuple[str, str, Document | None]]:
    """(input spec, source name, document) in input order; `None` marks a source's end.

    Empty documents are counted in `report` and not yielded.
    """
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
                count += 1
                yield spec, name, document
            yield spec, name, None


def read_documents(
    inputs: Sequence[str],
    max_documents_per_source: int | None,
    report: ReadReport | None = None,
    text_field: str = "text",
    id_field: str | None = None,
) -> list[Document]:
    """All non-empty documents of all inputs, in input order (unfiltered); for tests and inspection."""
    report = report if report is not None else ReadReport()
    documents = [
        d
        for _, _, d in iter_documents(inputs, report, max_documents_per_source, text_field, id_field)
        if d is not None
    ]
    _check_unique_ids(documents)
    return documents


def _check_unique_ids(documents: Sequence[Document]) -> None:
    seen: set[str] = set()
    for document in documents:
        if document.id in seen:
            raise ValueError(
                f"document id {document.id!r} ({document.origin}) occurs twice: the same input was given "
                "twice, or --id_field is not unique"
            )
        seen.add(document.id)


def split_documents(documents: list[Document], val_fraction: float) -> dict[str, list[Document]]:
    """Train and validation lists, by the same rule `prepare` applies."""
    fallback = _fallback_validation_id([d.id for d in documents], val_fraction)
    split: dict[str, list[Document]] = {"train": [], "val": []}
    for document in documents:
        held_out = in_validation(document.id, val_fraction) or document.id == fallback
        split["val" if held_out else "train"].append(document)
    return split


def _fallback_validation_id(ids: Sequence[str], val_fraction: float) -> str | None:
    """With val_fraction > 0 and no id hashed below it (a small corpus), the lowest-hash id is held out."""
    if val_fraction <= 0 or not ids or any(in_validation(i, val_fraction) for i in ids):
        return None
    return min(ids, key=_id_fraction)


class _Spool:
    """Kept documents of one source on disk as JSON lines, in input order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: list[str] = []
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, document: Document) -> None:
        self._file.write(json.dumps({"id": document.id, "text": document.text}, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._file.close()

    def read(self) -> Iterator[tuple[str, str]]:
        with open(self.path, encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                yield record["id"], record["text"]


def _split_long_text(text: str) -> list[str]:
    """Pieces of at most MAX_ENCODE_CHARS, cut after a line break where there is one."""
    pieces, start = [], 0
    while len(text) - start > MAX_ENCODE_CHARS:
        cut = text.rfind("\n", start, start + MAX_ENCODE_CHARS) + 1
        if cut <= start:
            cut = start + MAX_ENCODE_CHARS
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def _encode_documents(
    tokenizer, texts: list[str], eos_id: int, bos_id: int | None, dtype: np.dtype
) -> list[np.ndarray]:
    """Ids of each text, BOS first if given and EOS last; `encode_batch` runs on all cores."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    pieces, owners = [], []
    for index, text in enumerate(texts):
        for piece in _split_long_text(text) if len(text) > MAX_ENCODE_CHARS else [text]:
            pieces.append(piece)
            owners.append(index)
    ids_per_text: list[list[int]] = [[] if bos_id is None else [bos_id] for _ in texts]
    for owner, encoding in zip(owners, encode(pieces, add_special_tokens=False), strict=True):
        ids_per_text[owner].extend(encoding.ids)
    for ids in ids_per_text:
        ids.append(eos_id)
    return [np.asarray(ids, dtype=dtype) for ids in ids_per_text]


def _as_config(value, config_type):
    if value is None:
        return config_type()
    if isinstance(value, config_type):
        return value
    return config_type.from_dict(dict(value))


def prepare(
    inputs: Sequence[str],
    output_dir: str | Path,
    tokenizer: str | Path | None = None,
    vocab_size: int = 8192,
    eos_token: str | None = None,
    bos_token: str | None = None,
    val_fraction: float = 0.01,
    max_documents_per_source: int | None = None,
    chunk_tokens: int = 2**21,
    overwrite: bool = False,
    text_field: str = "text",
    id_field: str | None = None,
    filters: FilterConfig | dict | None = None,
    dedup: DedupConfig | dict | None = None,
    val_inputs: Sequence[str] = (),
) -> dict[str, Any]:
    """Prepare `inputs` into per-source train/val litdata shards, `tokenizer.json` and `manifest.json`.

    Documents of `val_inputs` all go to validation, each of those inputs being its own named source.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists: pass --overwrite true to replace it")
    if not inputs:
        raise ValueError("no inputs: name files, directories, globs, or python-stdlib")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    filter_config = _as_config(filters, FilterConfig)
    dedup_config = _as_config(dedup, DedupConfig)
    # Everything is written beside the target and renamed at the end: a half-written dataset never
    # sits where training looks for one, and a rerun after a crash starts from scratch.
    partial_dir = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(partial_dir, ignore_errors=True)
    (partial_dir / "_work").mkdir(parents=True)
    try:
        manifest = _prepare_into(
            partial_dir,
            inputs,
            tokenizer,
            vocab_size,
            eos_token,
            bos_token,
            val_fraction,
            max_documents_per_source,
            chunk_tokens,
            text_field,
            id_field,
            filter_config,
            dedup_config,
            val_inputs,
        )
    except BaseException:
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise
    shutil.rmtree(partial_dir / "_work")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    partial_dir.rename(output_dir)
    print(f"[prepare] done: {output_dir} (manifest.json, tokenizer.json, train/, val/)", flush=True)
    print_summary(manifest)
    return manifest


def _prepare_into(
    out: Path,
    inputs: Sequence[str],
    tokenizer_path: str | Path | None,
    vocab_size: int,
    eos_token: str | None,
    bos_token: str | None,
    val_fraction: float,
    max_documents_per_source: int | None,
    chunk_tokens: int,
    text_field: str,
    id_field: str | None,
    filter_config: FilterConfig,
    dedup_config: DedupConfig,
    val_inputs: Sequence[str],
) -> dict[str, Any]:
    work = out / "_work"
    report = ReadReport()
    deduplicator = Deduplicator(dedup_config)
    filters: dict[str, DocumentFilter] = {}
    stats: dict[str, dict[str, Any]] = {}
    spools: dict[str, _Spool] = {}
    code_sources: set[str] = set()
    seen_ids: set[str] = set()
    val_ids_seen = False
    kept_ids: list[str] = []

    # 1. Read, clean, filter, deduplicate; spool what is kept.
    progress = Progress("read, filter, dedup")
    malformed_before = 0
    all_inputs = list(inputs) + list(val_inputs)
    val_only_sources: set[str] = set()
    documents = iter_documents(all_inputs, report, max_documents_per_source, text_field, id_field)
    for spec, name, document in documents:
        if spec in val_inputs:
            if name in stats and name not in val_only_sources:
                raise ValueError(
                    f"validation input {spec!r} has the same source name {name!r} as a training input"
                )
            val_only_sources.add(name)
        source = stats.setdefault(name, _empty_source_stats())
        if document is None:  # end of a source: attribute its malformed records, check it had documents
            source["malformed_records"] += report.malformed_records - malformed_before
            malformed_before = report.malformed_records
            if source["documents_in"] == 0:
                raise ValueError(
                    f"source {name!r} (input {spec!r}) has no documents with text: nothing to train on"
                    + _malformed_hint(report)
                )
            continue
        source["documents_in"] += 1
        progress.update(1, len(document.text))
        if document.id in seen_ids:
            raise ValueError(
                f"document id {document.id!r} ({document.origin}) occurs twice: the same input was given "
                "twice, or --id_field is not unique"
            )
        seen_ids.add(document.id)
        document_filter = filters.setdefault(name, DocumentFilter(filter_config))
        text = document_filter(document.text, document.is_code)
        if text is None:
            continue
        duplicate = deduplicator.check(text)
        if duplicate is not None:
            source[f"{duplicate}_duplicates"] += 1
            continue
        if document.is_code:
            code_sources.add(name)
        source["documents_kept"] += 1
        if name not in val_only_sources:
            kept_ids.append(document.id)
            val_ids_seen = val_ids_seen or in_validation(document.id, val_fraction)
        if name not in spools:
            spools[name] = _Spool(work / f"{len(spools):04d}.jsonl")
        spools[name].write(Document(document.id, name, document.origin, text, document.is_code))
    progress.close()
    for name, document_filter in filters.items():
        stats[name]["filtered"] = _drops(document_filter)
        stats[name]["cleaned"] = {
            k: v for k, v in document_filter.counts.items() if k in CLEANING_COUNTERS and v
        }
    for spool in spools.values():
        spool.close()
    kept = sum(s["documents_kept"] for s in stats.values())
    if kept == 0:
        dropped = {k: v for f in filters.values() for k, v in _drops(f).items()}
        dropped.update({k: v for k, v in deduplicator.counts.items() if v})
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(dropped.items())) or "none"
        raise ValueError(
            f"no documents left after filtering and deduplication ({report.documents_in:,} read; dropped by: "
            f"{reasons}): loosen those settings with --filters / --dedup (see docs/data.md) or check the inputs"
        )
    fallback = None if val_ids_seen or val_inputs else _fallback_validation_id(kept_ids, val_fraction)
    del kept_ids, seen_ids

    def held_out(document_id: str, source: str) -> bool:
        return (
            source in val_only_sources or in_validation(document_id, val_fraction) or document_id == fallback
        )

    # 2. Tokenizer: trained on the training documents only, or loaded.
    started = time.perf_counter()
    if tokenizer_path is None:
        train_texts = (
            text
            for name, spool in spools.items()
            for doc_id, text in spool.read()
            if not held_out(doc_id, name)
        )
        bpe = train_bpe_tokenizer(train_texts, vocab_size)
        _log(f"trained a byte-level BPE tokenizer with {bpe.get_vocab_size():,} tokens", started)
    else:
        bpe = load_tokenizer(tokenizer_path)
        _log(f"loaded tokenizer {tokenizer_path} with {bpe.get_vocab_size():,} tokens", started)
    eos_id = find_eos_id(bpe, eos_token)
    bos_id = find_special_id(bpe, bos_token) if bos_token else None
    vocab = bpe.get_vocab_size()
    dtype = token_dtype(vocab)
    bpe.save(str(out / TOKENIZER_NAME))

    # 3. Tokenize each source into train/val token files, then write its shards.
    progress = Progress("tokenize", total=kept)
    for index, (name, spool) in enumerate(spools.items()):
        writers = {split: TokenFileWriter(work / f"{index:04d}.{split}.bin", dtype) for split in SPLITS}
        batch: list[tuple[str, str]] = []
        route = partial(_route, held_out=held_out, source=name)
        for record in spool.read():
            batch.append(record)
            if len(batch) == ENCODE_BATCH_DOCUMENTS:
                _tokenize_batch(bpe, batch, writers, route, eos_id, bos_id, dtype, progress)
                batch = []
        if batch:
            _tokenize_batch(bpe, batch, writers, route, eos_id, bos_id, dtype, progress)
        for split, writer in writers.items():
            writer.close()
            stats[name][split] = {"documents": writer.documents, "tokens": writer.tokens}
            if writer.tokens:
                write_shards(writer.path, dtype, out / split / name, chunk_tokens)
            writer.path.unlink()
    progress.close()

    totals = {
        split: {k: sum(s[split][k] for s in stats.values()) for k in ("documents", "tokens")}
        for split in SPLITS
    }
    filtered_total: dict[str, int] = {}
    cleaned_total: dict[str, int] = {}
    for source in stats.values():
        for key, count in source["filtered"].items():
            filtered_total[key] = filtered_total.get(key, 0) + count
        for key, count in source.get("cleaned", {}).items():
            cleaned_total[key] = cleaned_total.get(key, 0) + count
    manifest = {
        "format_version": FORMAT_VERSION,
        "inputs": list(inputs),
        "val_inputs": list(val_inputs),
        "tokenizer_sha256": tokenizer_sha256(bpe),
        "vocab_size": vocab,
        "eos_id": eos_id,
        "bos_id": bos_id,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "documents_kept": kept,
        "exact_duplicates": deduplicator.counts["exact_duplicates"],
        "near_duplicates": deduplicator.counts["near_duplicates"],
        "filtered": dict(sorted(filtered_total.items())),
        "cleaned": dict(sorted(cleaned_total.items())),
        "tokens_train": totals["train"]["tokens"],
        "tokens_val": totals["val"]["tokens"],
        "splits": totals,
        "sources": {name: dict(s, is_code=name in code_sources) for name, s in stats.items()},
        "filter_config": asdict(filter_config),
        "dedup_config": asdict(dedup_config),
        **report.to_manifest(),
    }
    write_manifest(out, manifest)
    return manifest


def _route(document_id: str, held_out, source: str) -> str:
    return "val" if held_out(document_id, source) else "train"


def _tokenize_batch(bpe, batch, writers, route, eos_id, bos_id, dtype, progress: Progress) -> None:
    texts = [text for _, text in batch]
    for (doc_id, text), ids in zip(batch, _encode_documents(bpe, texts, eos_id, bos_id, dtype), strict=True):
        writers[route(doc_id)].write(ids)
        progress.update(1, len(text))


def _drops(document_filter: DocumentFilter) -> dict[str, int]:
    """Documents each filter dropped (not the cleaning counters, which count rewrites)."""
    return {k: v for k, v in sorted(document_filter.counts.items()) if v and k not in CLEANING_COUNTERS}


def _malformed_hint(report: ReadReport) -> str:
    if not report.malformed_records:
        return ""
    return f" ({report.malformed_records} malformed records, first: {report.malformed_locations[0]})"


def _log(message: str, since: float) -> None:
    print(f"[prepare {time.perf_counter() - since:6.1f}s] {message}", flush=True)
