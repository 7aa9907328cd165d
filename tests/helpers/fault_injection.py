"""Run `lit-pretrain` with faults injected, for tests that kill a process at an exact point.

`python -m tests.helpers.fault_injection VERB ...` behaves like `lit-pretrain VERB ...`, except that:
- with PAUSE_MID_SAVE_ENV set to N every checkpoint file write pauses N seconds halfway through, so a test
  can kill the process while a save is incomplete;
- with RANK_FAULT_ENV set to `RANK:STEP:ACTION`, the process of that global rank, when optimizer step STEP
  begins, kills itself (`kill`: SIGKILL), stops itself (`stop`: SIGSTOP, a frozen process whose threads
  all halt), or blocks its training thread for an hour (`hang`: its other threads run on); with
  `kill-mid-save` it kills itself halfway through writing the checkpoint of step STEP instead. Only on the
  first attempt of a torchrun job (TORCHELASTIC_RESTART_COUNT unset or 0), so a restart runs clean. With
  FAULT_RECORD_ENV naming a file, each process appends a JSON line with its rank and pid when training
  starts, and the faulty one another with the wall time of the fault just before it strikes.
The library holds no test-only code: this replaces its one write function
(`lit_pretrain.checkpoint.atomic.write_checkpoint_file`) and adds a callback through `run_lightning_cli`'s
`extra_callbacks`.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from typing import IO, Any

import lightning as L
import torch
import torch.distributed as dist

PAUSE_MID_SAVE_ENV = "LIT_PRETRAIN_TEST_PAUSE_MID_SAVE"
RANK_FAULT_ENV = "LIT_PRETRAIN_TEST_RANK_FAULT"
FAULT_RECORD_ENV = "LIT_PRETRAIN_TEST_FAULT_RECORD"
ACTIONS = ("kill", "stop", "hang", "kill-mid-save")


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


def record(event: str, **fields: Any) -> None:
    """Append one JSON line to the file FAULT_RECORD_ENV names (nothing without it)."""
    path = os.environ.get(FAULT_RECORD_ENV)
    if path:
        with open(path, "a") as file:
            file.write(json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields}) + "\n")


def strike(action: str, rank: int, step: int) -> None:
    """Record the fault, then kill, stop or block this process."""
    record("fault", rank=rank, step=step, action=action)
    if action in ("kill", "kill-mid-save"):
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        time.sleep(3600)


class RankFault(L.Callback):
    """Records each rank's pid when training starts; strikes on rank `rank` when step `step` begins."""

    def __init__(self, rank: int, step: int, action: str) -> None:
        self.rank, self.step, self.action = rank, step, action

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record("start", rank=trainer.global_rank)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        at_fault = trainer.global_rank == self.rank and trainer.global_step == self.step
        if at_fault and self.action in ("kill", "stop", "hang"):
            strike(self.action, self.rank, self.step)


def killing_write(rank: int, step: int):
    """A `write_checkpoint_file` that kills this process halfway through the checkpoint of `step` on `rank`."""

    def write(obj: Any, file: IO[bytes]) -> None:
        this_rank = dist.get_rank() if dist.is_initialized() else 0
        if this_rank != rank or obj.get("global_step") != step:
            torch.save(obj, file)
            return
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        strike("kill-mid-save", rank, step)

    return write


def parse_rank_fault(value: str) -> tuple[int, int, str]:
    """`RANK:STEP:ACTION` as (rank, step, action)."""
    rank, step, action = value.split(":")
    if action not in ACTIONS:
        raise ValueError(f"{RANK_FAULT_ENV}: action must be one of {ACTIONS}, got {action!r}")
    return int(rank), int(step), action


def install() -> None:
    """Apply the faults the environment asks for."""
    pause = os.environ.get(PAUSE_MID_SAVE_ENV)
    if pause:
        from lit_pretrain.checkpoint import atomic

        atomic.write_checkpoint_file = pausing_write(float(pause))
    fault = os.environ.get(RANK_FAULT_ENV)
    if fault and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        from lit_pretrain.checkpoint import atomic
        from lit_pretrain.cli import fit

        rank, step, action = parse_rank_fault(fault)
        callback = RankFault(rank, step, action)
        fit.main = lambda args=None: fit.run_lightning_cli(args, extra_callbacks=[callback])
        if action == "kill-mid-save":
            atomic.write_checkpoint_file = killing_write(rank, step)


if __name__ == "__main__":
    install()
    from lit_pretrain.cli import main

    main()
