"""Checkpoints that a crash cannot corrupt: atomic writes, retention, and finding the newest complete one.

A checkpoint is written under a temporary name in its final directory, flushed to disk, then renamed
(`os.replace` is atomic on POSIX). A process killed mid-save therefore leaves only a temporary file,
which the next run deletes; every file with a final name is complete.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import ModelParallelStrategy

TEMPORARY_MARK = ".tmp-"
STEP_PATTERN = re.compile(r"step-(\d+)\.ckpt$")
# Fault injection for tests: seconds to pause halfway through writing a checkpoint, so a test can kill
# the process at exactly that point. Unset in normal use.
PAUSE_MID_SAVE_ENV = "LIT_PRETRAIN_TEST_PAUSE_MID_SAVE"


def temporary_path(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (same directory, so rename is atomic)."""
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _PausingFile:
    """A file wrapper that sleeps once after half of `expected_bytes` were written (fault injection)."""

    def __init__(self, file, pause_seconds: float, expected_bytes: int) -> None:
        self._file = file
        self._pause_seconds = pause_seconds
        self._pause_after = expected_bytes // 2
        self._written = 0

    def write(self, data) -> int:
        """Write, pausing once at the halfway mark."""
        written = self._file.write(data)
        before, self._written = self._written, self._written + written
        if before < self._pause_after <= self._written:
            import time

            self._file.flush()
            time.sleep(self._pause_seconds)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """`torch.save` to a temporary file beside `path`, fsync, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as file:
            pause = os.environ.get(PAUSE_MID_SAVE_ENV)
            if pause:
                size = len(_serialized(obj))
                torch.save(obj, _PausingFile(file, float(pause), size))
            else:
                torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _serialized(obj: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


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


def checkpoint_step(path: Path) -> int | None:
    """The global step in a `step-NNNNNNN.ckpt` name, else None."""
    match = STEP_PATTERN.search(path.name)
    return int(match.group(1)) if match else None


def find_last_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint with the highest step in `directory` (temporary files never count)."""
    if not directory.is_dir():
        return None
    candidates = [
        p for p in directory.iterdir() if checkpoint_step(p) is not None and not p.name.startswith(".")
    ]
    return max(candidates, key=checkpoint_step, default=None)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint as one dict on the CPU: a file, or a sharded (FSDP2) directory gathered in full.

    Only for checkpoints you trust: they hold pickled training state.
    """
    if path.is_dir():
        from lightning.fabric.utilities.load import _load_distributed_checkpoint

        # Needs the whole model in CPU memory, but no process group: a checkpoint written by N
        # processes reads back in one.
        checkpoint = _load_distributed_checkpoint(path)
    else:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    if "state_dict" in checkpoint:
        split_fused_qkv(checkpoint["state_dict"])
    return checkpoint


FUSED_QKV = ".attn.qkv."
FUSED_QKV_RESUME_ERROR = (
    "this checkpoint was written before the attention's fused qkv projection was split into q, k and v: "
    "its optimizer state cannot be resumed. Start from its weights instead with --model.init_from PATH "
    "(fresh optimizer and schedule)"
)


def split_fused_qkv(state_dict: dict[str, torch.Tensor]) -> bool:
    """Rewrite, in place, weights saved with one fused `attn.qkv` projection as `attn.q`, `.k` and `.v`.

    Checkpoints written before tensor parallelism split the projection still load as weights (for
    generation or --model.init_from); their optimizer states cannot be resumed. Returns whether any
    key was rewritten.
    """
    fused = [key for key in state_dict if FUSED_QKV in key]
    for key in fused:
        value = state_dict.pop(key)
        prefix, kind = key.split(FUSED_QKV)
        # Rows are [q (n_embd), k (kv width), v (kv width)]; the weight is [rows, n_embd].
        width = state_dict[f"{prefix}.attn.proj.weight"].shape[0]
        kv_width = (value.shape[0] - width) // 2
        for name, part in zip("qkv", value.split([width, kv_width, kv_width]), strict=True):
            state_dict[f"{prefix}.attn.{name}.{kind}"] = part.clone()
    return bool(fused)


class AtomicModelParallelStrategy(ModelParallelStrategy):
    """Lightning's `ModelParallelStrategy` (FSDP2, TP) with atomic sharded checkpoints.

    Every rank writes its shard into a temporary directory; once all are done, rank 0 renames it to the
    final name. A crash mid-save leaves only the temporary directory, which the next run deletes.
    """

    def setup_environment(self) -> None:
        """Resolve a lone "auto" size as the world size divided by the other size.

        Lightning sets an "auto" data_parallel_size to the number of nodes even when tensor_parallel_size
        is 1, so `data_parallel_size: auto, tensor_parallel_size: 1` would fail on one node of 8 GPUs.
        """
        world = self.num_nodes * self.num_processes
        data_parallel, tensor_parallel = self._data_parallel_size, self._tensor_parallel_size
        if data_parallel == "auto" and tensor_parallel != "auto":
            self._data_parallel_size = world // int(tensor_parallel)
        elif tensor_parallel == "auto" and data_parallel != "auto":
            self._tensor_parallel_size = world // int(data_parallel)
        super().setup_environment()

    def load_checkpoint(self, checkpoint_path: _PATH, weights_only: bool | None = None) -> dict[str, Any]:
        """Refuse, with advice, a sharded checkpoint saved with the old fused qkv projection."""
        path = Path(checkpoint_path)
        if path.is_dir():
            from torch.distributed.checkpoint import FileSystemReader

            keys = FileSystemReader(path).read_metadata().state_dict_metadata
            if any(FUSED_QKV in key for key in keys):
                raise ValueError(FUSED_QKV_RESUME_ERROR)
        return super().load_checkpoint(checkpoint_path, weights_only)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any = None
    ) -> None:
        """Save into a temporary directory, then rename it into place."""
        path = Path(self.broadcast(str(filepath)))
        temporary = Path(self.broadcast(str(temporary_path(path))))
        super().save_checkpoint(checkpoint, temporary, storage_options)
        self.barrier("checkpoint-written")
        if self.global_rank == 0:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            os.replace(temporary, path)
            _fsync_directory(path.parent)
        self.barrier("checkpoint-renamed")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with atomic local writes (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        """Write `checkpoint` to `path` atomically."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, Path(path))


class RetainingCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that keeps the newest `keep_last` step checkpoints plus every `keep_every`-th step.

    Checkpoints are named `step-NNNNNNN.ckpt`; `last.ckpt` is a symbolic link to the newest one, swapped
    atomically. Files with other names in the directory are never deleted.
    """

    def __init__(self, *args: Any, keep_last: int = 3, keep_every: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if keep_last < 2:
            raise ValueError(
                f"checkpoint.keep_last must be at least 2 (got {keep_last}): with one, a crash during the "
                "next save could leave no complete checkpoint to resume from"
            )
        if keep_every is not None and keep_every < 1:
            raise ValueError(f"checkpoint.keep_every must be a positive number of steps, got {keep_every}")
        self.keep_last = keep_last
        self.keep_every = keep_every

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Also delete what killed saves left behind."""
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath is not None:
            for path in remove_leftovers(Path(self.dirpath)):
                print(f"[checkpoint] removed {path.name}, left by a save that did not finish", flush=True)

    def _save_last_checkpoint(self, trainer, monitor_candidates: dict[str, Any]) -> None:
        # Lightning may save "last" at an epoch's end; make that step a step checkpoint too, so `last`
        # always links a step checkpoint and `--ckpt_path last` finds it.
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_topk_checkpoint(trainer, monitor_candidates)
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def on_train_end(self, trainer, pl_module) -> None:
        """Save the final step when the run stops between two regular saves."""
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and checkpoint_step(Path(filepath)) is not None:
            self._prune(Path(filepath).parent)

    def _prune(self, directory: Path) -> None:
        steps = sorted(
            (checkpoint_step(p), p)
            for p in directory.iterdir()
            if checkpoint_step(p) is not None and not p.name.startswith(".")
        )
        newest = {step for step, _ in steps[-self.keep_last :]}
        for step, path in steps:
            if step in newest or (self.keep_every and step % self.keep_every == 0):
                continue
            self._remove_checkpoint_path(path)

    @staticmethod
    def _remove_checkpoint_path(path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

    @staticmethod
    def _link_checkpoint(trainer, filepath: str, linkpath: str) -> None:
        """Point `linkpath` at `filepath` by renaming a new link over the old one (never a missing link)."""
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            link = Path(linkpath)
            temporary = temporary_path(link)
            temporary.unlink(missing_ok=True)
            os.symlink(os.path.relpath(filepath, link.parent), temporary)
            os.replace(temporary, link)
        trainer.strategy.barrier()
