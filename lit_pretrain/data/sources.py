"""Document sources: where raw text comes from before it is tokenized.

An input spec names one source:

- `python-stdlib`: the running interpreter's standard library (code and docstrings).
- a file, directory or glob: `.txt .md .rst .py` files are one document each, `.jsonl[.gz|.zst]` one
  per line, `.parquet` one per row.
- a directory written by `datasets` `save_to_disk` (a Dataset, or the "train" split of a DatasetDict).
- `code:PATH[:EXT,EXT...]`: every source file under a directory, one code document each; hidden
  directories (.git, .venv) and node_modules, __pycache__, venv, site-packages are skipped.
- `hf:NAME[:SPLIT]` or `hf:NAME:CONFIG:SPLIT`: a Hugging Face hub dataset (or a local directory of data
  files that `load_dataset` reads), streamed; split "train" if not given or empty, the default
  configuration if CONFIG is not given or empty (`hf:NAME:CONFIG:` is CONFIG's train split). Hub names
  hold no colon, so the number of colons after NAME tells the forms apart: one names a split, two a
  configuration and a split. `hf:PATH[:SPLIT]` reads a local save_to_disk directory (which has no
  configurations).
- a URL with a protocol (`s3://bucket/corpus/`, `gcs://...`, `memory://...`, `file://...`): a file,
  directory or glob on that fsspec filesystem, read as a local one (remote_sources.py).
"""

from __future__ import annotations

import ast
import contextlib
import glob
import gzip
import hashlib
import io
import json
import os
import re
import sysconfig
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from lit_pretrain.data.keyset import KeyTable

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

BUILTIN_CORPUS = "python-stdlib"
TEXT_EXTENSIONS = (".txt", ".md", ".rst", ".py")
JSONL_EXTENSIONS = (".jsonl", ".jsonl.gz", ".jsonl.zst")
PARQUET_EXTENSIONS = (".parquet",)
# Rows converted to Python objects at a time; bounds memory on top of the one row group being read.
PARQUET_BATCH_ROWS = 1024
CODE_PREFIX = "code:"
HF_PREFIX = "hf:"
DEFAULT_HF_SPLIT = "train"
# Matched case-insensitively. Data and markup formats (.json, .yaml, .html, .md) are left out on purpose:
# they would dilute a code corpus with text that is not program source.
DEFAULT_CODE_EXTENSIONS = (
    ".py", ".pyi", ".pyx",
    ".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx",
    ".java", ".kt", ".kts", ".scala", ".groovy",
    ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx", ".cu", ".cuh", ".m", ".mm",
    ".cs", ".fs", ".go", ".rs", ".swift", ".zig", ".nim",
    ".rb", ".php", ".pl", ".pm", ".lua", ".r", ".jl", ".dart", ".ex", ".exs", ".erl", ".clj",
    ".hs", ".ml", ".mli", ".f90", ".f", ".sh", ".bash", ".zsh", ".ps1", ".sql", ".vue", ".svelte",
)  # fmt: skip
# Directories that hold tooling state, installed dependencies or caches rather than the project's own code.
SKIPPED_CODE_DIRS = frozenset({"node_modules", "__pycache__", "site-packages", "venv"})
_EXTENSION = re.compile(r"\.?[A-Za-z0-9_+-]+")
# `s3://`, `gcs://`, `memory://`, `file://`...: read through fsspec (remote_sources.py).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# How many malformed-record locations a report keeps; the count is always complete.
MAX_LOCATIONS = 20


@dataclass(frozen=True)
class Document:
    """One unit of text with where it came from; `id` is stable across runs and machines."""

    id: str
    source: str
    origin: str
    text: str
    # Code gets code-specific filters (line length, generated-file detection) instead of prose ones.
    is_code: bool = False


