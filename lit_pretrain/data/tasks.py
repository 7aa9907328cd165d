"""Prepare as phases of tasks over a shared work directory: screen (K tasks), decide (1), tokenize (K), merge (1).

- screen: task k reads its contiguous share of the read units (read_plan.py), cleans, filters, checks
  against the evaluation data and computes dedup keys; it writes the compact per-document records the
  decision needs and, apart, the texts that passed (their token ids, when the tokenizer is given);
- decide: one task replays every screen task's records in input order through the Ledger, so duplicates,
  unique ids and every count are global and decided exactly as one process decides them; it writes a
  keep mask per screen task, the ledger, and the tokenizer (trained here on the kept training texts when
  none is given, in the order a single-machine prepare feeds them);
- tokenize: task k encodes its kept texts (or takes their ids) into one token file per (source, split);
- merge: one task appends the token files in task order and writes the dataset exactly as prepare.py does
  (shards, tokenizer.json, manifest.json), so the result is the same byte for byte.

Each task writes into `NAME.partial` and renames it when done: a task killed midway leaves nothing that a
later phase could read, and its rerun starts it afresh. Which tasks are done is the engine's business
(engine.py); a phase function only needs the work directory and its task number.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lit_pretrain.data.decontaminate import DecontaminationIndex
from lit_pretrain.data.ledger import Ledger
from lit_pretrain.data.manifest import TOKENIZER_NAME
from lit_pretrain.data.read_plan import ReadUnit, plan_reads, split_large_files, unit_documents
from lit_pretrain.data.sources import MAX_LOCATIONS, Document, ReadReport
from lit_pretrain.data.split_writers import SplitWriters, finish_dataset
from lit_pretrain.data.tokenizer import load_tokenizer, train_bpe_tokenizer
from lit_pretrain.data.workers import Encoder, Screener, batched

if TYPE_CHECKING:
    from lit_pretrain.data.prepare import PrepareOptions

log = logging.getLogger(__name__)

PLAN = "plan.pkl"
SCREEN, DECIDE, TOKENIZE, MERGE = "screen", "decide", "tokenize", "merge"
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
        """Tasks of the screen and tokenize phases."""
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


def save_plan(plan: TaskPlan, work: Path) -> None:
    """Write the plan where every task reads it."""
    work.mkdir(parents=True, exist_ok=True)
    _atomic_pickle(work / PLAN, plan)


def load_plan(work: Path) -> TaskPlan:
    """The plan of the job in `work`."""
    with open(work / PLAN, "rb") as file:
        return pickle.load(file)


def _atomic_pickle(path: Path, value: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:
        pickle.dump(value, file, protocol=pickle.HIGHEST_PROTOCOL)
    partial.rename(path)


def _task_dir(work: Path, phase: str, task: int) -> Path:
    return work / phase / f"{task:05d}"


def _fresh_partial(final: Path) -> Path:
    """An empty `final.partial` directory (whatever a killed attempt left there is removed)."""
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def _publish(partial: Path, final: Path) -> None:
    """Make a finished task's output visible in one rename (an earlier complete copy is replaced)."""
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)


def _pickled_items(path: Path) -> Iterator[Any]:
    with open(path, "rb") as file:
        while True:
            try:
                yield pickle.load(file)
            except EOFError:
                return


