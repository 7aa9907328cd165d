"""`AtomicModelParallelStrategy`: Lightning's FSDP2/TP strategy with atomic sharded checkpoints.

It sits in training/ rather than parallel/ because it joins two lower concerns: the parallel layout
(`parallel.layout`) and the crash-safe checkpoint files (`checkpoint.atomic`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy

from lit_pretrain._compat.lightning import model_parallel_sizes, set_model_parallel_sizes
from lit_pretrain.checkpoint.atomic import fsync_directory, temporary_path
from lit_pretrain.checkpoint.legacy import FUSED_QKV_RESUME_ERROR, has_fused_qkv
from lit_pretrain.checkpoint.loading import read_dcp_metadata, verify_checkpoint
from lit_pretrain.parallel.layout import resolve_parallel_sizes


class AtomicModelParallelStrategy(ModelParallelStrategy):
    """Lightning's `ModelParallelStrategy` (FSDP2, TP) with atomic sharded checkpoints.

    Every rank writes its shard into a temporary directory; once all are done, rank 0 renames it to the
    final name. A crash mid-save leaves only the temporary directory, which the next run deletes.
    """

    def setup_environment(self) -> None:
        """Resolve 'auto' sizes with the suite's one resolver (the one `estimate` uses too).

        Lightning sets an "auto" data_parallel_size to the number of nodes even when tensor_parallel_size
        is 1, so `data_parallel_size: auto, tensor_parallel_size: 1` would fail on one node of 8 GPUs.
        """
        data_parallel, tensor_parallel = model_parallel_sizes(self)
        set_model_parallel_sizes(
            self, *resolve_parallel_sizes(data_parallel, tensor_parallel, self.num_nodes, self.num_processes)
        )
        super().setup_environment()

    def load_checkpoint(
        self, checkpoint_path: str | Path, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Check a sharded checkpoint safely first; refuse, with advice, one with the old fused qkv projection.

        torch's DCP reader unpickles the metadata without restrictions (and Lightning calls it): the
        directory is read first with the allowlisted reader, so a crafted one is refused before that.
        """
        path = Path(checkpoint_path)
        if path.is_dir():
            if has_fused_qkv(read_dcp_metadata(path).state_dict_metadata):
                raise ValueError(FUSED_QKV_RESUME_ERROR)
            verify_checkpoint(path)
        return super().load_checkpoint(checkpoint_path, weights_only)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: str | Path, storage_options: Any = None
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
            fsync_directory(path.parent)
        self.barrier("checkpoint-renamed")