@dataclass
class ReadReport:
    """What reading could not use as-is. Nothing is dropped without being counted here."""

    documents_in: int = 0
    empty_documents: int = 0
    invalid_utf8_documents: int = 0
    malformed_records: int = 0
    malformed_locations: list[str] = field(default_factory=list)
    # Files an input directory or glob holds but prepare does not read, by extension (".yaml", "" for none).
    unread_files: dict[str, int] = field(default_factory=dict)

    def malformed(self, location: str, reason: str) -> None:
        """Count one unusable record and keep its location (file:line) while there is room."""
        self.malformed_records += 1
        if len(self.malformed_locations) < MAX_LOCATIONS:
            self.malformed_locations.append(f"{location}: {reason}")

    def unread(self, paths: Iterable[Path]) -> None:
        """Count files that were passed over, by their extension."""
        for path in paths:
            extension = path.suffix.lower()
            self.unread_files[extension] = self.unread_files.get(extension, 0) + 1

    def decode(self, data: bytes) -> str:
        """UTF-8 text, with invalid bytes replaced by U+FFFD and the document counted."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.invalid_utf8_documents += 1
            return data.decode("utf-8", errors="replace")

    def to_manifest(self) -> dict[str, Any]:
        """The counts as they appear in manifest.json."""
        return {
            "documents_in": self.documents_in,
            "empty_documents": self.empty_documents,
            "invalid_utf8_documents": self.invalid_utf8_documents,
            "malformed_records": {"count": self.malformed_records, "first": list(self.malformed_locations)},
            "unread_files": dict(sorted(self.unread_files.items(), key=lambda item: (-item[1], item[0]))),
        }


def is_url(input_spec: str) -> bool:
    """Whether an input names a file, directory or glob on an fsspec filesystem (`s3://bucket/x.jsonl`)."""
    return _URL.match(input_spec) is not None


class SeenIds:
    """Document ids seen so far, as 128-bit hashes in one numpy table: 32-64 bytes an id and no Python
    object each, so a billion documents do not need a billion strings. Two ids colliding in 128 bits is
    about as likely as 2**-60 for a billion ids."""

    def __init__(self) -> None:
        self._hashes = KeyTable(words=2)

    def add(self, document_id: str) -> bool:
        """Remember an id; False if it was seen before."""
        return self._hashes.add_new(int.from_bytes(id_hash(document_id), "little"))


def id_hash(document_id: str) -> bytes:
    """The 16-byte hash by which the unique-id check knows a document id."""
    return hashlib.blake2b(document_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def check_unique_id(document: Document, seen_ids: SeenIds) -> None:
    """Add the document's id to `seen_ids`; an id already there is an error naming the second copy."""
    if not seen_ids.add(document.id):
        raise repeated_id_error(document)


def repeated_id_error(document: Document) -> ValueError:
    """The error for a document whose id an earlier document had."""
    return ValueError(
        f"document id {document.id!r} ({document.origin}) occurs twice: the same input was given "
        "twice, or --id_field is not unique"
    )


def stdlib_python_files() -> list[Path]:
    """The `.py` files of the running interpreter's standard library, site-packages excluded, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Sorting in place makes the walk order (and so document order) the same on every run.
        dirnames[:] = sorted(
            d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__")
        )
        files.extend(Path(dirpath) / name for name in sorted(filenames) if name.endswith(".py"))
    return files


def python_stdlib_code(report: ReadReport, name: str = "python-stdlib-code") -> Iterator[Document]:
    """Each standard-library source file as one code document."""
    for path in stdlib_python_files():
        yield from stdlib_code_file(path, report, name)


def stdlib_code_file(path: Path, report: ReadReport, name: str = "python-stdlib-code") -> Iterator[Document]:
    """One standard-library source file as a code document (none if it is blank)."""
    relative = path.relative_to(sysconfig.get_paths()["stdlib"]).as_posix()
    text = report.decode(path.read_bytes())
    if text.strip():
        yield Document(id=f"stdlib:{relative}", source=name, origin=str(path), text=text, is_code=True)


def _docstrings(tree: ast.AST) -> Iterator[tuple[str, int, str]]:
    """(qualified name, line, docstring) for the module and every class and function in it."""
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                qualname = f"{prefix}{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    yield qualname, child.lineno, doc
                stack.append((child, qualname + "."))
    module_doc = ast.get_docstring(tree) if isinstance(tree, ast.Module) else None
    if module_doc:
        yield "<module>", 1, module_doc


def python_stdlib_prose(report: ReadReport, name: str = "python-stdlib-prose") -> Iterator[Document]:
    """Docstrings of the standard library and pydoc's topic texts, one document each."""
    for path in stdlib_python_files():
        yield from stdlib_docstrings(path, report, name)
    yield from pydoc_topics(name)


