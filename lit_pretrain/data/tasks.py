"""Prepare as phases of tasks over a shared work directory: screen (K), dedup (K), decide (1), tokenize (K),
write (K), merge (1).

- screen: task k reads its contiguous share of the read units (read_plan.py), cleans, filters, checks
  against the evaluation data and computes dedup keys; it writes its counts, its keys (document id hashes,
  exact digests, band keys) cut into K slices of the key space, and, apart, the texts that passed (their
  token ids, when the tokenizer is given);
- dedup: task s goes through slice s of every screen task's keys in input order and flags each document
  with a key an earlier document had. A document's verdict depends only on earlier keys, never on earlier
  verdicts (dedup.py), so the slices are decided apart and their flags OR-ed give exactly what one
  process decides; each task holds 1/K of the tables;
- decide: one task sums the screen tasks' counts and applies the flags, a few numpy passes per screen
  task (no work per document in Python); it writes a keep mask per screen task, the ledger, and the
  tokenizer (trained here on the kept training texts when none is given, in the order a single-machine
  prepare feeds them);
- tokenize: task k encodes its kept texts (or takes their ids) into one token file per (source, split);
- write: the tokenize tasks' files, in task order, are each (source, split)'s token stream; write task w
  writes the w-th run of the dataset's litdata chunks straight from them (shards.write_chunk_range), the
  chunks one writer would write;
- merge: one task moves the chunks into the dataset, writes one index per (source, split), the tokenizer
  and the manifest, exactly as prepare.py does, so the result is the same byte for byte. It copies no
  token: its work grows with the number of chunks, not of documents.

Each task stages its output and publishes it when done (workdir.py: a rename, or an upload): a task killed
midway leaves nothing that a later phase could read, and its rerun starts it afresh. The merge links (or
copies) the write tasks' chunks, so it too can run again. Which tasks are done is the engine's business
(engine.py); a phase function only needs the work directory and its task number.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import pickle
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from lit_pretrain.data.decontaminate import DecontaminationIndex
from lit_pretrain.data.dedup import DedupKeys, repeated_owners
from lit_pretrain.data.encode import token_dtype
from lit_pretrain.data.keyset import KeyTable
from lit_pretrain.data.ledger import Ledger
from lit_pretrain.data.manifest import TOKENIZER_NAME
from lit_pretrain.data.read_plan import ReadUnit, plan_reads, split_large_files, unit_documents
from lit_pretrain.data.shards import TokenStream, chunk_starts, write_chunk_range, write_index
from lit_pretrain.data.sources import MAX_LOCATIONS, Document, ReadReport, id_hash, repeated_id_error
from lit_pretrain.data.split_writers import SplitWriters, settle_splits, write_dataset_manifest
from lit_pretrain.data.tokenizer import load_tokenizer, train_bpe_tokenizer
from lit_pretrain.data.workdir import WorkDir
from lit_pretrain.data.workers import Encoder, ScreenedBatch, Screener, batched

if TYPE_CHECKING:
    from lit_pretrain.data.prepare import PrepareOptions

log = logging.getLogger(__name__)

PLAN = "plan.pkl"
SCREEN, DEDUP, DECIDE, TOKENIZE, WRITE, MERGE = "screen", "dedup", "decide", "tokenize", "write", "merge"
LEDGER, TOKENIZER = f"{DECIDE}/ledger.pkl", f"{DECIDE}/{TOKENIZER_NAME}"
# A large JSONL file is cut into pieces of at least this size for the tasks to share.
MIN_PIECE_BYTES = 1 << 20
# Units whose size is not known up front (a whole dataset, pydoc's topics) count as this many bytes when
# the units are shared out.
_UNKNOWN_UNIT_BYTES = 1 << 20


@dataclass(frozen=True)
class TaskPlan:
    """What every task of one job reads: the inputs, options, read units and each screen task's share."""

    inputs: list[str]
    val_inputs: list[str]
    options: PrepareOptions
    units: list[ReadUnit]
    # Screen task k reads units[shares[k]:shares[k + 1]].
    shares: list[int]
    # Files passed over while listing the inputs (the read report's `unread_files`).
    unread_files: dict[str, int]

    @property
    def tasks(self) -> int:
        """Tasks of each parallel phase (screen, dedup, tokenize, write)."""
        return len(self.shares) - 1

    def task_units(self, task: int) -> list[tuple[int, ReadUnit]]:
        """(unit index, unit) of screen task `task`."""
        return [(i, self.units[i]) for i in range(self.shares[task], self.shares[task + 1])]

    def describe(self, task: int) -> str:
        """The inputs of a task, for messages: its first and last read unit."""
        units = self.units[self.shares[task] : self.shares[task + 1]]
        if not units:
            return "no input"
        first, last = _unit_name(units[0]), _unit_name(units[-1])
        return first if len(units) == 1 else f"{len(units)} read units, {first} to {last}"


