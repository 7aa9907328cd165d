"""`TokenThroughput`: training tokens per second and, given the device's peak, model FLOPs utilisation."""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from lit_pretrain.data.batches import tokens_in_batch
from lit_pretrain.data.datamodule import data_spec
from lit_pretrain.data.distributed import data_parallel_size_and_rank
from lit_pretrain.model import ModelConfig, training_flops_per_token
from lit_pretrain.optim.accumulation import ends_optimizer_step


class TokenThroughput(L.Callback):
    """Logs `perf/tokens_per_sec` and, with `peak_flops_per_device`, `perf/mfu`.

    The rate is measured over the optimizer steps between two logged steps, on all data-parallel ranks.
    """

    def __init__(self, peak_flops_per_device: float | None = None) -> None:
        self.peak_flops_per_device = peak_flops_per_device
        self._window_start: float | None = None
        self._window_tokens = 0
        self._data_parallel_size = 1  # the ranks that read different batches; set when training starts
        self._flops_per_token: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock and work out the FLOPs per token once."""
        self._data_parallel_size = data_parallel_size_and_rank(trainer)[0]
        data, config = data_spec(trainer), getattr(pl_module, "config", None)
        if data is not None and isinstance(config, ModelConfig):
            self._flops_per_token = training_flops_per_token(config, data.seq_len)
        self._window_start = time.perf_counter()
        self._window_tokens = 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Count tokens; every `log_every_n_steps` optimizer steps, log the rate over that window."""
        self._window_tokens += tokens_in_batch(batch) * self._data_parallel_size
        if not ends_optimizer_step(batch_idx, trainer.accumulate_grad_batches):
            return
        if trainer.global_step % trainer.log_every_n_steps != 0:
            return
        elapsed = time.perf_counter() - self._window_start
        tokens_per_sec = self._window_tokens / max(elapsed, 1e-9)
        metrics = {"perf/tokens_per_sec": tokens_per_sec}
        if self._flops_per_token and self.peak_flops_per_device:
            achieved = tokens_per_sec * self._flops_per_token / trainer.world_size
            metrics["perf/mfu"] = achieved / self.peak_flops_per_device
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)
        pl_module.log("tok/s", tokens_per_sec, prog_bar=True, logger=False, on_step=True, on_epoch=False)
        self._window_start = time.perf_counter()
        self._window_tokens = 0
