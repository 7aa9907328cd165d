"""Document sources: where raw text comes from before it is tokenized."""

from __future__ import annotations

import ast
import glob
import gzip
import io
import json
import os
import sysconfig
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

BUILTIN_CORPUS = "python-stdlib"
TEXT_EXTENSIONS = (".txt", ".md", ".rst", ".py")
JSONL_EXTENSIONS = (".jsonl", ".jsonl.gz", ".jsonl.zst")
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

    def malformed(self, location: str, reason: str) -> None:
        """Count one unusable record and keep its location (file:line) while there is room."""
        self.malformed_records += 1
        if len(self.malformed_locations) < MAX_LOCATIONS:
            self.malformed_locations.append(f"{location}: {reason}")

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
        }


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
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib_python_files():
        relative = path.relative_to(root).as_posix()
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
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib_python_files():
        relative = path.relative_to(root).as_posix()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                tree = ast.parse(report.decode(path.read_bytes()), filename=str(path))
        except (SyntaxError, ValueError):
            continue  # a few test fixtures in the stdlib are deliberately invalid Python
        # Order by position in the file, not by traversal order, so ids read naturally.
        for qualname, line, doc in sorted(_docstrings(tree), key=lambda item: (item[1], item[0])):
            yield Document(
                id=f"stdlib-doc:{relative}:{qualname}@{line}", source=name, origin=f"{path}:{line}", text=doc
            )
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return
    for topic in sorted(topics):
        yield Document(
            id=f"pydoc-topic:{topic}", source=name, origin=f"pydoc_data.topics:{topic}", text=topics[topic]
        )


def expand_paths(pattern: str, extensions: Iterable[str] = TEXT_EXTENSIONS) -> list[Path]:
    """Files named by a file path, a directory (searched recursively) or a glob, sorted."""
    path = Path(pattern).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        candidates = [p for p in path.rglob("*") if p.is_file()]
    else:
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    suffixes = tuple(extensions)
    return sorted(p for p in candidates if p.name.endswith(suffixes))


def input_files(
    pattern: str,
    report: ReadReport,
    name: str | None = None,
    text_field: str = "text",
    id_field: str | None = None,
) -> Iterator[Document]:
    """Documents of every file under a path, directory or glob: a text file is one document, a JSONL
    file one document per line."""
    extensions = TEXT_EXTENSIONS + JSONL_EXTENSIONS
    files = expand_paths(pattern, extensions)
    if not files:
        raise FileNotFoundError(
            f"input {pattern!r} matches no file with extension {', '.join(extensions)}: "
            "check the path, or pass a directory or glob"
        )
    source = name or _source_name(pattern)
    root = Path(os.path.commonpath([p.parent for p in files]))
    for path in files:
        # Relative to the input's root, so the id (and the train/val split) is the same on every machine.
        relative = path.relative_to(root).as_posix()
        if path.name.endswith(JSONL_EXTENSIONS):
            yield from jsonl_records(path, relative, source, report, text_field, id_field)
        else:
            text = report.decode(path.read_bytes())
            yield Document(id=f"{source}:{relative}", source=source, origin=str(path), text=text)


def _open_binary(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.name.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def dotted_get(record: Any, dotted_path: str) -> Any:
    """`record["a"]["b"]` for `a.b`; None where any step is missing."""
    value = record
    for key in dotted_path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def jsonl_records(
    path: Path, relative: str, source: str, report: ReadReport, text_field: str, id_field: str | None
) -> Iterator[Document]:
    """One document per JSON line; bad lines are counted with file:line and the rest is still read."""
    with _open_binary(path) as lines:
        for line_number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            location = f"{path}:{line_number}"
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


def _source_name(input_spec: str) -> str:
    return Path(input_spec.rstrip("/*")).stem or "text"


def documents_for(
    input_spec: str, report: ReadReport, text_field: str = "text", id_field: str | None = None
) -> list[tuple[str, Iterator[Document]]]:
    """Named document streams for one prepare input: the built-in corpus or a path, directory or glob."""
    if input_spec == BUILTIN_CORPUS:
        return [
            ("python-stdlib-code", python_stdlib_code(report)),
            ("python-stdlib-prose", python_stdlib_prose(report)),
        ]
    name = _source_name(input_spec)
    return [(name, input_files(input_spec, report, name=name, text_field=text_field, id_field=id_field))]
