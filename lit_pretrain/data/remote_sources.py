"""Inputs on object storage or any other fsspec filesystem: `s3://bucket/corpus/`, `gcs://bucket/web-*.jsonl.zst`.

A URL names a file, a directory (read recursively) or a glob, exactly as a local path does, with the same
file types (sources.py): text files are one document each, JSONL files one per line, Parquet files one per
row. Ids are relative to the input's root as for local files, so a corpus copied to a bucket keeps its
document ids (and so its train/validation split); origins and malformed-record locations are URLs
(`s3://bucket/corpus/a.jsonl:12`). The protocol's fsspec implementation must be installed (s3fs for s3://,
gcsfs for gcs://); `memory://` and `file://` need nothing more.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from lit_pretrain.data.sources import (
    JSONL_EXTENSIONS,
    PARQUET_EXTENSIONS,
    TEXT_EXTENSIONS,
    Document,
    ReadReport,
    display_path,
    jsonl_records,
    parquet_records,
    remote_source_name,
)

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

INPUT_EXTENSIONS = TEXT_EXTENSIONS + JSONL_EXTENSIONS + PARQUET_EXTENSIONS
_GLOB_CHARACTERS = re.compile(r"[*?\[]")


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of a URL and the path on it; a missing implementation says what to install."""
    try:
        import fsspec
    except ImportError as err:  # pragma: no cover - fsspec comes with datasets, lightning and torch
        raise ImportError(f"reading {url!r} needs fsspec: pip install fsspec") from err
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        protocol = url.split("://", 1)[0]
        raise ImportError(f"reading {url!r} needs fsspec's {protocol!r} filesystem: {err}") from err
    except ValueError as err:
        raise ValueError(f"input {url!r} is not a URL fsspec knows: {err}") from err


def expand_remote_paths(
    url: str, extensions: Iterable[str] = INPUT_EXTENSIONS
) -> tuple[AbstractFileSystem, list[str]]:
    """The filesystem and the files a URL names (a file, a directory searched recursively, or a glob), sorted."""
    fs, path = filesystem(url)
    suffixes = tuple(extensions)
    if _GLOB_CHARACTERS.search(path):
        found = fs.glob(path, detail=True)
        candidates = [p for p, info in found.items() if info.get("type") == "file"]
    elif fs.isfile(path):
        return fs, [path]
    elif fs.isdir(path):
        candidates = fs.find(path)
    else:
        candidates = []
    # Sorted as local paths are (by path components), so a copied corpus keeps its document order.
    return fs, sorted((p for p in candidates if p.endswith(suffixes)), key=PurePosixPath)


def remote_input_files(
    url: str,
    report: ReadReport,
    name: str | None = None,
    text_field: str = "text",
    id_field: str | None = None,
) -> Iterator[Document]:
    """Documents of every file a URL names, read like local input files (`sources.input_files`)."""
    fs, files = expand_remote_paths(url)
    if not files:
        raise FileNotFoundError(
            f"input {url!r} matches no file with extension {', '.join(INPUT_EXTENSIONS)}: "
            "check the URL, or pass a directory or glob"
        )
    source = name or remote_source_name(url)
    root = posixpath.commonpath([posixpath.dirname(p) for p in files])
    for path in files:
        # Relative to the input's root, as for local inputs, so ids do not depend on the bucket.
        relative = posixpath.relpath(path, root) if root else path
        if path.endswith(JSONL_EXTENSIONS):
            yield from jsonl_records(path, relative, source, report, text_field, id_field, fs=fs)
        elif path.endswith(PARQUET_EXTENSIONS):
            yield from parquet_records(path, relative, source, report, text_field, id_field, fs=fs)
        else:
            text = report.decode(fs.cat_file(path))
            yield Document(id=f"{source}:{relative}", source=source, origin=display_path(path, fs), text=text)
