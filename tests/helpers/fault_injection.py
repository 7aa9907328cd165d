"""Run `lit-pretrain` with faults injected, for tests that kill a process at an exact point.

`python -m tests.helpers.fault_injection VERB ...` behaves like `lit-pretrain VERB ...`, except that with
PAUSE_MID_SAVE_ENV set to N every checkpoint file write pauses N seconds halfway through, so a test can
kill the process while a save is incomplete. The library holds no test-only code: this replaces its
one write function (`lit_pretrain.checkpoint.atomic.write_checkpoint_file`).
"""

from __future__ import annotations

import io
import os
import time
from typing import IO, Any

import torch

PAUSE_MID_SAVE_ENV = "LIT_PRETRAIN_TEST_PAUSE_MID_SAVE"


class _PausingFile:
    """A file wrapper that sleeps once after half of `expected_bytes` were written."""

    def __init__(self, file: IO[bytes], pause_seconds: float, expected_bytes: int) -> None:
        self._file = file
        self._pause_seconds = pause_seconds
        self._pause_after = expected_bytes // 2
        self._written = 0

    def write(self, data: bytes) -> int:
        written = self._file.write(data)
        before, self._written = self._written, self._written + written
        if before < self._pause_after <= self._written:
            self._file.flush()
            time.sleep(self._pause_seconds)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def pausing_write(pause_seconds: float):
    """A `write_checkpoint_file` that pauses halfway through each file."""

    def write(obj: Any, file: IO[bytes]) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        torch.save(obj, _PausingFile(file, pause_seconds, len(buffer.getvalue())))

    return write


def install() -> None:
    """Apply the faults the environment asks for."""
    pause = os.environ.get(PAUSE_MID_SAVE_ENV)
    if pause:
        from lit_pretrain.checkpoint import atomic

        atomic.write_checkpoint_file = pausing_write(float(pause))


if __name__ == "__main__":
    install()
    from lit_pretrain.cli import main

    main()