# ---------------------------------------------------------------------------------------------------- screen
def screen_task(work: Path, task: int) -> None:
    """Screen task `task`: read its units, screen their documents, write records and texts."""
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
    final = _task_dir(work, SCREEN, task)
    partial = _fresh_partial(final)
    report = ReadReport()
    sources: list[str] = []
    try:
        with open(partial / "records.pkl", "wb") as records, open(partial / "texts.pkl", "wb") as texts:
            for events in _event_batches(plan, task, report):
                documents = [event for event in events if event[0] == "doc"]
                screened = screener([(e[2].source, e[2].is_code, e[2].text) for e in documents])
                passed_documents = [
                    document
                    for (_, _, document), (length, match) in zip(documents, screened.documents, strict=True)
                    if length is not None and match is None
                ]
                passed = [
                    (document.source, document.id, text)
                    for document, text in zip(passed_documents, screened.passed, strict=True)
                ]
                for _, _, document in documents:
                    if document.source not in sources:
                        sources.append(document.source)
                # Events keep only what the ledger needs: the text stays out of the decision's input.
                slim = [
                    (
                        kind,
                        unit,
                        (document.id, document.origin, document.is_code) if kind == "doc" else document,
                    )
                    for kind, unit, document in events
                ]
                record = (slim, screened.documents, screened.keys, screened.counts, screened.languages)
                pickle.dump(record, records, protocol=pickle.HIGHEST_PROTOCOL)
                pickle.dump(passed, texts, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:
        raise RuntimeError(f"screen task {task} ({plan.describe(task)}) failed: {err}") from err
    (partial / "report.json").write_text(json.dumps({"report": report.__dict__, "sources": sources}))
    _publish(partial, final)


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


# ---------------------------------------------------------------------------------------------------- decide
def decide_task(work: Path) -> None:
    """Replay every screen task's records in input order: keep masks, the ledger and the tokenizer."""
    plan = load_plan(work)
    options = plan.options
    index = DecontaminationIndex(options.decontamination) if options.decontamination.enabled else None
    report = ReadReport(unread_files=dict(plan.unread_files))
    ledger = Ledger(plan.inputs, plan.val_inputs, options, index, report)
    final = work / DECIDE
    partial = _fresh_partial(final)
    malformed: dict[str, int] = {}
    task_sources: list[list[str]] = []
    for task in range(plan.tasks):
        screened = _task_dir(work, SCREEN, task)
        _merge_report(report, json.loads((screened / "report.json").read_text()), task_sources)
        keep: list[bool] = []
        for events, rows, keys, counts, languages in _pickled_items(screened / "records.pkl"):
            for kind, unit_index, payload in events:
                unit = plan.units[unit_index]
                if kind == "end":
                    malformed[unit.source] = malformed.get(unit.source, 0) + payload
                    if unit.last:
                        ledger.end_source(unit.spec, unit.source, malformed.pop(unit.source))
                    continue
                document_id, origin, is_code = payload
                ledger.read(unit.spec, unit.source, Document(document_id, unit.source, origin, "", is_code))
            ledger.screened_counts(counts, languages)
            decided = [
                (plan.units[unit_index].source, payload[0], payload[2], length, match)
                for (_, unit_index, payload), (length, match) in zip(
                    (e for e in events if e[0] == "doc"), rows, strict=True
                )
            ]
            keep.extend(ledger.decide(decided, keys))
        np.save(partial / f"keep-{task:05d}.npy", np.array(keep, dtype=np.bool_))
    ledger.finish_screening()
    bpe = _decide_tokenizer(work, plan, ledger, partial, task_sources)
    bpe.save(str(partial / TOKENIZER_NAME))
    _atomic_pickle(partial / "ledger.pkl", ledger)
    _publish(partial, final)


def _merge_report(report: ReadReport, saved: dict[str, Any], task_sources: list[list[str]]) -> None:
    """Add one screen task's read report (its malformed locations after the earlier tasks')."""
    other = saved["report"]
    report.documents_in += other["documents_in"]
    report.empty_documents += other["empty_documents"]
    report.invalid_utf8_documents += other["invalid_utf8_documents"]
    report.malformed_records += other["malformed_records"]
    room = max(MAX_LOCATIONS - len(report.malformed_locations), 0)
    report.malformed_locations.extend(other["malformed_locations"][:room])
    for extension, count in other["unread_files"].items():
        report.unread_files[extension] = report.unread_files.get(extension, 0) + count
    task_sources.append(saved["sources"])


def _decide_tokenizer(
    work: Path, plan: TaskPlan, ledger: Ledger, partial: Path, task_sources: list[list[str]]
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
                for passed in _pickled_items(_task_dir(work, SCREEN, task) / "texts.pkl"):
                    for source, document_id, text in passed:
                        if next(keep) and source == name and not ledger.held_out(document_id, source):
                            yield text

    return train_bpe_tokenizer(train_texts(), options.vocab_size)


# -------------------------------------------------------------------------------------------------- tokenize
def tokenize_task(work: Path, task: int) -> None:
    """Encode screen task `task`'s kept texts (or file the ids it encoded) into one token file per
    (source, split)."""
    plan = load_plan(work)
    options = plan.options
    ledger = _load_ledger(work)
    tokenizer_path = work / DECIDE / TOKENIZER_NAME
    encoder = Encoder.for_tokenizer(
        tokenizer_path, load_tokenizer(tokenizer_path), options.eos_token, options.bos_token
    )
    final = _task_dir(work, TOKENIZE, task)
    partial = _fresh_partial(final)
    writers = SplitWriters(partial, encoder.dtype, ledger.held_out)
    keep = iter(np.load(work / DECIDE / f"keep-{task:05d}.npy"))
    for passed in _pickled_items(_task_dir(work, SCREEN, task) / "texts.pkl"):
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
        }
        for (name, split), (documents, _) in writers.close().items()
    ]
    (partial / "files.json").write_text(json.dumps({"files": files, "lowest_train": writers.lowest_train}))
    _publish(partial, final)


def _load_ledger(work: Path) -> Ledger:
    with open(work / DECIDE / "ledger.pkl", "rb") as file:
        return pickle.load(file)


# ----------------------------------------------------------------------------------------------------- merge
def merge_task(work: Path, output_dir: Path) -> dict[str, Any]:
    """Append every tokenize task's token files in task order and write the dataset at `output_dir`."""
    plan = load_plan(work)
    ledger = _load_ledger(work)
    bpe = load_tokenizer(work / DECIDE / TOKENIZER_NAME)
    options = plan.options
    encoder = Encoder.for_tokenizer(work / DECIDE / TOKENIZER_NAME, bpe, options.eos_token, options.bos_token)
    partial = _fresh_partial(output_dir)
    (partial / "_work").mkdir()
    shutil.copyfile(work / DECIDE / TOKENIZER_NAME, partial / TOKENIZER_NAME)
    writers = SplitWriters(partial / "_work", encoder.dtype, ledger.held_out)
    for task in range(plan.tasks):
        directory = _task_dir(work, TOKENIZE, task)
        listing = json.loads((directory / "files.json").read_text())
        lowest = listing["lowest_train"]
        for entry in listing["files"]:
            name, split = entry["source"], entry["split"]
            candidate = (
                tuple(lowest) if lowest is not None and split == "train" and lowest[1] == name else None
            )
            writers.append(name, split, directory / entry["file"], entry["documents"], candidate)
    manifest = finish_dataset(partial, ledger, writers, bpe, encoder.eos_id, encoder.bos_id)
    shutil.rmtree(partial / "_work")
    _publish(partial, output_dir)
    return manifest
