"""`SourceTokenCounter`: training tokens drawn from each data source, logged as `data/tokens/<source>`."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lit_pretrain.data.batches import tokens_per_window
from lit_pretrain.data.datamodule import data_spec
from lit_pretrain.optim.accumulation import ends_optimizer_step


class SourceTokenCounter(L.Callback):
    """Counts this process's tokens per source (on the device, no sync) and logs them with the metrics.

    The counts are saved in checkpoints, so a resumed run continues them.
    """

    def __init__(self) -> None:
        self._counts: torch.Tensor | None = None
        self._source_names: list[str] = []

    def state_dict(self) -> dict[str, Any]:
        """The counts so far, by source index, and the names they belong to."""
        counts = None if self._counts is None else self._counts.cpu()
        return {"source_tokens": counts, "source_names": self._source_names}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from saved counts."""
        self._counts = state_dict.get("source_tokens")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Learn the source names (none: nothing is counted)."""
        data = data_spec(trainer)
        self._source_names = list(data.train_sources) if data is not None else []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Add the batch's tokens to its sources; log the totals on logged optimizer steps."""
        if not self._source_names or not isinstance(batch, dict):
            return
        windows = torch.bincount(batch["source"], minlength=len(self._source_names))
        counts = windows * tokens_per_window(batch)
        self._counts = counts if self._counts is None else self._counts.to(counts.device) + counts
        if not ends_optimizer_step(batch_idx, trainer.accumulate_grad_batches):
            return
        if trainer.global_step % trainer.log_every_n_steps != 0:
            return
        # One host sync per logging interval.
        metrics = {
            f"data/tokens/{name}": float(count)
            for name, count in zip(self._source_names, self._counts.tolist(), strict=False)
        }
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)