def stdlib_docstrings(
    path: Path, report: ReadReport, name: str = "python-stdlib-prose"
) -> Iterator[Document]:
    """The docstrings of one standard-library file, one document each, by position in the file."""
    relative = path.relative_to(sysconfig.get_paths()["stdlib"]).as_posix()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(report.decode(path.read_bytes()), filename=str(path))
    except (SyntaxError, ValueError):
        return  # a few test fixtures in the stdlib are deliberately invalid Python
    # Order by position in the file, not by traversal order, so ids read naturally.
    for qualname, line, doc in sorted(_docstrings(tree), key=lambda item: (item[1], item[0])):
        yield Document(
            id=f"stdlib-doc:{relative}:{qualname}@{line}", source=name, origin=f"{path}:{line}", text=doc
        )


def pydoc_topics(name: str = "python-stdlib-prose") -> Iterator[Document]:
    """pydoc's topic texts, one document each (none where the distribution strips pydoc_data)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return
    for topic in sorted(topics):
        yield Document(
            id=f"pydoc-topic:{topic}", source=name, origin=f"pydoc_data.topics:{topic}", text=topics[topic]
        )


def expand_paths(
    pattern: str, extensions: Iterable[str] = TEXT_EXTENSIONS, report: ReadReport | None = None
) -> list[Path]:
    """Files named by a file path, a directory (searched recursively) or a glob, sorted; the files passed
    over for their extension are counted in `report` if given."""
    path = Path(pattern).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        candidates = [p for p in path.rglob("*") if p.is_file()]
    else:
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    suffixes = tuple(extensions)
    if report is not None:
        report.unread(p for p in candidates if not p.name.endswith(suffixes))
    return sorted(p for p in candidates if p.name.endswith(suffixes))


def input_files(
    pattern: str,
    report: ReadReport,
    name: str | None = None,
    text_field: str = "text",
    id_field: str | None = None,
) -> Iterator[Document]:
    """Documents of every file under a path, directory or glob: a text file is one document, a JSONL
    file one document per line, a Parquet file one document per row."""
    files = listed_input_files(pattern, report)
    source = name or source_name(pattern)
    root = Path(os.path.commonpath([p.parent for p in files]))
    for path in files:
        # Relative to the input's root, so the id (and the train/val split) is the same on every machine.
        yield from file_documents(
            path, path.relative_to(root).as_posix(), source, report, text_field, id_field
        )


def listed_input_files(pattern: str, report: ReadReport) -> list[Path]:
    """The files `input_files` reads for a path, directory or glob; one that names none is an error."""
    extensions = TEXT_EXTENSIONS + JSONL_EXTENSIONS + PARQUET_EXTENSIONS
    files = expand_paths(pattern, extensions, report)
    if not files:
        raise FileNotFoundError(
            f"input {pattern!r} matches no file with extension {', '.join(extensions)}: "
            "check the path, or pass a directory or glob"
        )
    return files


def file_documents(
    path: Path,
    relative: str,
    source: str,
    report: ReadReport,
    text_field: str = "text",
    id_field: str | None = None,
) -> Iterator[Document]:
    """The documents of one input file, by its extension; `relative` is its path from the input's root."""
    if path.name.endswith(JSONL_EXTENSIONS):
        yield from jsonl_records(path, relative, source, report, text_field, id_field)
    elif path.name.endswith(PARQUET_EXTENSIONS):
        yield from parquet_records(path, relative, source, report, text_field, id_field)
    else:
        text = report.decode(path.read_bytes())
        yield Document(id=f"{source}:{relative}", source=source, origin=str(path), text=text)


