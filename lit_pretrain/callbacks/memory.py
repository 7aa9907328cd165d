"""`MemoryMonitor`: the process's resident memory and, on CUDA, the allocator's peaks."""

from __future__ import annotations

from typing import Any

import lightning as L
import psutil
import torch

from lit_pretrain._compat.lightning import should_log_this_step
from lit_pretrain.optim.accumulation import ends_optimizer_step

GIB = 2**30


class MemoryMonitor(L.Callback):
    """Logs `memory/rss_gb` (host memory of this process) on logged steps and, on CUDA,
    `memory/max_allocated_gb` and `memory/max_reserved_gb`: the peaks since the previous logged step.

    Values are in GiB, from global rank 0 (Lightning logs rank 0's values). Reading them needs no device sync.
    """

    def __init__(self) -> None:
        self._process = psutil.Process()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Log the memory figures with the step's other metrics."""
        if not (
            ends_optimizer_step(batch_idx, trainer.accumulate_grad_batches) and should_log_this_step(trainer)
        ):
            return
        pl_module.log_dict(self.metrics(trainer.strategy.root_device), on_step=True, on_epoch=False)

    def metrics(self, device: torch.device) -> dict[str, float]:
        """The current figures; on CUDA the peaks are reset, so each value covers one logging interval."""
        metrics = {"memory/rss_gb": self._process.memory_info().rss / GIB}
        if device.type == "cuda":
            metrics["memory/max_allocated_gb"] = torch.cuda.max_memory_allocated(device) / GIB
            metrics["memory/max_reserved_gb"] = torch.cuda.max_memory_reserved(device) / GIB
            torch.cuda.reset_peak_memory_stats(device)
        return metrics