def _unit_name(unit: ReadUnit) -> str:
    name = unit.path or unit.spec
    return name if unit.lines is None else f"{name} from line {unit.lines.first_line}"


def make_plan(
    inputs: Sequence[str], val_inputs: Sequence[str], options: PrepareOptions, tasks: int
) -> TaskPlan:
    """List the inputs' read units and share them out among `tasks` screen tasks by size, in order."""
    if options.max_documents_per_source is not None:
        raise ValueError(
            "max_documents_per_source cuts each source after its first N documents, which tasks reading "
            "parts of a source cannot know: prepare without --tasks, or cut the inputs beforehand"
        )
    report = ReadReport()
    units = plan_reads([*inputs, *val_inputs], report)
    if tasks > 1:
        # Large JSONL files are cut so that the tasks' shares can be even (a few pieces per task).
        total = sum(_unit_bytes(unit) for unit in units)
        units = split_large_files(units, max(MIN_PIECE_BYTES, total // (4 * tasks)))
    sizes = np.array([_unit_bytes(unit) for unit in units], dtype=np.float64)
    # Unit i goes to the task whose share of the total bytes its start falls in.
    starts = np.concatenate([[0.0], np.cumsum(sizes)[:-1]])
    owners = np.minimum((starts * tasks / max(sizes.sum(), 1.0)).astype(np.int64), tasks - 1)
    shares = [int(np.searchsorted(owners, task, side="left")) for task in range(tasks)] + [len(units)]
    return TaskPlan(list(inputs), list(val_inputs), options, units, shares, dict(report.unread_files))


def _unit_bytes(unit: ReadUnit) -> int:
    if unit.lines is not None:
        return unit.lines.end - unit.lines.start
    try:
        return os.path.getsize(unit.path) if unit.path else _UNKNOWN_UNIT_BYTES
    except OSError:
        return _UNKNOWN_UNIT_BYTES


def save_plan(plan: TaskPlan, work: str | Path | WorkDir) -> None:
    """Write the plan where every task reads it."""
    WorkDir.of(work).write_bytes(PLAN, pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL))


def load_plan(work: str | Path | WorkDir) -> TaskPlan:
    """The plan of the job in `work`."""
    return _load_pickle(WorkDir.of(work), PLAN)


def _load_pickle(work: WorkDir, relative: str) -> Any:
    with work.open(relative) as file:
        return pickle.load(file)


def _atomic_pickle(path: Path, value: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:
        pickle.dump(value, file, protocol=pickle.HIGHEST_PROTOCOL)
    partial.rename(path)


def _task_dir(phase: str, task: int) -> str:
    """Where task `task` of `phase` publishes its output, relative to the work directory."""
    return f"{phase}/{task:05d}"


def _publish(work: WorkDir, staged: Path, relative: str) -> None:
    """Make a finished task's output visible (workdir.py: one rename, or an upload)."""
    work.publish(staged, relative)


def _pickled_items(work: WorkDir, relative: str) -> Iterator[Any]:
    with work.open(relative) as file:
        while True:
            try:
                yield pickle.load(file)
            except EOFError:
                return


# ---------------------------------------------------------------------------------------------------- screen
def screen_task(work: str | Path | WorkDir, task: int) -> None:
    """Screen task `task`: read its units, screen their documents; write their counts, their keys cut into
    slices (one per dedup task) and the texts that passed."""
    work = WorkDir.of(work)
    plan = load_plan(work)
    options = plan.options
    index = DecontaminationIndex(options.decontamination) if options.decontamination.enabled else None
    # With a given tokenizer the documents that pass are encoded here, as prepare's workers do: the
    # tokenize tasks then only file the kept ids, and no text is written to the work directory.
    encoder = (
        Encoder.for_tokenizer(
            Path(options.tokenizer),
            load_tokenizer(options.tokenizer),
            options.eos_token,
            options.bos_token,
        )
        if options.tokenizer is not None
        else None
    )
    screener = Screener(options.filters, options.dedup, index, encoder)
    final = _task_dir(SCREEN, task)
    partial = work.stage(final)
    report = ReadReport()
    summary = _ScreenSummary()
    keys = _TaskKeys()
    try:
        with open(partial / "texts.pkl", "wb") as texts:
            for events in _event_batches(plan, task, report):
                documents = [document for kind, _, document in events if kind == "doc"]
                screened = screener([(d.source, d.is_code, d.text) for d in documents])
                summary.add(plan, events, screened)
                keys.add(documents, screened.keys)
                passed_documents = [
                    document
                    for document, (length, match) in zip(documents, screened.documents, strict=True)
                    if length is not None and match is None
                ]
                passed = [
                    (document.source, document.id, text)
                    for document, text in zip(passed_documents, screened.passed, strict=True)
                ]
                pickle.dump(passed, texts, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:
        raise RuntimeError(f"screen task {task} ({plan.describe(task)}) failed: {err}") from err
    keys.save(partial / "keys.bin", plan.tasks)
    summary.report = report.__dict__
    _atomic_pickle(partial / "summary.pkl", summary)
    _publish(work, partial, final)


class _ScreenSummary:
    """What the decide task needs of a screen task, apart from the keys: counts per read unit and per
    source, the evaluation matches in order, and per document that passed its source, length and kind."""

    def __init__(self) -> None:
        self.report: dict[str, Any] = {}
        self.sources: list[str] = []
        # (unit index, its non-empty documents, its malformed records), in read order.
        self.units: list[tuple[int, int, int]] = []
        self.counts: dict[str, dict[str, int]] = {}
        self.languages: dict[str, dict[str, int]] = {}
        self.contaminated: list[tuple[str, str, Any]] = []
        self._passed_sources: list[int] = []
        self._passed_lengths: list[int] = []
        self._passed_code: list[bool] = []
        self._unit_documents = 0

    def add(self, plan: TaskPlan, events: list[tuple[str, int, Any]], screened: ScreenedBatch) -> None:
        """Count one screened batch of ("doc" | "end", unit, payload) events."""
        outcomes = iter(screened.documents)
        for kind, unit_index, payload in events:
            if kind == "end":
                self.units.append((unit_index, self._unit_documents, payload))
                self._unit_documents = 0
                continue
            self._unit_documents += 1
            if payload.source not in self.sources:
                self.sources.append(payload.source)
            length, match = next(outcomes)
            if length is None:
                continue
            if match is not None:
                self.contaminated.append((payload.source, payload.id, match))
                continue
            self._passed_sources.append(self.sources.index(payload.source))
            self._passed_lengths.append(length)
            self._passed_code.append(payload.is_code)
        for totals, batch in ((self.counts, screened.counts), (self.languages, screened.languages)):
            for name, counts in batch.items():
                source = totals.setdefault(name, {})
                for key, count in counts.items():
                    source[key] = source.get(key, 0) + count

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with the per-document lists as arrays."""
        state = dict(self.__dict__)
        state["_passed_sources"] = np.array(self._passed_sources, dtype=np.int32)
        state["_passed_lengths"] = np.array(self._passed_lengths, dtype=np.int64)
        state["_passed_code"] = np.array(self._passed_code, dtype=np.bool_)
        return state

    @property
    def passed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per document that passed screening, in order: its source (an index into `sources`), its cleaned
        length, whether it is code."""
        return self._passed_sources, self._passed_lengths, self._passed_code


# A screen task's keys.bin: the kinds of keys, each key's width in 64-bit words.
_KEY_KINDS = {"ids": 2, "exact": 2, "bands": 1}


class _TaskKeys:
    """A screen task's keys, gathered in document order and saved sorted by slice of the key space."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {kind: [] for kind in _KEY_KINDS}
        self.passed = self.read = 0

    def add(self, documents: list[Document], keys: DedupKeys) -> None:
        """Add a batch's keys: its documents' id hashes, and the dedup keys of those that passed."""
        ids = b"".join(id_hash(document.id) for document in documents)
        self.parts["ids"].append(np.frombuffer(ids, dtype="<u8").astype(np.uint64).reshape(-1, 2))
        for name, rows in (("exact", keys.exact), ("bands", keys.bands)):
            if rows is not None:
                self.parts[name].append(rows)
        self.passed += keys.documents
        self.read += len(documents)

    def save(self, path: Path, slices: int) -> None:
        """keys.bin: a header of int64, then per kind its keys and their documents (the document's position
        among the task's documents that passed, or among all it read for ids, as uint32), both sorted by
        slice, in input order within a slice. Header row k holds where each slice of kind k starts (in
        keys) and, last, how many keys the kind has; the last row holds the documents that passed. A dedup
        task reads its slice of each kind in a few ranged reads (`read_key_slice`)."""
        if self.read >= 2**32:
            raise ValueError(f"a screen task read {self.read:,} documents, more than 2**32: use more --tasks")
        header = np.zeros((len(_KEY_KINDS) + 1, slices + 1), dtype=np.int64)
        header[-1, 0] = self.passed
        sections = []
        for row, (kind, width) in enumerate(_KEY_KINDS.items()):
            parts = self.parts[kind]
            rows = np.concatenate(parts) if parts else np.zeros((0, width), dtype=np.uint64)
            keys = rows.reshape(-1, width)
            owners = np.repeat(np.arange(len(rows), dtype=np.uint32), len(keys) // max(len(rows), 1))
            slice_of = key_slice(keys[:, 0], slices)
            order = np.argsort(slice_of, kind="stable")
            header[row, 1:] = np.cumsum(np.bincount(slice_of, minlength=slices))
            sections += [np.ascontiguousarray(keys[order]), owners[order]]
        with open(path, "wb") as file:
            for array in (header, *sections):
                file.write(array.tobytes())


def read_key_slice(
    file: IO[bytes], slices: int, part: int
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Slice `part` of an open keys.bin (`_TaskKeys.save`): (keys, documents) per kind, and the number of
    the task's documents that passed."""
    header_bytes = (len(_KEY_KINDS) + 1) * (slices + 1) * 8
    header = np.frombuffer(file.read(header_bytes), dtype=np.int64).reshape(len(_KEY_KINDS) + 1, slices + 1)
    section, taken = header_bytes, {}
    for row, (kind, width) in enumerate(_KEY_KINDS.items()):
        first, end, total = (int(v) for v in (header[row, part], header[row, part + 1], header[row, -1]))
        file.seek(section + first * width * 8)
        keys = np.frombuffer(file.read((end - first) * width * 8), dtype=np.uint64).reshape(-1, width)
        file.seek(section + total * width * 8 + first * 4)
        owners = np.frombuffer(file.read((end - first) * 4), dtype=np.uint32)
        taken[kind] = (keys, owners)
        section += total * (width * 8 + 4)
    return taken, int(header[-1, 0])


def key_slice(first_words: np.ndarray, slices: int) -> np.ndarray:
    """Which dedup task decides each key, from its first word's high bits (the tables place keys by the
    low bits, which would otherwise be alike within a slice)."""
    return ((first_words >> np.uint64(40)) % np.uint64(slices)).astype(np.int64)


def _event_batches(plan: TaskPlan, task: int, report: ReadReport) -> Iterator[list[tuple[str, int, Any]]]:
    """Batches (as prepare batches documents) of ("doc", unit, Document) and ("end", unit, malformed
    records of that unit) events, in read order; empty documents are counted in `report` and left out."""
    options = plan.options

    def events() -> Iterator[tuple[str, int, Any]]:
        for index, unit in plan.task_units(task):
            malformed_before = report.malformed_records
            for document in unit_documents(unit, report, options.text_field, options.id_field):
                report.documents_in += 1
                if not document.text.strip():
                    report.empty_documents += 1
                    continue
                yield "doc", index, document
            yield "end", index, report.malformed_records - malformed_before

    yield from batched(events(), lambda event: event[2].text if event[0] == "doc" else "")


# ----------------------------------------------------------------------------------------------------- dedup
def dedup_task(work: str | Path | WorkDir, part: int) -> None:
    """Dedup task `part`: go through slice `part` of every screen task's keys in input order and flag
    the documents with a key an earlier document had (dedup.repeated_owners's rule, one slice of it)."""
    work = WorkDir.of(work)
    plan = load_plan(work)
    tables = {kind: KeyTable(words=width) for kind, width in _KEY_KINDS.items()}
    final = _task_dir(DEDUP, part)
    partial = work.stage(final)
    repeated_id = None
    flags: dict[str, list[np.ndarray]] = {"exact": [], "bands": []}
    passed_before = 0  # documents that passed in the earlier screen tasks
    for task in range(plan.tasks):
        with work.open(f"{_task_dir(SCREEN, task)}/keys.bin") as file:
            keys, passed = read_key_slice(file, plan.tasks, part)
        flagged = {kind: repeated_owners(tables[kind], *keys[kind]).astype(np.int64) for kind in _KEY_KINDS}
        if repeated_id is None and len(flagged["ids"]):
            repeated_id = [task, int(flagged["ids"][0])]
        for name in flags:
            flags[name].append(flagged[name] + passed_before)
        passed_before += passed
    # Positions among all the job's documents that passed, in input order.
    np.savez(
        partial / "flags.npz",
        exact=np.concatenate(flags["exact"]),
        near=np.concatenate(flags["bands"]),
        passed=passed_before,
    )
    (partial / "ids.json").write_text(json.dumps({"first_repeated": repeated_id}))
    _publish(work, partial, final)


# ---------------------------------------------------------------------------------------------------- decide
def decide_task(work: str | Path | WorkDir) -> None:
    """Sum the screen tasks' counts, apply the dedup tasks' flags: keep masks, the ledger, the tokenizer."""
    work = WorkDir.of(work)
    plan = load_plan(work)
    options = plan.options
    _check_unique_ids(work, plan)
    index = DecontaminationIndex(options.decontamination) if options.decontamination.enabled else None
    report = ReadReport(unread_files=dict(plan.unread_files))
    ledger = Ledger(plan.inputs, plan.val_inputs, options, index, report)
    partial = work.stage(DECIDE)
    malformed: dict[str, int] = {}
    task_sources: list[list[str]] = []
    exact, near = _flagged_positions(work, plan)
    passed_before = 0
    for task in range(plan.tasks):
        summary: _ScreenSummary = _load_pickle(work, f"{_task_dir(SCREEN, task)}/summary.pkl")
        _merge_report(report, summary.report, task_sources, summary.sources)
        for unit_index, documents, malformed_records in summary.units:
            unit = plan.units[unit_index]
            ledger.read_many(unit.spec, unit.source, documents)
            malformed[unit.source] = malformed.get(unit.source, 0) + malformed_records
            if unit.last:
                ledger.end_source(unit.spec, unit.source, malformed.pop(unit.source))
        ledger.screened_counts(summary.counts, summary.languages)
        for name, document_id, match in summary.contaminated:
            ledger.contaminated(name, document_id, match)
        keep = _apply_flags(summary, ledger, exact, near, passed_before)
        passed_before += len(keep)
        np.save(partial / f"keep-{task:05d}.npy", keep)
    ledger.finish_screening()
    bpe = _decide_tokenizer(work, plan, ledger, partial, task_sources)
    bpe.save(str(partial / TOKENIZER_NAME))
    _atomic_pickle(partial / "ledger.pkl", ledger)
    _publish(work, partial, DECIDE)


def _check_unique_ids(work: WorkDir, plan: TaskPlan) -> None:
    """The first document, in input order, whose id an earlier one had is an error naming it."""
    repeats = []
    for part in range(plan.tasks):
        first = json.loads(work.read_text(f"{_task_dir(DEDUP, part)}/ids.json"))["first_repeated"]
        if first is not None:
            repeats.append(tuple(first))
    if not repeats:
        return
    task, position = min(repeats)
    # Rare and fatal: the document is found by reading its task's inputs again.
    documents = (e[2] for events in _event_batches(plan, task, ReadReport()) for e in events if e[0] == "doc")
    repeat = next(itertools.islice(documents, position, None), None)
    if repeat is None:
        raise ValueError(
            f"document {position} of screen task {task} ({plan.describe(task)}) repeats an earlier id, and "
            "its inputs changed since they were screened: check them and run the job afresh"
        )
    raise repeated_id_error(repeat)


def _flagged_positions(work: WorkDir, plan: TaskPlan) -> tuple[np.ndarray, np.ndarray]:
    """Masks over all the job's documents that passed, in input order, of the exact and of the near
    duplicates: every dedup task's flags OR-ed (a byte a document each, whatever the flags' overlap)."""
    exact = near = None
    for part in range(plan.tasks):
        with work.open(f"{_task_dir(DEDUP, part)}/flags.npz") as file, np.load(file) as flags:
            if exact is None:
                exact = np.zeros(int(flags["passed"]), dtype=bool)
                near = np.zeros(int(flags["passed"]), dtype=bool)
            exact[flags["exact"]] = True
            near[flags["near"]] = True
    return exact, near


def _apply_flags(
    summary: _ScreenSummary, ledger: Ledger, exact_mask: np.ndarray, near_mask: np.ndarray, offset: int
) -> np.ndarray:
    """The keep mask of a screen task's documents that passed, the first at position `offset` among all
    the job's; their decisions are counted in the ledger, per source."""
    sources, lengths, is_code = summary.passed
    exact = exact_mask[offset : offset + len(sources)]
    near = near_mask[offset : offset + len(sources)].copy()
    near &= ~exact
    keep = ~(exact | near)
    count = len(summary.sources)

    def per_source(values: np.ndarray) -> list[int]:
        return np.bincount(sources, weights=values, minlength=count).astype(np.int64).tolist()

    for name, kept, exact_count, near_count, chars, code in zip(
        summary.sources,
        per_source(keep),
        per_source(exact),
        per_source(near),
        per_source(np.where(keep, lengths, 0)),
        per_source(keep & is_code),
        strict=True,
    ):
        ledger.add_decisions(name, kept, exact_count, near_count, chars, code > 0)
    return keep


def _merge_report(
    report: ReadReport, other: dict[str, Any], task_sources: list[list[str]], sources: list[str]
) -> None:
    """Add one screen task's read report (its malformed locations after the earlier tasks')."""
    report.documents_in += other["documents_in"]
    report.empty_documents += other["empty_documents"]
    report.invalid_utf8_documents += other["invalid_utf8_documents"]
    report.malformed_records += other["malformed_records"]
    room = max(MAX_LOCATIONS - len(report.malformed_locations), 0)
    report.malformed_locations.extend(other["malformed_locations"][:room])
    for extension, count in other["unread_files"].items():
        report.unread_files[extension] = report.unread_files.get(extension, 0) + count
    task_sources.append(sources)


def _decide_tokenizer(
    work: WorkDir, plan: TaskPlan, ledger: Ledger, partial: Path, task_sources: list[list[str]]
) -> Any:
    """The given tokenizer, or a BPE trained on the kept training texts, source by source in input order."""
    options = plan.options
    if options.tokenizer is not None:
        return load_tokenizer(options.tokenizer)

    def train_texts() -> Iterator[str]:
        # prepare.py spools each source apart and trains on the spools one after another.
        for name in ledger.stats:
            for task in range(plan.tasks):
                if name not in task_sources[task]:
                    continue
                keep = iter(np.load(partial / f"keep-{task:05d}.npy"))
                for passed in _pickled_items(work, f"{_task_dir(SCREEN, task)}/texts.pkl"):
                    for source, document_id, text in passed:
                        if next(keep) and source == name and not ledger.held_out(document_id, source):
                            yield text

    return train_bpe_tokenizer(train_texts(), options.vocab_size)


# -------------------------------------------------------------------------------------------------- tokenize
def tokenize_task(work: str | Path | WorkDir, task: int) -> None:
    """Encode screen task `task`'s kept texts (or file the ids it encoded) into one token file per
    (source, split)."""
    work = WorkDir.of(work)
    plan = load_plan(work)
    options = plan.options
    ledger = _load_pickle(work, LEDGER)
    tokenizer_path = work.fetch(TOKENIZER)
    encoder = Encoder.for_tokenizer(
        tokenizer_path, load_tokenizer(tokenizer_path), options.eos_token, options.bos_token
    )
    final = _task_dir(TOKENIZE, task)
    partial = work.stage(final)
    writers = SplitWriters(partial, encoder.dtype, ledger.held_out)
    with work.open(f"{DECIDE}/keep-{task:05d}.npy") as file:
        keep = iter(np.load(file))
    for passed in _pickled_items(work, f"{_task_dir(SCREEN, task)}/texts.pkl"):
        kept = [record for record in passed if next(keep)]
        contents = [content for _, _, content in kept]
        # The screen task encoded them already when the tokenizer was given.
        arrays = contents if options.tokenizer is not None else encoder(contents)
        for (source, document_id, _), ids in zip(kept, arrays, strict=True):
            writers.write(source, document_id, ids)
    files = [
        {
            "source": name,
            "split": split,
            "file": writers.writers[name, split].path.name,
            "documents": documents,
            "tokens": tokens,
        }
        for (name, split), (documents, tokens) in writers.close().items()
    ]
    (partial / "files.json").write_text(json.dumps({"files": files, "lowest_train": writers.lowest_train}))
    _publish(work, partial, final)


# ----------------------------------------------------------------------------------------------------- write
def _merged_splits(work: WorkDir, plan: TaskPlan, ledger: Ledger, dtype: np.dtype) -> SplitWriters:
    """Every tokenize task's token files, in task order, as the (source, split) streams of the dataset
    (segments name files by their path in the work directory), validation held out as one process holds
    it out; the splits are counted in `ledger`."""
    writers = SplitWriters(work.scratch(), dtype, ledger.held_out)
    for task in range(plan.tasks):
        directory = _task_dir(TOKENIZE, task)
        listing = json.loads(work.read_text(f"{directory}/files.json"))
        lowest = listing["lowest_train"]
        for entry in listing["files"]:
            name, split = entry["source"], entry["split"]
            candidate = (
                tuple(lowest) if lowest is not None and split == "train" and lowest[1] == name else None
            )
            file = f"{directory}/{entry['file']}"
            writers.add_file(name, split, file, entry["documents"], entry["tokens"], candidate)
    settle_splits(ledger, writers)
    return writers


def _chunk_shares(
    writers: SplitWriters, chunk_tokens: int, tasks: int
) -> list[list[tuple[str, str, int, int]]]:
    """For each write task, its (source, split, first chunk, end chunk) ranges: the dataset's chunks in
    order, cut into `tasks` runs of nearly equal count."""
    chunks = [
        (name, split, chunk)
        for (name, split) in writers.segments
        for chunk in range(len(chunk_starts(writers.stream_tokens((name, split)), chunk_tokens)) - 1)
    ]
    shares = []
    for task in range(tasks):
        mine = chunks[task * len(chunks) // tasks : (task + 1) * len(chunks) // tasks]
        ranges: list[tuple[str, str, int, int]] = []
        for name, split, chunk in mine:
            if ranges and ranges[-1][:2] == (name, split):
                ranges[-1] = (name, split, ranges[-1][2], chunk + 1)
            else:
                ranges.append((name, split, chunk, chunk + 1))
        shares.append(ranges)
    return shares


def write_task(work: str | Path | WorkDir, task: int) -> None:
    """Write task `task`: its share of the dataset's litdata chunks, read from the tokenize tasks' files."""
    work = WorkDir.of(work)
    plan = load_plan(work)
    ledger = _load_pickle(work, LEDGER)
    dtype = token_dtype(load_tokenizer(work.fetch(TOKENIZER)).get_vocab_size())
    writers = _merged_splits(work, plan, ledger, dtype)
    final = _task_dir(WRITE, task)
    partial = work.stage(final)
    chunk_tokens = plan.options.chunk_tokens
    for name, split, first, end in _chunk_shares(writers, chunk_tokens, plan.tasks)[task]:
        directory = partial / split / name
        directory.mkdir(parents=True)
        # Only the token files this run of chunks spans are opened (fetched, from object storage).
        stream = TokenStream(
            writers.segments[name, split],
            dtype,
            lambda file: np.memmap(work.fetch(file), dtype=dtype, mode="r"),
        )
        write_chunk_range(stream, directory, chunk_tokens, first, end)
        stream.close()
    _publish(work, partial, final)


# ----------------------------------------------------------------------------------------------------- merge
def merge_task(work: str | Path | WorkDir, output_dir: Path) -> dict[str, Any]:
    """Gather the write tasks' chunks, one index per (source, split), and write the dataset at
    `output_dir` (a local directory): its tokenizer and manifest."""
    work = WorkDir.of(work)
    plan = load_plan(work)
    ledger = _load_pickle(work, LEDGER)
    tokenizer_path = work.fetch(TOKENIZER)
    bpe = load_tokenizer(tokenizer_path)
    options = plan.options
    encoder = Encoder.for_tokenizer(tokenizer_path, bpe, options.eos_token, options.bos_token)
    writers = _merged_splits(work, plan, ledger, encoder.dtype)
    output = WorkDir(output_dir.parent)
    partial = output.stage(output_dir.name)
    shutil.copyfile(tokenizer_path, partial / TOKENIZER_NAME)
    runs: dict[tuple[str, str], list[int]] = {}
    for task, share in enumerate(_chunk_shares(writers, options.chunk_tokens, plan.tasks)):
        for name, split, _, _ in share:
            runs.setdefault((name, split), []).append(task)
    for (name, split), tasks in runs.items():
        directory = partial / split / name
        directory.mkdir(parents=True)
        ranges = []
        for task in tasks:
            written = f"{_task_dir(WRITE, task)}/{split}/{name}"
            files = work.listdir(written)
            # The chunks go into the dataset; the run's index and digests aside, for write_index.
            work.copy_files(
                written, [f for f in files if f.startswith("chunk-") and f.endswith(".bin")], directory
            )
            ranges.append(work.scratch() / "indexes" / f"{task:05d}" / split / name)
            ranges[-1].mkdir(parents=True)
            work.copy_files(written, [f for f in files if not f.endswith(".bin")], ranges[-1])
        write_index(directory, ranges)
        expected = len(chunk_starts(writers.stream_tokens((name, split)), options.chunk_tokens)) - 1
        written_chunks = len(json.loads((directory / "index.json").read_text())["chunks"])
        if written_chunks != expected:
            raise RuntimeError(
                f"{split}/{name}: the write tasks left {written_chunks} chunks, {expected} expected: "
                f"remove {work.url(WRITE)} and run the same command again"
            )
    manifest = write_dataset_manifest(partial, ledger, writers, bpe, encoder.eos_id, encoder.bos_id)
    _publish(output, partial, output_dir.name)
    work.cleanup()
    return manifest