@contextlib.contextmanager
def open_binary(path: str | Path, fs: AbstractFileSystem | None = None) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed by its extension (.gz, .zst); on the fsspec filesystem `fs` if given."""
    with open(path, "rb") if fs is None else fs.open(path, "rb") as raw:
        name = str(path)
        if name.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream
        elif name.endswith(".zst"):
            import zstandard

            reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=False)
            with io.BufferedReader(reader) as stream:
                yield stream
        else:
            yield raw


def display_path(path: str | Path, fs: AbstractFileSystem | None = None) -> str:
    """How a file is named in origins and messages: its path, or its URL on a remote filesystem."""
    return str(path) if fs is None else fs.unstrip_protocol(str(path))


def dotted_get(record: Any, dotted_path: str) -> Any:
    """`record["a"]["b"]` for `a.b`; None where any step is missing."""
    value = record
    for key in dotted_path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


class LinesRange(NamedTuple):
    """Whole lines of a file: bytes [start, end), the first of them being line `first_line` (from 1)."""

    start: int
    end: int
    first_line: int


def line_ranges(path: str | Path, piece_bytes: int) -> list[LinesRange]:
    """An uncompressed file cut into ranges of whole lines of about `piece_bytes` each (one read of it)."""
    ranges: list[LinesRange] = []
    with open(path, "rb") as file:
        start, line = 0, 1
        while block := file.read(piece_bytes):
            if not block.endswith(b"\n"):
                block += file.readline()
            ranges.append(LinesRange(start, start + len(block), line))
            start += len(block)
            line += block.count(b"\n")
    return ranges


def jsonl_records(
    path: str | Path,
    relative: str,
    source: str,
    report: ReadReport,
    text_field: str,
    id_field: str | None,
    fs: AbstractFileSystem | None = None,
    lines_range: LinesRange | None = None,
) -> Iterator[Document]:
    """One document per JSON line; bad lines are counted with file:line and the rest is still read.

    With `lines_range`, only the lines in that byte range of an uncompressed file are read.
    """
    name = display_path(path, fs)
    with open_binary(path, fs) as lines:
        first_line, end = 1, None
        if lines_range is not None:
            lines.seek(lines_range.start)
            first_line, end = lines_range.first_line, lines_range.end - lines_range.start
        for line_number, raw in enumerate(lines, start=first_line):
            if end is not None:
                if end <= 0:
                    break
                end -= len(raw)
            if not raw.strip():
                continue
            location = f"{name}:{line_number}"
            try:
                record = json.loads(report.decode(raw))
            except json.JSONDecodeError as err:
                report.malformed(location, f"invalid JSON ({err.msg})")
                continue
            text = dotted_get(record, text_field)
            if not isinstance(text, str):
                report.malformed(location, f"no string at text field {text_field!r}")
                continue
            record_id = dotted_get(record, id_field) if id_field else None
            doc_id = (
                f"{source}:{record_id}" if record_id is not None else f"{source}:{relative}:{line_number}"
            )
            yield Document(id=doc_id, source=source, origin=location, text=text)


def _field_value(record: Mapping[str, Any], field_name: str) -> Any:
    # A column may itself be named "a.b"; only when it is not does the dot step into a struct or dict.
    if field_name in record:
        return record[field_name]
    return dotted_get(record, field_name)


def required_columns(columns: Iterable[str], text_field: str, id_field: str | None, where: str) -> list[str]:
    """The top-level columns that hold the text and id fields; a missing one is an error naming `where`."""
    available = list(columns)
    needed: list[str] = []
    for role, field_name in (("text", text_field), ("id", id_field)):
        if field_name is None:
            continue
        column = field_name if field_name in available else field_name.split(".", 1)[0]
        if column not in available:
            raise ValueError(
                f"{where} has no column {column!r} for the {role} field {field_name!r}; "
                f"its columns are: {', '.join(available) or '(none)'}"
            )
        if column not in needed:
            needed.append(column)
    return needed


def record_documents(
    records: Iterable[Mapping[str, Any]],
    location: str,
    id_prefix: str,
    source: str,
    report: ReadReport,
    text_field: str = "text",
    id_field: str | None = None,
) -> Iterator[Document]:
    """One document per table row (a dict); rows without text are counted as malformed at `location:rowN`."""
    for row_index, record in enumerate(records):
        origin = f"{location}:row{row_index}"
        value = _field_value(record, text_field)
        if isinstance(value, bytes):
            value = report.decode(value)
        if not isinstance(value, str):
            got = "null" if value is None else type(value).__name__
            report.malformed(origin, f"no string at text field {text_field!r} ({got})")
            continue
        record_id = _field_value(record, id_field) if id_field else None
        # Without an id the row's position stands in; it is stable as long as the file is unchanged.
        doc_id = f"{source}:{record_id}" if record_id is not None else f"{id_prefix}:row{row_index}"
        yield Document(id=doc_id, source=source, origin=origin, text=value)


def parquet_records(
    path: str | Path,
    relative: str,
    source: str,
    report: ReadReport,
    text_field: str,
    id_field: str | None,
    fs: AbstractFileSystem | None = None,
) -> Iterator[Document]:
    """One document per row, read a row group at a time so memory stays bounded on large files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = display_path(path, fs)
    with contextlib.ExitStack() as stack:
        # A remote file is read through its seekable file object: only the footer and the row groups
        # are fetched, not the whole file up front.
        opened = path if fs is None else stack.enter_context(fs.open(path, "rb"))
        try:
            parquet_file = stack.enter_context(pq.ParquetFile(opened))
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"{name} is not a readable Parquet file: {err}") from err
        columns = required_columns(parquet_file.schema_arrow.names, text_field, id_field, name)
        batches = parquet_file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns)
        rows = (row for batch in batches for row in batch.to_pylist())
        yield from record_documents(rows, name, f"{source}:{relative}", source, report, text_field, id_field)


