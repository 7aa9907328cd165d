"""Prepare's per-document work in worker processes: screening (cleaning, filters, dedup keys) and encoding.

Work is cut into batches of documents in input order and results come back in that order, so every
decision that depends on order (which copy of a duplicate survives) is taken afterwards in one process, and
the output is the same for any number of processes. With one process the same functions run in place.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np

from lit_pretrain.data.decontaminate import DecontaminationIndex, EvalLocation
from lit_pretrain.data.dedup import DedupConfig, DedupKeys, Deduplicator
from lit_pretrain.data.encode import encode_texts, token_dtype
from lit_pretrain.data.filters import DocumentFilter, FilterConfig
from lit_pretrain.data.tokenizer import find_eos_id, find_special_id, load_tokenizer

# A batch holds up to this many documents or characters: large enough that handing it to a process costs
# little against the work on it, small enough that a few batches per process in flight stay in memory.
BATCH_DOCUMENTS = 512
BATCH_CHARS = 1 << 20
# Batches in flight per process: one being worked on, one waiting, one coming back.
BATCHES_IN_FLIGHT_PER_PROCESS = 3

K = TypeVar("K")
T = TypeVar("T")

# (source name, is_code, text) of a document to screen.
ScreenItem = tuple[str, bool, str]


class ScreenedBatch(NamedTuple):
    """What screening a batch gives: per document, its cleaned length (None: a filter dropped it) and the
    evaluation example it shares an n-gram with (None: none, or no decontamination); for the documents
    that passed (a length and no match), in order, their cleaned texts (or token ids, when screening
    encodes too) and their dedup keys; each source's filter and identified-language counts."""

    documents: list[tuple[int | None, EvalLocation | None]]
    passed: list[str] | list[np.ndarray]
    keys: DedupKeys
    counts: dict[str, dict[str, int]]
    languages: dict[str, dict[str, int]]


class Encoder:
    """Encodes batches of texts with a saved tokenizer (loaded once per process)."""

    def __init__(self, tokenizer_path: Path, eos_id: int, bos_id: int | None, dtype: np.dtype) -> None:
        self.tokenizer_path = tokenizer_path
        self.eos_id, self.bos_id, self.dtype = eos_id, bos_id, dtype

    @classmethod
    def for_tokenizer(
        cls, tokenizer_path: Path, tokenizer: Any, eos_token: str | None, bos_token: str | None
    ) -> Encoder:
        """The encoder prepare frames documents with: the tokenizer saved at `tokenizer_path` (a
        tokenizer.json or its directory), already loaded as `tokenizer`, and its EOS and optional BOS."""
        bos_id = find_special_id(tokenizer, bos_token) if bos_token else None
        eos_id = find_eos_id(tokenizer, eos_token)
        return cls(tokenizer_path, eos_id, bos_id, token_dtype(tokenizer.get_vocab_size()))

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's ids, framed as prepare frames every document."""
        return encode_texts(_tokenizer(self.tokenizer_path), texts, self.eos_id, self.bos_id, self.dtype)


class Screener:
    """Cleans and filters documents, checks them against the evaluation data and computes their dedup keys:
    everything before the order-bound duplicate decision. With an `encoder`, it also encodes the documents
    that pass, so that their texts need not travel back and out again (a duplicate is encoded for nothing,
    a few percent of the work). One per process (it keeps scratch arrays between calls)."""

    def __init__(
        self,
        filters: FilterConfig,
        dedup: DedupConfig,
        decontamination: DecontaminationIndex | None = None,
        encoder: Encoder | None = None,
    ) -> None:
        self.filters = filters
        self.keys = Deduplicator(dedup).keys
        self.decontamination = decontamination
        self.encoder = encoder

    def __call__(self, batch: list[ScreenItem]) -> ScreenedBatch:
        """Screen a batch; filter counts come back per source, to be summed by the caller."""
        by_source: dict[str, DocumentFilter] = {}
        documents: list[tuple[int | None, EvalLocation | None]] = []
        passed: list[str] = []
        for source, is_code, text in batch:
            document_filter = by_source.get(source)
            if document_filter is None:
                document_filter = by_source[source] = DocumentFilter(self.filters)
            cleaned = document_filter(text, is_code)
            if cleaned is None:
                documents.append((None, None))
                continue
            # Matched here, in parallel; the caller counts it in input order, before the dedup decision.
            match = self.decontamination.match(cleaned) if self.decontamination is not None else None
            documents.append((len(cleaned), match))
            if match is None:
                passed.append(cleaned)
        return ScreenedBatch(
            documents,
            self.encoder(passed) if self.encoder is not None else passed,
            self.keys(passed),
            {source: f.counts for source, f in by_source.items()},
            {source: f.language_counts for source, f in by_source.items()},
        )


_screener: Screener | None = None
_tokenizers: dict[Path, Any] = {}


def _tokenizer(path: Path) -> Any:
    if path not in _tokenizers:
        _tokenizers[path] = load_tokenizer(path)
    return _tokenizers[path]


def _start_worker(
    filters: FilterConfig,
    dedup: DedupConfig,
    decontamination: DecontaminationIndex | None,
    encoder: Encoder | None,
) -> None:
    global _screener
    # One tokenizer thread per process: the processes are the parallelism. Read when the tokenizer's
    # thread pool first starts, which is after this.
    os.environ["RAYON_NUM_THREADS"] = "1"
    _screener = Screener(filters, dedup, decontamination, encoder)


def screen_in_worker(batch: list[ScreenItem]) -> ScreenedBatch:
    """`Screener.__call__` with the worker's own screener (set up by the pool's initializer)."""
    assert _screener is not None, "screen_in_worker runs only in a pool made by start_pool"
    return _screener(batch)


def start_pool(
    num_proc: int,
    filters: FilterConfig,
    dedup: DedupConfig,
    decontamination: DecontaminationIndex | None = None,
    encoder: Encoder | None = None,
) -> ProcessPoolExecutor:
    """`num_proc` worker processes, each with its own Screener (and a copy of the decontamination index;
    with `encoder`, screening encodes too).

    Spawned, not forked: the parent may hold threads (the tokenizer's, a reader's) that a fork would copy
    in whatever state they were.
    """
    return ProcessPoolExecutor(
        max_workers=num_proc,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(filters, dedup, decontamination, encoder),
    )


def ordered_map(
    function: Callable[[Any], T], items: Iterable[tuple[K, Any]], pool: Executor | None, in_flight: int
) -> Iterator[tuple[K, T]]:
    """(key, function(argument)) for each (key, argument), in order; with a pool, at most `in_flight`
    calls at a time run or wait in it, so a long input never piles up in memory."""
    if pool is None:
        for key, argument in items:
            yield key, function(argument)
        return
    pending: deque = deque()
    for key, argument in items:
        pending.append((key, pool.submit(function, argument)))
        if len(pending) >= in_flight:
            done_key, future = pending.popleft()
            yield done_key, future.result()
    while pending:
        done_key, future = pending.popleft()
        yield done_key, future.result()


def batched(items: Iterable[T], text_of: Callable[[T], str]) -> Iterator[list[T]]:
    """Lists of consecutive items, each up to BATCH_DOCUMENTS items or BATCH_CHARS characters of text."""
    batch: list[T] = []
    chars = 0
    for item in items:
        batch.append(item)
        chars += len(text_of(item))
        if len(batch) >= BATCH_DOCUMENTS or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch
