"""Document sources: where raw text comes from before it is tokenized."""

from __future__ import annotations

import ast
import glob
import os
import sysconfig
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

BUILTIN_CORPUS = "python-stdlib"
TEXT_EXTENSIONS = (".txt", ".md", ".rst", ".py")


@dataclass(frozen=True)
class Document:
    """One unit of text with where it came from; `id` is stable across runs and machines."""

    id: str
    source: str
    origin: str
    text: str


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


def _read_text(path: Path) -> str:
    # Invalid bytes become U+FFFD rather than stopping the whole corpus on one odd file.
    return path.read_bytes().decode("utf-8", errors="replace")


def python_stdlib_code(name: str = "python-stdlib-code") -> Iterator[Document]:
    """Each standard-library source file as one code document."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib_python_files():
        relative = path.relative_to(root).as_posix()
        text = _read_text(path)
        if text.strip():
            yield Document(id=f"stdlib:{relative}", source=name, origin=str(path), text=text)


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


def python_stdlib_prose(name: str = "python-stdlib-prose") -> Iterator[Document]:
    """Docstrings of the standard library and pydoc's topic texts, one document each."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in stdlib_python_files():
        relative = path.relative_to(root).as_posix()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                tree = ast.parse(_read_text(path), filename=str(path))
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


def text_files(
    pattern: str, name: str | None = None, extensions: Iterable[str] = TEXT_EXTENSIONS
) -> Iterator[Document]:
    """Every text file under a path, directory or glob as one document each."""
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
        yield Document(
            id=f"{source}:{path.relative_to(root).as_posix()}",
            source=source,
            origin=str(path),
            text=_read_text(path),
        )


def _source_name(input_spec: str) -> str:
    return Path(input_spec.rstrip("/*")).stem or "text"


def documents_for(input_spec: str) -> list[tuple[str, Iterator[Document]]]:
    """Named document streams for one prepare input: the built-in corpus or a path, directory or glob."""
    if input_spec == BUILTIN_CORPUS:
        return [("python-stdlib-code", python_stdlib_code()), ("python-stdlib-prose", python_stdlib_prose())]
    name = _source_name(input_spec)
    return [(name, text_files(input_spec, name=name))]