def parse_code_spec(input_spec: str) -> tuple[Path, tuple[str, ...]]:
    """The directory and extensions of `code:PATH[:EXT,EXT...]` (extensions default to common source code)."""
    rest = input_spec.removeprefix(CODE_PREFIX)
    path_part, colon, extension_part = rest.rpartition(":")
    extensions = extension_part.split(",")
    # A directory whose own name contains a colon wins over reading its tail as an extension list.
    if colon and not Path(rest).is_dir() and all(_EXTENSION.fullmatch(e) for e in extensions):
        rest = path_part
        chosen = tuple("." + e.lstrip(".").lower() for e in extensions)
    else:
        chosen = DEFAULT_CODE_EXTENSIONS
    if not rest:
        raise ValueError(f"input {input_spec!r} names no directory: use code:PATH or code:PATH:.py,.rs")
    return Path(rest).expanduser(), chosen


def code_files(
    root: Path, extensions: Iterable[str] = DEFAULT_CODE_EXTENSIONS, report: ReadReport | None = None
) -> list[Path]:
    """Files under `root` with one of the extensions (case-insensitive), skipping hidden directories
    (.git, .venv, ...) and SKIPPED_CODE_DIRS (node_modules, __pycache__, ...), in a stable order; other
    files in the directories searched are counted in `report` if given."""
    suffixes = tuple(e.lower() for e in extensions)
    files, passed_over = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIPPED_CODE_DIRS)
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            # is_file() also drops sockets and FIFOs, which would block a read.
            if not path.is_file():
                continue
            (files if filename.lower().endswith(suffixes) else passed_over).append(path)
    if report is not None:
        report.unread(passed_over)
    # Sorted by path like expand_paths, not in walk order (a directory's files before its subdirectories).
    return sorted(files)


def code_tree(
    root: Path,
    report: ReadReport,
    extensions: Iterable[str] = DEFAULT_CODE_EXTENSIONS,
    name: str | None = None,
) -> Iterator[Document]:
    """Each source file under a directory as one code document, id `NAME:relative/path`."""
    files = listed_code_files(root, report, extensions)
    source = name or code_source_name(root)
    for path in files:
        yield from code_file(path, path.relative_to(root).as_posix(), source, report)


def listed_code_files(
    root: Path, report: ReadReport, extensions: Iterable[str] = DEFAULT_CODE_EXTENSIONS
) -> list[Path]:
    """The files `code_tree` reads under `root`; a root that is no directory or holds none is an error."""
    extensions = tuple(extensions)
    if not root.is_dir():
        raise NotADirectoryError(f"code input {str(root)!r} is not a directory")
    files = code_files(root, extensions, report)
    if not files:
        raise FileNotFoundError(
            f"code input {str(root)!r} has no file with extension {', '.join(extensions)} "
            "(hidden directories, node_modules and __pycache__ are skipped)"
        )
    return files


