"""Language-modelling metrics: loss (nats per token), perplexity and bits per byte of held-out text.

Three inputs:
- text files, one document each;
- JSONL files, one document per line, the text at a dotted `text_field` (lines that are not JSON or lack
  the field are counted and listed as `file:line: reason`, and the rest is evaluated);
- a prepared dataset's validation shards (a `lit-pretrain prepare` output directory), per source.

A text document is scored after the model's document prefix (EOS, and BOS when the data had one, for a
lit-pretrain model; BOS else EOS for a Hugging Face model), so every one of its tokens is predicted and
every byte counts; no end-of-document token is predicted after it. Bits per byte = the summed negative
log-likelihood in nats / ln 2 / the UTF-8 bytes of the evaluated text: it does not depend on the tokenizer,
so models with different tokenizers compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from litdata import StreamingDataset
from litdata.streaming.item_loader import TokensLoader
from tokenizers import Tokenizer

from lit_pretrain.data.manifest import TOKENIZER_NAME, read_manifest
from lit_pretrain.data.sources import TEXT_EXTENSIONS, Document, ReadReport, expand_paths, jsonl_records
from lit_pretrain.evaluation.models import LanguageModel, encoding_sha256
from lit_pretrain.inference.scoring import log_likelihoods

# Documents or windows scored per call: bounds the memory that long inputs take.
CHUNK = 256


@dataclass
class LanguageModelingResult:
    """Loss, perplexity and bits per byte of one input, with what they were computed over."""

    name: str
    nats: float  # summed negative log-likelihood
    tokens: int
    bytes: int
    documents: int  # documents scored, or windows for the validation shards scored by id
    skipped: dict[str, Any] = field(default_factory=dict)  # what could not be evaluated, and where
    notes: list[str] = field(default_factory=list)
    unit: str = "documents"

    @property
    def loss(self) -> float:
        """Mean negative log-likelihood per token, in nats."""
        return self.nats / self.tokens

    @property
    def perplexity(self) -> float:
        """exp(loss)."""
        return math.exp(self.loss) if self.loss < 700 else math.inf

    @property
    def bits_per_byte(self) -> float:
        """Summed negative log-likelihood in bits per UTF-8 byte of the evaluated text."""
        return self.nats / math.log(2) / self.bytes if self.bytes else math.nan

    def metrics(self) -> dict[str, tuple[float, int]]:
        """(value, n) by metric name: n is the tokens for loss and perplexity, the bytes for bits per byte."""
        return {
            "loss": (self.loss, self.tokens),
            "perplexity": (self.perplexity, self.tokens),
            "bits_per_byte": (self.bits_per_byte, self.bytes),
        }

    def to_json(self) -> dict[str, Any]:
        """The result as written to --output."""
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte,
            "tokens": self.tokens,
            "bytes": self.bytes,
            self.unit: self.documents,
            "skipped": self.skipped,
            "notes": self.notes,
        }


def skipped(report: ReadReport) -> dict[str, Any]:
    """The unusable records of a `ReadReport`: count and first locations (`file:line: reason`)."""
    return {
        "count": report.malformed_records + report.empty_documents,
        "malformed": report.malformed_records,
        "empty": report.empty_documents,
        "invalid_utf8_replaced": report.invalid_utf8_documents,
        "first": list(report.malformed_locations),
    }


def read_text_files(paths: Sequence[str], report: ReadReport) -> list[Document]:
    """One document per file: a file path, or every .txt/.md/.rst/.py file under a directory or glob."""
    documents = []
    for pattern in paths:
        files = expand_paths(pattern, TEXT_EXTENSIONS) if not Path(pattern).is_file() else [Path(pattern)]
        if not files:
            raise FileNotFoundError(
                f"--text {pattern}: no such file (nor a directory or glob of {', '.join(TEXT_EXTENSIONS)} files)"
            )
        for path in files:
            text = report.decode(path.read_bytes())
            documents.append(Document(id=str(path), source="text", origin=str(path), text=text))
    return documents


def read_jsonl_texts(paths: Sequence[str], text_field: str, report: ReadReport) -> list[Document]:
    """One document per JSONL line (.jsonl, .jsonl.gz, .jsonl.zst); bad lines counted in `report`."""
    documents: list[Document] = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"--jsonl {path}: no such file")
        documents.extend(jsonl_records(path, path.name, "jsonl", report, text_field, None))
    return documents


@dataclass
class _Totals:
    nats: float = 0.0
    tokens: int = 0
    bytes: int = 0
    documents: int = 0

    def add(self, nats: float, tokens: int, num_bytes: int, documents: int) -> None:
        self.nats += nats
        self.tokens += tokens
        self.bytes += num_bytes
        self.documents += documents


def _score_texts(model: LanguageModel, texts: Sequence[str], batch_size: int, totals: _Totals) -> int:
    """Add the scores of `texts` (each after the document prefix) to `totals`; returns how many were empty."""
    prefix = model.document_prefix
    sequences, num_bytes = [], 0
    for text in texts:
        ids = model.encode(text)
        if ids:
            sequences.append(prefix + ids)
            num_bytes += len(text.encode("utf-8"))
    if sequences:
        with torch.inference_mode():
            scores = log_likelihoods(
                model.logits,
                sequences,
                [len(prefix)] * len(sequences),
                model.max_length,
                batch_size,
                model.device,
            )
        totals.add(
            -float(scores.log_likelihood.sum()), int(scores.num_tokens.sum()), num_bytes, len(sequences)
        )
    return len(texts) - len(sequences)


def text_metrics(
    model: LanguageModel,
    documents: Sequence[Document],
    name: str,
    batch_size: int = 8,
    limit: int | None = None,
    report: ReadReport | None = None,
) -> LanguageModelingResult:
    """Loss, perplexity and bits per byte of the documents, each scored after the model's document prefix."""
    report = report or ReadReport()
    documents = list(documents)[:limit] if limit is not None else list(documents)
    totals = _Totals()
    for start in range(0, len(documents), CHUNK):
        texts = [document.text for document in documents[start : start + CHUNK]]
        report.empty_documents += _score_texts(model, texts, batch_size, totals)
    if not totals.documents:
        raise ValueError(f"{name}: no document with any text to evaluate")
    return LanguageModelingResult(
        name=name,
        nats=totals.nats,
        tokens=totals.tokens,
        bytes=totals.bytes,
        documents=totals.documents,
        skipped=skipped(report),
    )


