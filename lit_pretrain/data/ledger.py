"""Prepare's order-bound bookkeeping: per-source counts, unique ids, each screened document's fate, the manifest.

Screening (cleaning, filters, dedup keys) may run anywhere; what depends on input order runs here, in one
process, over documents in input order: which copy of a duplicate survives, which id repeats an earlier
one, which evaluation matches the report names first. The single-machine pipeline (prepare.py) and the
task pipeline (tasks.py) both keep one Ledger, so the two agree on every count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from lit_pretrain.data.decontaminate import DecontaminationIndex, Decontaminator, EvalLocation
from lit_pretrain.data.dedup import DedupKeys, Deduplicator
from lit_pretrain.data.filters import CONTROL_CHARS_REMOVED, NFC_CHANGED, DocumentFilter
from lit_pretrain.data.manifest import FORMAT_VERSION
from lit_pretrain.data.sources import Document, ReadReport, SeenIds, check_unique_id
from lit_pretrain.data.tokenizer import tokenizer_sha256

if TYPE_CHECKING:
    from lit_pretrain.data.prepare import PrepareOptions

SPLITS = ("train", "val")
# (source, id, is_code, cleaned length or None if a filter dropped it, evaluation match or None) of a
# screened document, as the ledger decides it.
ScreenedDocument = tuple[str, str, bool, int | None, EvalLocation | None]
CLEANING_COUNTERS = (NFC_CHANGED, CONTROL_CHARS_REMOVED)


def in_validation(document_id: str, val_fraction: float) -> bool:
    """Whether a document is held out, decided by a hash of its id alone (stable across runs)."""
    return id_fraction(document_id) < val_fraction


def id_fraction(document_id: str) -> float:
    """The document id's hash as a fraction in [0, 1): the split rule's coordinate."""
    return int(hashlib.sha256(document_id.encode()).hexdigest()[:16], 16) / 2**64


def empty_source_stats() -> dict[str, Any]:
    """A source's counts before its first document."""
    return {
        "documents_in": 0,
        "documents_kept": 0,
        "decontaminated": 0,
        "exact_duplicates": 0,
        "near_duplicates": 0,
        "malformed_records": 0,
        "filtered": {},
        "cleaned": {},
        "language_counts": {},
        "train": {"documents": 0, "tokens": 0},
        "val": {"documents": 0, "tokens": 0},
    }