def code_file(path: Path, relative: str, source: str, report: ReadReport) -> Iterator[Document]:
    """One source file as a code document, id `SOURCE:relative`; an unreadable file is counted as malformed."""
    try:
        data = path.read_bytes()
    except OSError as err:
        report.malformed(str(path), f"unreadable ({err.strerror or err})")
        return
    yield Document(
        id=f"{source}:{relative}", source=source, origin=str(path), text=report.decode(data), is_code=True
    )


def code_source_name(root: Path) -> str:
    """A code input's source name: its directory's name."""
    return root.resolve().name or "code"


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "reading Hugging Face datasets needs the optional `datasets` package: "
            "pip install 'lit_pretrain[hf]'"
        ) from err
    return datasets


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a directory written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    if not path.is_dir():
        return False
    if (path / "dataset_dict.json").is_file():
        return True
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def saved_dataset_documents(
    path: Path,
    report: ReadReport,
    name: str | None = None,
    text_field: str = "text",
    id_field: str | None = None,
    split: str | None = None,
) -> Iterator[Document]:
    """One document per row of a save_to_disk directory; of a DatasetDict, the rows of `split` ("train")."""
    datasets = _import_datasets()
    if not is_saved_dataset(path):
        raise ValueError(
            f"{path} is not a directory written by save_to_disk "
            "(it has neither dataset_dict.json nor state.json with dataset_info.json)"
        )
    source = name or source_name(str(path))
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        split = split or DEFAULT_HF_SPLIT
        if split not in loaded:
            raise ValueError(f"{path} has no split {split!r}; its splits are: {', '.join(loaded)}")
        # The split's own directory, where its arrow files are, so an origin leads to the data.
        dataset, location, id_prefix = loaded[split], str(path / split), f"{source}:{split}"
    else:
        if split is not None:
            raise ValueError(f"{path} holds a single Dataset, not a DatasetDict: it has no split {split!r}")
        dataset, location, id_prefix = loaded, str(path), source
    columns = required_columns(dataset.column_names, text_field, id_field, location)
    yield from record_documents(
        dataset.select_columns(columns), location, id_prefix, source, report, text_field, id_field
    )


class HfSpec(NamedTuple):
    """The parts of an `hf:` input; None where the spec leaves the configuration or split to the default."""

    name: str
    config: str | None
    split: str | None


def parse_hf_spec(input_spec: str) -> HfSpec:
    """The dataset name (or local path), configuration and split of `hf:NAME[:SPLIT]` or `hf:NAME:CONFIG:SPLIT`."""
    rest = input_spec.removeprefix(HF_PREFIX)
    if is_saved_dataset(Path(rest).expanduser()):
        return HfSpec(rest, None, None)
    path_part, colon, split = rest.rpartition(":")
    if colon and is_saved_dataset(Path(path_part).expanduser()):
        return HfSpec(path_part, None, split or None)
    saved_part = path_part.rpartition(":")[0]
    if saved_part and is_saved_dataset(Path(saved_part).expanduser()):
        raise ValueError(
            f"input {input_spec!r}: {saved_part} is a save_to_disk directory, which has no configurations: "
            f"use hf:{saved_part}:SPLIT"
        )
    # Hub names hold no colon, so the first one ends the name and the number of parts after it tells a
    # split (one) from a configuration and a split (two).
    name, *parts = rest.split(":")
    if not name:
        raise ValueError(
            f"input {input_spec!r} names no dataset: use hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT"
        )
    if len(parts) > 2:
        raise ValueError(
            f"input {input_spec!r} has too many parts: use hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT"
        )
    config, split = parts if len(parts) == 2 else (None, parts[0] if parts else None)
    return HfSpec(name, config or None, split or None)


