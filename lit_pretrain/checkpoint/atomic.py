"""Checkpoint files that a crash cannot corrupt: write beside, flush, then rename into place.

A checkpoint is written under a temporary name in its final directory, flushed to disk, then renamed
(`os.replace` is atomic on POSIX). A process killed mid-save therefore leaves only a temporary file,
which the next run deletes; every file with a final name is complete. Reading one back (a resume) goes
through the safe loader of `checkpoint/loading.py`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_pretrain.checkpoint.loading import load_checkpoint_file

TEMPORARY_MARK = ".tmp-"


def temporary_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (same directory, so rename is atomic)."""
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_checkpoint_file(obj: Any, file: IO[bytes]) -> None:
    """Serialize `obj` into an open file (the one place tests replace to inject a fault mid-write)."""
    torch.save(obj, file)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """`torch.save` to a temporary file beside `path`, fsync, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as file:
            write_checkpoint_file(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete temporary files that killed saves left in `directory`; returns what was removed."""
    if not directory.is_dir():
        return []
    removed = [p for p in directory.iterdir() if TEMPORARY_MARK in p.name and p.name.startswith(".")]
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with atomic local writes and safe reads (see the module docstring)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        """Write `checkpoint` to `path` atomically."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read `path` with `weights_only=True`, refused unless trusted when it needs more (loading.py).

        Lightning's `weights_only` (`--weights_only`) is not the override: `LIT_PRETRAIN_TRUST_CHECKPOINTS=1`
        is, the same for every loader, so `--weights_only false` cannot unpickle a file the rest refuses.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        # Read whole, not memory-mapped, as Lightning does: the restored tensors are then trained in place.
        return load_checkpoint_file(path, map_location=map_location, mmap=False)
