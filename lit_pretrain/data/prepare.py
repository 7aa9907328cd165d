"""`lit-pretrain prepare`: read -> clean/filter -> deduplicate -> split -> tokenize with EOS -> litdata shards.

Stages stream: documents are read once, spooled to disk after filtering and deduplication, then read back
for tokenizer training and tokenization, so memory stays flat whatever the corpus size. Encoding is in
encode.py; reading, cleaning, deduplication, tokenizer and shards each have their own module too.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lit_pretrain.data.decontaminate import DecontaminationConfig, DecontaminationIndex
from lit_pretrain.data.dedup import DedupConfig
from lit_pretrain.data.encode import encode_records
from lit_pretrain.data.engine import prepare_in_tasks
from lit_pretrain.data.filters import FilterConfig
from lit_pretrain.data.ledger import Ledger, id_fraction, in_validation
from lit_pretrain.data.manifest import TOKENIZER_NAME
from lit_pretrain.data.progress import Progress
from lit_pretrain.data.sources import Document, ReadReport, SeenIds, check_unique_id, documents_for
from lit_pretrain.data.split_writers import SplitWriters, finish_dataset
from lit_pretrain.data.tokenizer import load_tokenizer, train_bpe_tokenizer
from lit_pretrain.data.workers import (
    BATCHES_IN_FLIGHT_PER_PROCESS,
    Encoder,
    ScreenedBatch,
    Screener,
    ScreenItem,
    batched,
    ordered_map,
    screen_in_worker,
    start_pool,
)

__all__ = ["PrepareOptions", "in_validation", "prepare", "read_documents", "split_documents"]

log = logging.getLogger(__name__)

# (source name, document id, cleaned text or token ids) of a kept document.
_Kept = tuple[str, str, Any]


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
    documents, seen_ids = [], SeenIds()
    for _, _, document in iter_documents(inputs, report, max_documents_per_source, text_field, id_field):
        if document is not None:
            check_unique_id(document, seen_ids)
            documents.append(document)
    return documents


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
    return min(ids, key=id_fraction)


class _Spool:
    """Kept documents of one source on disk as JSON lines, in input order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, document_id: str, text: str) -> None:
        self._file.write(json.dumps({"id": document_id, "text": text}, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._file.close()

    def read(self) -> Iterator[tuple[str, str]]:
        with open(self.path, encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                yield record["id"], record["text"]


@dataclass(frozen=True)
class PrepareOptions:
    """How a prepare run reads, cleans, splits and tokenizes; the inputs and output are given apart."""

    # A tokenizer.json (or its directory) to reuse; None trains a byte-level BPE of `vocab_size` tokens.
    tokenizer: str | Path | None = None
    vocab_size: int = 8192
    # The end-of-document token, when it is not a standard spelling; a BOS token only when given.
    eos_token: str | None = None
    bos_token: str | None = None
    # Share of documents held out for validation, by a hash of their id.
    val_fraction: float = 0.01
    max_documents_per_source: int | None = None
    # Tokens per litdata chunk file.
    chunk_tokens: int = 2**21
    # JSONL, Parquet and datasets inputs: dotted paths of the text and of a unique id.
    text_field: str = "text"
    id_field: str | None = None
    filters: FilterConfig = field(default_factory=FilterConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


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
    filters: FilterConfig | Mapping[str, Any] | None = None,
    dedup: DedupConfig | Mapping[str, Any] | None = None,
    val_inputs: Sequence[str] = (),
    num_proc: int = 1,
    decontamination: DecontaminationConfig | Mapping[str, Any] | None = None,
    tasks: int | None = None,
    work_dir: str | Path | None = None,
    slurm: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Prepare `inputs` into per-source train/val litdata shards, `tokenizer.json` and `manifest.json`.

    Documents of `val_inputs` all go to validation, each of those inputs being its own named source.
    `filters`, `dedup` and `decontamination` may be given as plain mappings (YAML sections). With `num_proc` > 1, cleaning,
    filters, dedup keys and tokenization run in that many processes; the output is the same byte for
    byte. With `tasks`, the work runs as phases of that many tasks (`num_proc` at a time) on datatrove's
    executor, keeping its state in `work_dir` so that a rerun redoes only unfinished tasks (engine.py);
    the output is again the same byte for byte. With `slurm` as well (SlurmPipelineExecutor's settings),
    the phases are submitted as dependent job arrays and None is returned. Returns the manifest.
    """
    if isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1:
        raise ValueError(f"num_proc must be a whole number of processes, 1 or more, got {num_proc!r}")
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists: pass --overwrite to replace it")
    if not inputs:
        raise ValueError("no inputs: name files, directories, globs, or python-stdlib")
    options = PrepareOptions(
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        eos_token=eos_token,
        bos_token=bos_token,
        val_fraction=val_fraction,
        max_documents_per_source=max_documents_per_source,
        chunk_tokens=chunk_tokens,
        text_field=text_field,
        id_field=id_field,
        filters=_as_config(filters, FilterConfig),
        dedup=_as_config(dedup, DedupConfig),
        decontamination=_as_config(decontamination, DecontaminationConfig),
    )
    # Built once, before any output: an unreadable or malformed evaluation file fails the run at once.
    index = DecontaminationIndex(options.decontamination) if options.decontamination.enabled else None
    if tasks is not None:
        return prepare_in_tasks(
            inputs, output_dir, options, tasks, num_proc, work_dir, val_inputs, overwrite, slurm
        )
    if slurm is not None:
        raise ValueError("slurm settings need tasks: pass --tasks N with --slurm")
    # Everything is written beside the target and renamed at the end: a half-written dataset never
    # sits where training looks for one, and a rerun after a crash starts from scratch.
    partial_dir = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(partial_dir, ignore_errors=True)
    (partial_dir / "_work").mkdir(parents=True)
    try:
        manifest = _Pipeline(partial_dir, inputs, val_inputs, options, num_proc, index).run()
    except BaseException:
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise
    shutil.rmtree(partial_dir / "_work")
    if output_dir.exists():
        shutil.rmtree(output_dir)
    partial_dir.rename(output_dir)
    log.info("done: %s (manifest.json, tokenizer.json, train/, val/)", output_dir)
    return manifest


def _as_config(value: Any, config_type: type[Any]) -> Any:
    """`config_type` from None (the defaults), an instance, or a mapping of its fields."""
    if value is None:
        return config_type()
    if isinstance(value, config_type):
        return value
    return config_type.from_dict(value)


class _Pipeline:
    """One prepare run: stage 1 reads, cleans, filters and deduplicates; stage 2 tokenizes and writes.

    With a given tokenizer both stages run at once: in one process, a thread feeds kept documents to the
    tokenizer, whose Rust threads encode while Python filters the next ones; with worker processes, each
    encodes the documents it screened. Without one, kept documents are spooled to disk, a BPE is trained
    on the spooled training documents, and the spool is tokenized.
    """

    def __init__(
        self,
        out: Path,
        inputs: Sequence[str],
        val_inputs: Sequence[str],
        options: PrepareOptions,
        num_proc: int = 1,
        decontamination: DecontaminationIndex | None = None,
    ):
        self.out = out
        self.num_proc = num_proc
        self.decontamination = decontamination
        # Worker processes for screening and encoding (None: all in this process), started by run().
        self.pool: Executor | None = None
        self.work = out / "_work"
        self.inputs = list(inputs)
        self.val_inputs = list(val_inputs)
        self.options = options
        self.ledger = Ledger(inputs, val_inputs, options, decontamination)

    def _read_documents(self, progress: Progress) -> Iterator[tuple[str, Document]]:
        """(source, document) of every non-empty document in input order, counted in the ledger."""
        options, ledger = self.options, self.ledger
        malformed_before = 0
        documents = iter_documents(
            self.inputs + self.val_inputs,
            ledger.report,
            options.max_documents_per_source,
            options.text_field,
            options.id_field,
        )
        for spec, name, document in documents:
            if document is None:  # end of a source: attribute its malformed records, check it had documents
                ledger.end_source(spec, name, ledger.report.malformed_records - malformed_before)
                malformed_before = ledger.report.malformed_records
                continue
            progress.update(1, len(document.text))
            ledger.read(spec, name, document)
            yield name, document

    def kept_documents(self, screen: Callable[[list[ScreenItem]], ScreenedBatch]) -> Iterator[_Kept]:
        """Stage 1: (source, document id, content) for every document that survives cleaning, filters and
        dedup; the content is its cleaned text, or its ids if the workers encode as they screen.

        Screening (cleaning, filters, dedup keys) runs on batches, in the worker processes if there are
        any; the duplicate decisions are taken here, in input order.
        """
        progress = Progress("read, filter, dedup", logger=log)
        batches = batched(self._read_documents(progress), lambda item: item[1].text)
        payloads = ((batch, [(name, d.is_code, d.text) for name, d in batch]) for batch in batches)
        in_flight = BATCHES_IN_FLIGHT_PER_PROCESS * self.num_proc
        for batch, screened in ordered_map(screen, payloads, self.pool, in_flight):
            self.ledger.screened_counts(screened.counts, screened.languages)
            decided = [
                (name, document.id, document.is_code, length, match)
                for (name, document), (length, match) in zip(batch, screened.documents, strict=True)
            ]
            passed = [item for item in decided if item[3] is not None and item[4] is None]
            kept = self.ledger.decide(decided, screened.keys)
            for (name, document_id, *_), content, keep in zip(passed, screened.passed, kept, strict=True):
                if keep:
                    yield name, document_id, content
        progress.close()
        self.ledger.finish_screening()

    def run(self) -> dict[str, Any]:
        """Both stages, the shards and the manifest; returns the manifest."""
        options = self.options
        started = time.perf_counter()
        bpe = encoder = None
        if options.tokenizer is not None:
            bpe = load_tokenizer(options.tokenizer)
            log.info(
                "loaded tokenizer %s with %s tokens in %.1fs",
                options.tokenizer,
                f"{bpe.get_vocab_size():,}",
                time.perf_counter() - started,
            )
            bpe.save(str(self.out / TOKENIZER_NAME))
            encoder = self._encoder(bpe)
        if self.num_proc > 1:
            self.pool = start_pool(
                self.num_proc, options.filters, options.dedup, self.decontamination, encoder
            )
        try:
            return self._run(bpe, encoder)
        finally:
            if self.pool is not None:
                self.pool.shutdown(cancel_futures=True)

    def _encoder(self, bpe: Any) -> Encoder:
        """How documents are encoded with the tokenizer `bpe`, saved in the output."""
        options = self.options
        return Encoder.for_tokenizer(self.out / TOKENIZER_NAME, bpe, options.eos_token, options.bos_token)

    def _run(self, bpe: Any, encoder: Encoder | None) -> dict[str, Any]:
        """Both stages with the given tokenizer `bpe` and its `encoder`, or with a BPE trained on the way."""
        ledger = self.ledger
        screen = (
            screen_in_worker
            if self.pool is not None
            else Screener(self.options.filters, self.options.dedup, self.decontamination)
        )
        if encoder is None:
            spools: dict[str, _Spool] = {}
            for name, document_id, text in self.kept_documents(screen):
                if name not in spools:
                    spools[name] = _Spool(self.work / f"{len(spools):04d}.jsonl")
                spools[name].write(document_id, text)
            for spool in spools.values():
                spool.close()
            started = time.perf_counter()
            train_texts = (
                text
                for name, spool in spools.items()
                for doc_id, text in spool.read()
                if not ledger.held_out(doc_id, name)
            )
            bpe = train_bpe_tokenizer(train_texts, self.options.vocab_size)
            log.info(
                "trained a byte-level BPE tokenizer with %s tokens in %.1fs",
                f"{bpe.get_vocab_size():,}",
                time.perf_counter() - started,
            )
            bpe.save(str(self.out / TOKENIZER_NAME))
            encoder = self._encoder(bpe)
            records = (
                (name, doc_id, text) for name, spool in spools.items() for doc_id, text in spool.read()
            )
            progress = Progress(
                "tokenize", total=ledger.documents_kept, total_bytes=ledger.kept_chars, logger=log
            )
            encoded = self._encoded(records, bpe, encoder)
        else:
            progress = None  # stage 1's progress line already tracks the documents
            if self.pool is not None:  # the workers encoded as they screened
                encoded = (((name, doc_id, None), ids) for name, doc_id, ids in self.kept_documents(screen))
            else:
                encoded = self._encoded(self.kept_documents(screen), bpe, encoder)

        writers = SplitWriters(self.work, encoder.dtype, ledger.held_out)
        for (name, doc_id, text), ids in encoded:
            writers.write(name, doc_id, ids)
            if progress is not None:
                progress.update(1, len(text))
        if progress is not None:
            progress.close()
        return finish_dataset(self.out, ledger, writers, bpe, encoder.eos_id, encoder.bos_id)

    def _encoded(
        self, records: Iterator[_Kept], bpe: Any, encoder: Encoder
    ) -> Iterator[tuple[_Kept, np.ndarray]]:
        """Each (source, id, text) record with its ids, in order.

        In one process, records are read (stage 1, or the spool) in one thread and encoded in another
        while this one writes the ids (see encode_records). With worker processes, they encode batches
        with the saved tokenizer, one thread each.
        """
        if self.pool is None:
            yield from encode_records(records, bpe, encoder.eos_id, encoder.bos_id, encoder.dtype)
            return
        payloads = ((batch, [text for _, _, text in batch]) for batch in batched(records, lambda r: r[2]))
        in_flight = BATCHES_IN_FLIGHT_PER_PROCESS * self.num_proc
        for batch, arrays in ordered_map(encoder, payloads, self.pool, in_flight):
            yield from zip(batch, arrays, strict=True)
