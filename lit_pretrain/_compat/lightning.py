"""Private Lightning names: checked against lightning 2.6.6 (`CHECKED_AGAINST`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy

CHECKED_AGAINST = "2.6.6"


def should_log_this_step(trainer: L.Trainer) -> bool:
    """Lightning's own "does this optimizer step log?" (log_every_n_steps, counted over steps that stepped).

    Public alternatives count differently around resumption and skipped steps, so the private answer
    is used: the gradient norm is then computed exactly on the steps whose metrics are written.
    """
    return bool(trainer._logger_connector.should_update_logs)


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The trainer a module is attached to, or None (`module.trainer` raises when there is none)."""
    return module._trainer


def load_sharded_checkpoint(
    path: Path, storage_reader: Any = None, weights_only: bool = True
) -> dict[str, Any]:
    """A sharded (torch.distributed.checkpoint) directory gathered into one dict in this process.

    Needs the whole checkpoint in CPU memory but no process group: N processes' shards read back in one.
    Lightning's `_load_distributed_checkpoint`, changed where it would unpickle without restriction:
    the DCP `.metadata` is read by the caller's `storage_reader` (a `StorageReader`; the default, torch's
    `FileSystemReader`, runs `pickle.load` on it), and the non-tensor values in the shards (which torch's
    planner loads with `weights_only=False`) and Lightning's `meta.pt` are loaded with `weights_only`.
    """
    import torch
    from lightning.fabric.utilities.load import _METADATA_FILENAME
    from torch.distributed.checkpoint import CheckpointException, FileSystemReader
    from torch.distributed.checkpoint._traverse import set_element
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    class Planner(_EmptyStateDictLoadPlanner):
        def load_bytes(self, read_item: Any, value: Any) -> None:
            loaded = torch.load(value, map_location="cpu", weights_only=weights_only)
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)

    checkpoint: dict[str, Any] = {}
    try:
        _load_state_dict(
            checkpoint,
            storage_reader=storage_reader or FileSystemReader(path),
            planner=Planner(),
            no_dist=True,
        )
    except CheckpointException as error:
        # DCP wraps each rank's error; in one process there is one, and callers act on its type.
        failures = [failure for failure, _ in error.failures.values()]
        if len(failures) == 1 and isinstance(failures[0], Exception):
            raise failures[0] from None
        raise
    extra_file = path / _METADATA_FILENAME  # Lightning's: everything but the weights and optimizer states
    if extra_file.is_file():
        checkpoint.update(torch.load(extra_file, map_location="cpu", weights_only=weights_only))
    return checkpoint


def model_parallel_sizes(strategy: ModelParallelStrategy) -> tuple[int | str, int | str]:
    """The (data_parallel_size, tensor_parallel_size) a `ModelParallelStrategy` was given ('auto' allowed)."""
    return strategy._data_parallel_size, strategy._tensor_parallel_size


def set_model_parallel_sizes(
    strategy: ModelParallelStrategy, data_parallel: int, tensor_parallel: int
) -> None:
    """Replace the sizes before `setup_environment` builds the device mesh from them."""
    strategy._data_parallel_size, strategy._tensor_parallel_size = data_parallel, tensor_parallel


class StepCheckpointBase(ModelCheckpoint):
    """`ModelCheckpoint` whose saves are always step checkpoints, with public hooks for subclasses.

    What it changes in Lightning's private save path: `last` is always also a step checkpoint (Lightning
    may save only `last` at an epoch's end), the final step is saved when training ends between two
    regular saves, every written file is reported to `on_checkpoint_written`, and the `last` link is made
    by `link_last` (overridable). `save_now` saves the current step on demand (preemption).
    """

    def save_now(self, trainer: L.Trainer) -> str:
        """Save a step checkpoint and point `last` at it, unless this step is already saved; its path."""
        if self._last_global_step_saved != trainer.global_step:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
        return self._last_checkpoint_saved

    def on_checkpoint_written(self, trainer: L.Trainer, filepath: Path) -> None:
        """Called on every rank after a checkpoint file or directory was written."""

    def link_last(self, trainer: L.Trainer, filepath: str, linkpath: str) -> None:
        """Point `linkpath` at `filepath` on rank 0, then wait for all ranks (Lightning: remove, then link)."""
        ModelCheckpoint._link_checkpoint(trainer, filepath, linkpath)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the final step when the run stops between two regular saves."""
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_topk_checkpoint(trainer, monitor_candidates)
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self.on_checkpoint_written(trainer, Path(filepath))

    def _link_checkpoint(self, trainer: L.Trainer, filepath: str, linkpath: str) -> None:
        # An instance method here (a staticmethod in Lightning), so that `link_last` can be overridden.
        self.link_last(trainer, filepath, linkpath)
