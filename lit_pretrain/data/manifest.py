"""`manifest.json`: what a prepared dataset holds and which tokenizer made it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
FORMAT_VERSION = 2
# What must agree between datasets mixed in one run, and between a checkpoint and the data it resumes on.
FINGERPRINT_KEYS = ("tokenizer_sha256", "vocab_size", "dtype")


def write_manifest(data_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest with sorted keys, so equal datasets have byte-equal manifests."""
    (data_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared dataset, or a clear error saying how to make one."""
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST_NAME
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"data directory {data_dir} does not exist: prepare one with "
            f"`lit-pretrain prepare INPUT... --output_dir {data_dir}` (or `make data` for the built-in corpus)"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{data_dir} has no {MANIFEST_NAME}, so it is not a finished `lit-pretrain prepare` output "
            "(an interrupted prepare leaves none): prepare it again"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): prepare the dataset again") from err
    for key in ("vocab_size", "dtype", "tokenizer_sha256", "splits", "sources"):
        if key not in manifest:
            raise ValueError(f"{path} lacks the key {key!r}: prepare the dataset again")
    return manifest


def fingerprint(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest entries that decide what token ids mean."""
    return {key: manifest.get(key) for key in FINGERPRINT_KEYS}


def check_fingerprints_match(
    expected: dict[str, Any], found: dict[str, Any], expected_from: str, found_from: str
) -> None:
    """Raise naming both values when two datasets (or a checkpoint and a dataset) disagree on tokens."""
    for key in FINGERPRINT_KEYS:
        if expected.get(key) != found.get(key):
            raise ValueError(
                f"{key} differs: {expected.get(key)!r} in {expected_from} but {found.get(key)!r} in {found_from}; "
                "token ids would mean different things. Prepare the data with the same tokenizer "
                "(--tokenizer PATH/tokenizer.json)"
            )


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """A table of documents and tokens per source, then what was dropped and why, as lines to print."""
    header = ("source", "docs in", "kept", "exact dup", "near dup", "filtered", "train tokens", "val tokens")
    rows = [header]
    for name, s in manifest["sources"].items():
        rows.append(
            (
                name,
                f"{s['documents_in']:,}",
                f"{s['documents_kept']:,}",
                f"{s['exact_duplicates']:,}",
                f"{s['near_duplicates']:,}",
                f"{sum(s['filtered'].values()):,}",
                f"{s['train']['tokens']:,}",
                f"{s['val']['tokens']:,}",
            )
        )
    rows.append(
        (
            "total",
            f"{manifest['documents_in']:,}",
            f"{manifest['documents_kept']:,}",
            f"{manifest['exact_duplicates']:,}",
            f"{manifest['near_duplicates']:,}",
            f"{sum(manifest['filtered'].values()):,}",
            f"{manifest['tokens_train']:,}",
            f"{manifest['tokens_val']:,}",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    if manifest["filtered"]:
        lines.append("filtered: " + ", ".join(f"{k} {v:,}" for k, v in manifest["filtered"].items()))
    decontamination = manifest.get("decontamination")
    if decontamination and decontamination["dropped"]:
        by_file = ", ".join(f"{path} {count:,}" for path, count in decontamination["by_file"].items())
        lines.append(f"decontaminated: {decontamination['dropped']:,} ({by_file})")
    malformed = manifest["malformed_records"]
    lines.append(
        f"empty documents: {manifest['empty_documents']:,}   invalid UTF-8 (replaced): "
        f"{manifest['invalid_utf8_documents']:,}   malformed records: {malformed['count']:,}"
    )
    lines.extend(f"  malformed: {location}" for location in malformed["first"])
    # Older manifests have no such key.
    unread = manifest.get("unread_files") or {}
    if unread:
        counts = ", ".join(
            f"{extension or '(no extension)'} {count:,}" for extension, count in unread.items()
        )
        lines.append(f"files not read (extension prepare does not read): {counts}")
    return lines
