"""Documents to token ids: BOS/EOS framing, long texts in pieces, encoding overlapped with reading."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from queue import Queue
from threading import Thread
from typing import Any, TypeVar

import numpy as np

ENCODE_BATCH_DOCUMENTS = 512
# Longer documents are encoded in pieces cut at line breaks: one huge string would make the tokenizer
# hold all its intermediate state at once.
MAX_ENCODE_CHARS = 1_000_000

R = TypeVar("R", bound=tuple)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in it, else int32.

    Not uint32: litdata cannot serialize torch.uint32 tensors, and int32 holds any real vocabulary.
    """
    if vocab_size > 2**31:
        raise ValueError(f"a vocabulary of {vocab_size:,} tokens does not fit in int32 token ids")
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def encode_records(
    records: Iterable[R], tokenizer, eos_id: int, bos_id: int | None, dtype: np.dtype
) -> Iterator[tuple[R, np.ndarray]]:
    """Each record (a tuple whose last item is a text) with its ids, BOS first if given and EOS last.

    Three stages overlap: a thread produces the records (reading, filtering and deduplicating, for
    prepare); a thread encodes batches of them (the Rust tokenizer releases the GIL and runs on all
    cores); the caller's thread turns encodings into arrays and consumes them, work that fills the cores
    the tokenizer leaves idle at the tail of each batch. Records come out in input order.
    """
    batches = _in_background(_batched(records, ENCODE_BATCH_DOCUMENTS), "prepare-reader")
    encoded = _in_background(
        ((batch, _encode_pieces(tokenizer, [record[-1] for record in batch])) for batch in batches),
        "prepare-encoder",
    )
    for batch, (owners, encodings) in encoded:
        arrays = _assemble_ids(len(batch), owners, encodings, eos_id, bos_id, dtype)
        yield from zip(batch, arrays, strict=True)


def encode_texts(
    tokenizer, texts: list[str], eos_id: int, bos_id: int | None, dtype: np.dtype
) -> list[np.ndarray]:
    """Each text's ids, BOS first if given and EOS last, in one thread of the caller's (prepare's workers)."""
    owners, encodings = _encode_pieces(tokenizer, texts)
    return _assemble_ids(len(texts), owners, encodings, eos_id, bos_id, dtype)


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


def _encode_pieces(tokenizer, texts: list[str]) -> tuple[list[int], list[Any]]:
    """Encodings of the texts' pieces and, for each piece, the index of its text; runs on all cores."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    pieces, owners = [], []
    for index, text in enumerate(texts):
        for piece in _split_long_text(text) if len(text) > MAX_ENCODE_CHARS else [text]:
            pieces.append(piece)
            owners.append(index)
    return owners, encode(pieces, add_special_tokens=False)


def _assemble_ids(
    num_texts: int, owners: list[int], encodings: list[Any], eos_id: int, bos_id: int | None, dtype: np.dtype
) -> list[np.ndarray]:
    """Each text's ids from its pieces' encodings, BOS first if given and EOS last."""
    ids_per_text: list[list[int]] = [[] for _ in range(num_texts)]
    for owner, encoding in zip(owners, encodings, strict=True):
        ids_per_text[owner].extend(encoding.ids)
    first = 0 if bos_id is None else 1
    arrays = []
    for ids in ids_per_text:
        array = np.empty(first + len(ids) + 1, dtype=dtype)
        if bos_id is not None:
            array[0] = bos_id
        array[first:-1] = ids
        array[-1] = eos_id
        arrays.append(array)
    return arrays


def _batched(records: Iterable[Any], batch_size: int) -> Iterator[list[Any]]:
    """Lists of `batch_size` records, the last one shorter."""
    batch = []
    for record in records:
        batch.append(record)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _in_background(items: Iterator[Any], name: str, queue_size: int = 2) -> Iterator[Any]:
    """The items of `items`, produced by a background thread so that producing overlaps consuming.

    Errors in the producer re-raise here.
    """
    queue: Queue = Queue(maxsize=queue_size)
    finished = object()

    def produce() -> None:
        try:
            for item in items:
                queue.put(item)
            queue.put(finished)
        except BaseException as err:  # handed to the consumer, which raises it
            queue.put(err)

    thread = Thread(target=produce, name=name, daemon=True)
    thread.start()
    while True:
        item = queue.get()
        if item is finished:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join()