class Ledger:
    """Counts and decisions of one prepare run, fed in input order."""

    def __init__(
        self,
        inputs: Sequence[str],
        val_inputs: Sequence[str],
        options: PrepareOptions,
        decontamination: DecontaminationIndex | None = None,
        report: ReadReport | None = None,
    ) -> None:
        self.inputs, self.val_inputs, self.options = list(inputs), list(val_inputs), options
        self.report = report if report is not None else ReadReport()
        self.deduplicator = Deduplicator(options.dedup)
        # Matches are counted here, in input order, so the report's examples do not depend on the split.
        self.decontaminator = (
            Decontaminator(options.decontamination, decontamination) if decontamination is not None else None
        )
        self.filters: dict[str, DocumentFilter] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self.code_sources: set[str] = set()
        self.val_only_sources: set[str] = set()
        self.kept_chars = 0
        self._seen_ids = SeenIds()

    def held_out(self, document_id: str, source: str) -> bool:
        """Whether a kept document goes to validation."""
        return source in self.val_only_sources or in_validation(document_id, self.options.val_fraction)

    def source(self, spec: str, name: str) -> dict[str, Any]:
        """The counts of source `name` (read from input `spec`), created at its first sight."""
        if spec in self.val_inputs:
            if name in self.stats and name not in self.val_only_sources:
                raise ValueError(
                    f"validation input {spec!r} has the same source name {name!r} as a training input"
                )
            self.val_only_sources.add(name)
        return self.stats.setdefault(name, empty_source_stats())

    def read(self, spec: str, name: str, document: Document) -> None:
        """Count a non-empty document read from `spec`; its id must be new."""
        self.source(spec, name)["documents_in"] += 1
        check_unique_id(document, self._seen_ids)

    def read_many(self, spec: str, name: str, documents: int) -> None:
        """Count `documents` non-empty documents read from `spec`, whose ids were checked elsewhere."""
        self.source(spec, name)["documents_in"] += documents

    def end_source(self, spec: str, name: str, malformed_records: int) -> None:
        """A source has been read whole, with `malformed_records` unusable records: it must have had text."""
        source = self.source(spec, name)
        source["malformed_records"] += malformed_records
        if source["documents_in"] == 0:
            hint = ""
            if self.report.malformed_records:
                first = self.report.malformed_locations[0]
                hint = f" ({self.report.malformed_records} malformed records, first: {first})"
            raise ValueError(
                f"source {name!r} (input {spec!r}) has no documents with text: nothing to train on" + hint
            )

    def screened_counts(
        self, counts: dict[str, dict[str, int]], languages: dict[str, dict[str, int]]
    ) -> None:
        """Add one screened batch's filter and language counts, per source."""
        for name, source_counts in counts.items():
            document_filter = self.filters.setdefault(name, DocumentFilter(self.options.filters))
            document_filter.merge_counts(source_counts)
            document_filter.merge_language_counts(languages[name])

    def decide(self, documents: Sequence[ScreenedDocument], keys: DedupKeys) -> list[bool]:
        """Which of a batch of screened documents are kept, for those that passed screening (a length and
        no evaluation match), in order; `keys` has one row per such document. Batches must come in input
        order."""
        passed: list[ScreenedDocument] = []
        for document in documents:
            name, document_id, _, length, contaminated = document
            if length is None:
                continue
            if contaminated is not None:
                self.contaminated(name, document_id, contaminated)
                continue
            passed.append(document)
        kept = []
        for (name, _, is_code, length, _), duplicate in zip(
            passed, self.deduplicator.decide(keys), strict=True
        ):
            kept.append(duplicate is None)
            self.add_decisions(
                name,
                kept=int(duplicate is None),
                exact=int(duplicate == "exact"),
                near=int(duplicate == "near"),
                kept_chars=length if duplicate is None else 0,
                kept_code=is_code and duplicate is None,
            )
        return kept

    def contaminated(self, name: str, document_id: str, match: EvalLocation) -> None:
        """Count a document of source `name` dropped for sharing an n-gram with evaluation data."""
        self.decontaminator.report.record(document_id, match)
        self.stats[name]["decontaminated"] += 1

    def add_decisions(
        self, name: str, kept: int, exact: int, near: int, kept_chars: int, kept_code: bool
    ) -> None:
        """Count the duplicate decisions on documents of source `name`: kept ones, their characters,
        whether code was among them, and exact and near duplicates."""
        source = self.stats[name]
        source["documents_kept"] += kept
        source["exact_duplicates"] += exact
        source["near_duplicates"] += near
        self.kept_chars += kept_chars
        if kept_code:
            self.code_sources.add(name)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable once screening is over: the seen-id and dedup tables stay behind."""
        return {**self.__dict__, "_seen_ids": None, "deduplicator": None}

    @property
    def duplicate_counts(self) -> dict[str, int]:
        """exact_duplicates and near_duplicates over all sources."""
        return {
            key: sum(s[key] for s in self.stats.values()) for key in ("exact_duplicates", "near_duplicates")
        }

    def finish_screening(self) -> None:
        """Move the filter counts into the per-source stats; an empty result is an error saying why."""
        for name, document_filter in self.filters.items():
            self.stats[name]["filtered"] = drops(document_filter)
            self.stats[name]["cleaned"] = {
                k: v for k, v in document_filter.counts.items() if k in CLEANING_COUNTERS and v
            }
            self.stats[name]["language_counts"] = dict(sorted(document_filter.language_counts.items()))
        if not self.documents_kept:
            dropped = {k: v for f in self.filters.values() for k, v in drops(f).items()}
            dropped.update({k: v for k, v in self.duplicate_counts.items() if v})
            if self.decontaminator is not None and self.decontaminator.report.dropped:
                dropped["decontaminated"] = self.decontaminator.report.dropped
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(dropped.items())) or "none"
            raise ValueError(
                f"no documents left after filtering and deduplication ({self.report.documents_in:,} read; "
                f"dropped by: {reasons}): loosen those settings with --filters / --dedup / --decontamination "
                "(see docs/data.md) "
                "or check the inputs"
            )

    @property
    def documents_kept(self) -> int:
        """Documents kept so far, over all sources."""
        return sum(s["documents_kept"] for s in self.stats.values())

    def manifest(self, bpe: Any, eos_id: int, bos_id: int | None, dtype: np.dtype) -> dict[str, Any]:
        """manifest.json's content, once every split's documents and tokens are in `stats`."""
        stats = self.stats
        totals = {
            split: {k: sum(s[split][k] for s in stats.values()) for k in ("documents", "tokens")}
            for split in SPLITS
        }
        filtered_total: dict[str, int] = {}
        cleaned_total: dict[str, int] = {}
        language_total: dict[str, int] = {}
        for source in stats.values():
            for total, key in (
                (filtered_total, "filtered"),
                (cleaned_total, "cleaned"),
                (language_total, "language_counts"),
            ):
                for name, count in source[key].items():
                    total[name] = total.get(name, 0) + count
        return {
            "format_version": FORMAT_VERSION,
            "inputs": self.inputs,
            "val_inputs": self.val_inputs,
            "tokenizer_sha256": tokenizer_sha256(bpe),
            "vocab_size": bpe.get_vocab_size(),
            "eos_id": eos_id,
            "bos_id": bos_id,
            "dtype": dtype.name,
            "val_fraction": self.options.val_fraction,
            "documents_kept": self.documents_kept,
            "exact_duplicates": self.duplicate_counts["exact_duplicates"],
            "near_duplicates": self.duplicate_counts["near_duplicates"],
            "filtered": dict(sorted(filtered_total.items())),
            "cleaned": dict(sorted(cleaned_total.items())),
            "language_counts": dict(sorted(language_total.items())),
            "tokens_train": totals["train"]["tokens"],
            "tokens_val": totals["val"]["tokens"],
            "splits": totals,
            "sources": {name: dict(s, is_code=name in self.code_sources) for name, s in stats.items()},
            "filter_config": asdict(self.options.filters),
            "dedup_config": asdict(self.options.dedup),
            "decontamination": self.decontaminator.to_manifest() if self.decontaminator is not None else None,
            **self.report.to_manifest(),
        }


def drops(document_filter: DocumentFilter) -> dict[str, int]:
    """Documents each filter dropped (not the cleaning counters, which count rewrites)."""
    return {k: v for k, v in sorted(document_filter.counts.items()) if v and k not in CLEANING_COUNTERS}