def hub_documents(
    dataset_name: str,
    report: ReadReport,
    split: str = DEFAULT_HF_SPLIT,
    name: str | None = None,
    text_field: str = "text",
    id_field: str | None = None,
    config: str | None = None,
) -> Iterator[Document]:
    """One document per row of a Hugging Face hub dataset (of `config`, if given), streamed so nothing is
    downloaded up front."""
    datasets = _import_datasets()
    source = name or dataset_name
    described = f"{dataset_name!r}" + (f" configuration {config!r}" if config else "") + f" split {split!r}"
    try:
        dataset = datasets.load_dataset(dataset_name, name=config, split=split, streaming=True)
    except ConnectionError as err:
        offline = [
            v for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") if os.environ.get(v, "") not in ("", "0")
        ]
        reason = (
            f"{' and '.join(offline)} set, so only datasets already in the local cache open"
            if offline
            else "no connection (set HF_DATASETS_OFFLINE=1 to fail at once instead of retrying when offline)"
        )
        raise ConnectionError(
            f"cannot open Hugging Face dataset {described}: {reason}. To work offline, "
            "save it with `save_to_disk` on a connected machine and pass that directory as the input. "
            f"({err})"
        ) from err
    except ValueError as err:
        # datasets names the configurations or splits there are; the hint is how to pick one here.
        raise ValueError(
            f"cannot open Hugging Face dataset {described}: {err} "
            "(pick a configuration and split with hf:NAME:CONFIG:SPLIT)"
        ) from err
    location = f"{HF_PREFIX}{dataset_name}:" + (f"{config}:" if config else "") + split
    # Streaming datasets may not know their columns before the first row; then there is nothing to check.
    if dataset.column_names is not None:
        columns = required_columns(dataset.column_names, text_field, id_field, location)
        dataset = dataset.select_columns(columns)
    yield from record_documents(dataset, location, f"{source}:{split}", source, report, text_field, id_field)


def source_name(input_spec: str) -> str:
    """`data/web-*.jsonl.zst` -> `web`, `corpus/` -> `corpus`: the input's name without extensions or globs."""
    extensions = sorted(TEXT_EXTENSIONS + JSONL_EXTENSIONS + PARQUET_EXTENSIONS, key=len, reverse=True)
    for part in reversed(Path(input_spec).parts):
        for extension in extensions:
            if part.endswith(extension):
                part = part[: -len(extension)]
                break
        name = re.sub(r"[*?\[\]]", "", part).strip("-_.")
        if name:
            return name
    return "text"


def remote_source_name(url: str) -> str:
    """`s3://bucket/dumps/web-*.jsonl.zst` -> `web`: named as a local input with that path would be."""
    return source_name(url.split("://", 1)[1])


def documents_for(
    input_spec: str, report: ReadReport, text_field: str = "text", id_field: str | None = None
) -> list[tuple[str, Iterator[Document]]]:
    """Named document streams for one prepare input; the spec syntax is in this module's docstring."""
    if input_spec == BUILTIN_CORPUS:
        return [
            ("python-stdlib-code", python_stdlib_code(report)),
            ("python-stdlib-prose", python_stdlib_prose(report)),
        ]
    if input_spec.startswith(CODE_PREFIX):
        root, extensions = parse_code_spec(input_spec)
        name = code_source_name(root)
        return [(name, code_tree(root, report, extensions, name=name))]
    # Before the hf: prefix, which `hf://` URLs (the Hub's fsspec filesystem) also start with.
    if is_url(input_spec):
        # Imported here: remote_sources reads through this module's readers.
        from lit_pretrain.data.remote_sources import remote_input_files

        name = remote_source_name(input_spec)
        return [(name, remote_input_files(input_spec, report, name, text_field, id_field))]
    if input_spec.startswith(HF_PREFIX):
        spec = parse_hf_spec(input_spec)
        local = Path(spec.name).expanduser()
        if is_saved_dataset(local):
            name = source_name(spec.name)
            stream = saved_dataset_documents(local, report, name, text_field, id_field, split=spec.split)
        else:
            # load_dataset also reads a local directory of data files; name it like any local input.
            name = source_name(spec.name) if local.exists() else spec.name
            # Each configuration is its own source: its shards, ids and mixing weight are apart.
            name = f"{name}-{spec.config}" if spec.config else name
            stream = hub_documents(
                spec.name, report, spec.split or DEFAULT_HF_SPLIT, name, text_field, id_field, spec.config
            )
        return [(name, stream)]
    if is_saved_dataset(Path(input_spec).expanduser()):
        name = source_name(input_spec)
        stream = saved_dataset_documents(Path(input_spec).expanduser(), report, name, text_field, id_field)
        return [(name, stream)]
    name = source_name(input_spec)
    return [(name, input_files(input_spec, report, name=name, text_field=text_field, id_field=id_field))]
