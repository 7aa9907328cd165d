"""Prepare's inputs cut into read units, each readable alone, giving the documents a whole read gives.

A unit is one file of an input (a text, JSONL or Parquet file, a code file, one standard-library file), a
range of whole lines of a large uncompressed JSONL file, or a whole input that is not a set of local files
(a Hugging Face dataset, a URL). Reading the units in
order yields the same documents, with the same ids and source names, as reading the inputs
(sources.documents_for), so tasks that each read some units can be put back together in input order.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lit_pretrain.data.sources import (
    BUILTIN_CORPUS,
    CODE_PREFIX,
    HF_PREFIX,
    Document,
    LinesRange,
    ReadReport,
    code_file,
    code_source_name,
    documents_for,
    file_documents,
    is_saved_dataset,
    is_url,
    jsonl_records,
    line_ranges,
    listed_code_files,
    listed_input_files,
    parse_code_spec,
    pydoc_topics,
    source_name,
    stdlib_code_file,
    stdlib_docstrings,
    stdlib_python_files,
)

FILE, CODE_FILE, STDLIB_CODE, STDLIB_PROSE, STDLIB_TOPICS, WHOLE = (
    "file",
    "code-file",
    "stdlib-code",
    "stdlib-prose",
    "stdlib-topics",
    "whole",
)


@dataclass(frozen=True)
class ReadUnit:
    """One readable piece of input `spec`, feeding source `source`; `last` marks the source's last piece."""

    spec: str
    source: str
    kind: str
    path: str = ""
    relative: str = ""
    last: bool = False
    # Only these lines of the file (a large JSONL file read by several tasks); None: the whole file.
    lines: LinesRange | None = None


def plan_reads(inputs: Sequence[str], report: ReadReport) -> list[ReadUnit]:
    """The read units of `inputs`, in input order; files passed over are counted in `report`."""
    units: list[ReadUnit] = []
    for spec in inputs:
        for source_units in _units_of(spec, report):
            units.extend(source_units[:-1])
            last = source_units[-1]
            units.append(ReadUnit(last.spec, last.source, last.kind, last.path, last.relative, last=True))
    return units


def split_large_files(units: list[ReadUnit], piece_bytes: int) -> list[ReadUnit]:
    """The units with each uncompressed JSONL file above `piece_bytes` cut into ranges of whole lines of
    about that size, so that several tasks can share it (each such file is read once here, to find the
    line numbers where its ranges start: document ids and error locations name lines)."""
    pieces: list[ReadUnit] = []
    for unit in units:
        if unit.kind != FILE or not unit.path.endswith(".jsonl") or os.path.getsize(unit.path) <= piece_bytes:
            pieces.append(unit)
            continue
        ranges = line_ranges(unit.path, piece_bytes)
        for index, lines in enumerate(ranges):
            last = unit.last and index == len(ranges) - 1
            pieces.append(dataclasses.replace(unit, lines=lines, last=last))
    return pieces


def _units_of(spec: str, report: ReadReport) -> list[list[ReadUnit]]:
    """Each source of one input as its units (at least one per source)."""
    if spec == BUILTIN_CORPUS:
        files = stdlib_python_files()
        code = [ReadUnit(spec, "python-stdlib-code", STDLIB_CODE, str(p)) for p in files]
        prose = [ReadUnit(spec, "python-stdlib-prose", STDLIB_PROSE, str(p)) for p in files]
        return [code, [*prose, ReadUnit(spec, "python-stdlib-prose", STDLIB_TOPICS)]]
    if spec.startswith(CODE_PREFIX):
        root, extensions = parse_code_spec(spec)
        files = listed_code_files(root, report, extensions)
        name = code_source_name(root)
        return [[ReadUnit(spec, name, CODE_FILE, str(p), p.relative_to(root).as_posix()) for p in files]]
    if is_url(spec) or spec.startswith(HF_PREFIX) or is_saved_dataset(Path(spec).expanduser()):
        # Read whole by one task: its rows are not split across tasks (yet).
        return [[ReadUnit(spec, name, WHOLE) for name, _ in documents_for(spec, ReadReport())]]
    files = listed_input_files(spec, report)
    root = Path(os.path.commonpath([p.parent for p in files]))
    name = source_name(spec)
    return [[ReadUnit(spec, name, FILE, str(p), p.relative_to(root).as_posix()) for p in files]]


def unit_documents(
    unit: ReadUnit, report: ReadReport, text_field: str = "text", id_field: str | None = None
) -> Iterator[Document]:
    """The documents of one read unit, as a whole read of its input gives them."""
    path = Path(unit.path)
    if unit.kind == FILE:
        if not path.is_file():
            raise FileNotFoundError(
                f"input file {unit.path} (of input {unit.spec!r}) is gone since it was listed"
            )
        if unit.lines is not None:
            yield from jsonl_records(
                path, unit.relative, unit.source, report, text_field, id_field, lines_range=unit.lines
            )
        else:
            yield from file_documents(path, unit.relative, unit.source, report, text_field, id_field)
    elif unit.kind == CODE_FILE:
        yield from code_file(path, unit.relative, unit.source, report)
    elif unit.kind == STDLIB_CODE:
        yield from stdlib_code_file(path, report, unit.source)
    elif unit.kind == STDLIB_PROSE:
        yield from stdlib_docstrings(path, report, unit.source)
    elif unit.kind == STDLIB_TOPICS:
        yield from pydoc_topics(unit.source)
    elif unit.kind == WHOLE:
        streams = dict(documents_for(unit.spec, report, text_field, id_field))
        yield from streams[unit.source]
    else:
        raise ValueError(f"unknown read unit kind {unit.kind!r}")
