"""`manifest.json`: what a prepared dataset holds and which tokenizer made it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
FORMAT_VERSION = 1


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
    for key in ("vocab_size", "dtype", "tokenizer_sha256", "splits"):
        if key not in manifest:
            raise ValueError(f"{path} lacks the key {key!r}: prepare the dataset again")
    return manifest
