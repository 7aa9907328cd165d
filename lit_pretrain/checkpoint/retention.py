"""`RetainingCheckpoint`: step checkpoints, the newest few (and every k-th) kept, `last` swapped atomically."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L

from lit_pretrain._compat.lightning import StepCheckpointBase
from lit_pretrain.checkpoint.atomic import remove_leftovers, temporary_path
from lit_pretrain.checkpoint.naming import checkpoint_step, step_checkpoints

log = logging.getLogger(__name__)


class RetainingCheckpoint(StepCheckpointBase):
    """`ModelCheckpoint` that keeps the newest `keep_last` step checkpoints plus every `keep_every`-th step.

    Checkpoints are named `step-NNNNNNN.ckpt`; `last.ckpt` is a symbolic link to the newest one, swapped
    atomically. Files with other names in the directory are never deleted. `save_now(trainer)` saves the
    current step on demand (used by preemption).
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

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Also delete what killed saves left behind."""
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath is not None:
            for path in remove_leftovers(Path(self.dirpath)):
                log.info("removed %s, left by a save that did not finish", path.name)

    def on_checkpoint_written(self, trainer: L.Trainer, filepath: Path) -> None:
        """Prune old step checkpoints once a new one is complete."""
        if trainer.is_global_zero and checkpoint_step(filepath) is not None:
            self._prune(filepath.parent)

    def _prune(self, directory: Path) -> None:
        checkpoints = step_checkpoints(directory)
        newest = {step for step, _ in checkpoints[-self.keep_last :]}
        for step, path in checkpoints:
            if step in newest or (self.keep_every and step % self.keep_every == 0):
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def link_last(self, trainer: L.Trainer, filepath: str, linkpath: str) -> None:
        """Point `linkpath` at `filepath` by renaming a new link over the old one (never a missing link)."""
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            link = Path(linkpath)
            temporary = temporary_path(link)
            temporary.unlink(missing_ok=True)
            os.symlink(os.path.relpath(filepath, link.parent), temporary)
            os.replace(temporary, link)
        trainer.strategy.barrier()