def shard_metrics(
    model: LanguageModel, data_dir: str | Path, batch_size: int = 8, limit: int | None = None
) -> list[LanguageModelingResult]:
    """Metrics of each source's validation split of a prepared dataset, `val/<source>`.

    The token stream is cut, as training's validation cuts it, into windows of `max_length + 1` tokens
    (the tail that fills no window is left out, and noted); `limit` keeps the first windows of each source.
    When the model's tokenizer encodes as the dataset's (same `encoding_sha256`: a checkpoint trained on it,
    or its export), the windows are scored as training scores them: the first token of a window is context
    and every other is predicted, EOS (and BOS) included, so the loss is `val/loss`; bits per byte divide
    the same total by the UTF-8 bytes of the predicted tokens decoded with special tokens skipped (EOS
    costs bits but adds no bytes; a character cut by a window edge decodes as U+FFFD). Otherwise (another
    tokenizer) each window is decoded with the dataset's tokenizer, split into documents at EOS/BOS, and
    each piece scored as a text document.
    """
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    dataset_tokenizer = Tokenizer.from_file(str(data_dir / TOKENIZER_NAME))
    same_tokenizer = model.encoding_sha256 == encoding_sha256(dataset_tokenizer)
    separators = {manifest.get("eos_id"), manifest.get("bos_id")} - {None}
    results = []
    for source, counts in manifest["sources"].items():
        val_tokens = int(counts["val"]["tokens"])
        block = min(model.max_length + 1, val_tokens)
        if block < 2:
            continue
        dataset = StreamingDataset(
            str((data_dir / "val" / source).resolve()), item_loader=TokensLoader(block)
        )
        count = len(dataset) if limit is None else min(limit, len(dataset))
        notes = [f"{count} of {len(dataset)} windows of {block} tokens"]
        if val_tokens % block:
            notes.append(f"{val_tokens % block} tokens after the last full window are not evaluated")
        if not same_tokenizer:
            notes.append("the model's tokenizer differs from the dataset's: windows decoded and re-encoded")
        totals = _Totals()
        for start in range(0, count, CHUNK):
            windows = [dataset[index].tolist() for index in range(start, min(start + CHUNK, count))]
            if same_tokenizer:
                _score_windows_by_id(model, windows, dataset_tokenizer, batch_size, totals)
            else:
                texts = [
                    text
                    for window in windows
                    for text in _documents_in_window(window, separators, dataset_tokenizer)
                ]
                _score_texts(model, texts, batch_size, totals)
        if totals.tokens:
            results.append(
                LanguageModelingResult(
                    name=f"val/{source}",
                    nats=totals.nats,
                    tokens=totals.tokens,
                    bytes=totals.bytes,
                    documents=count if same_tokenizer else totals.documents,
                    notes=notes,
                    unit="windows" if same_tokenizer else "documents",
                )
            )
    if not results:
        raise ValueError(f"{data_dir}: no source has validation tokens to evaluate")
    return results


def _score_windows_by_id(
    model: LanguageModel, windows: list[list[int]], tokenizer: Tokenizer, batch_size: int, totals: _Totals
) -> None:
    with torch.inference_mode():
        scores = log_likelihoods(
            model.logits, windows, [1] * len(windows), model.max_length, batch_size, model.device
        )
    texts = tokenizer.decode_batch([window[1:] for window in windows], skip_special_tokens=True)
    num_bytes = sum(len(text.encode("utf-8")) for text in texts)
    totals.add(-float(scores.log_likelihood.sum()), int(scores.num_tokens.sum()), num_bytes, len(windows))


def _documents_in_window(window: list[int], separators: set[int], tokenizer: Tokenizer) -> list[str]:
    """The text of each run of tokens between EOS/BOS tokens of a window."""
    pieces: list[list[int]] = [[]]
    for token in window:
        if token in separators:
            pieces.append([])
        else:
            pieces[-1].append(token)
    return [text for text in tokenizer.decode_batch([p for p in pieces if p]) if text]
