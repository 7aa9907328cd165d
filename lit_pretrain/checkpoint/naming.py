"""Step checkpoint names (`step-NNNNNNN.ckpt`) and finding the newest complete one that loads."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from lit_pretrain.checkpoint.loading import DamagedCheckpointError, verify_checkpoint

log = logging.getLogger(__name__)

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
    """The step checkpoint with the highest step in `directory` that loads, or None when there is none.

    A newer one that does not load (truncated or corrupted, or refused as unsafe: `verify_checkpoint`) is
    skipped with a warning naming it. When step checkpoints exist but none loads, this raises instead of
    returning None: starting a fresh run would bury them (and retention would delete them), while the cause
    may be a passing filesystem fault.
    """
    checkpoints = step_checkpoints(directory)
    failures = []
    for _, path in reversed(checkpoints):
        try:
            verify_checkpoint(path)
        except Exception as error:  # whatever stops it from loading, resuming from it would fail the same way
            # A damaged file's own error already says "does not load": name torch's reason only.
            reason = _first_line(error.__cause__ if isinstance(error, DamagedCheckpointError) else error)
            log.warning("skipping %s: it does not load (%s)", path, reason)
            failures.append(f"  {path.name}: {reason}")
            continue
        return path
    if failures:
        listed = "\n".join(failures)
        raise ValueError(
            f"no step checkpoint in {directory} loads:\n{listed}\nNot starting a fresh run over them: "
            "check the filesystem, or move them away to start from scratch, or pass --ckpt_path PATH."
        )
    return None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
