"""Step checkpoint names (`step-NNNNNNN.ckpt`) and finding the newest complete one."""

from __future__ import annotations

import re
from pathlib import Path

STEP_PATTERN = re.compile(r"step-(\d+)\.ckpt$")
STEP_FILENAME = "step-{step:07d}"  # ModelCheckpoint's filename template for these names


def checkpoint_step(path: Path) -> int | None:
    """The global step in a `step-NNNNNNN.ckpt` name, else None."""
    match = STEP_PATTERN.search(path.name)
    return int(match.group(1)) if match else None


def step_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete step checkpoint in `directory`, oldest first (temporaries never count)."""
    if not directory.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in directory.iterdir() if not p.name.startswith(".")]
    return sorted((step, path) for step, path in found if step is not None)


def find_last_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint with the highest step in `directory`, or None."""
    checkpoints = step_checkpoints(directory)
    return checkpoints[-1][1] if checkpoints else None
