"""`TokenThroughput`: tokens per second, FLOP/s, model FLOPs utilisation, step time and data-loading wait."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch

from lit_pretrain._compat.lightning import should_log_this_step
from lit_pretrain.data.batches import tokens_in_batch
from lit_pretrain.data.datamodule import data_spec
from lit_pretrain.data.distributed import data_parallel_size_and_rank
from lit_pretrain.model import ModelConfig, training_flops_per_token
from lit_pretrain.optim.accumulation import ends_optimizer_step
from lit_pretrain.parallel.apply import float8_unavailable_reason
from lit_pretrain.parallel.config import ParallelConfig
from lit_pretrain.parallel.devices import compute_precision, peak_flops

log = logging.getLogger(__name__)


class TokenThroughput(L.Callback):
    """Logs `perf/*` over the optimizer steps between two logged steps.

    `perf/tokens_per_sec` counts the tokens of all data-parallel ranks; `perf/tokens_per_sec_per_device` and
    `perf/tflops_per_sec_per_device` divide by every device of the run (tensor-parallel ones too), the
    FLOPs being the model's own formula (`model.flops`). `perf/mfu` is those FLOP/s over the device's dense
    peak at the run's matmul precision: from `parallel.devices`' table, or `peak_tflops` (the only way on a
    CPU or an unknown device; without a peak, no MFU is logged, never a guessed one). `perf/step_time_ms`
    is the wall time per optimizer step and `perf/dataloader_wait_ms` the part of it spent waiting for
    batches. Time spent validating and saving checkpoints is left out of the window.
    """

    def __init__(self, peak_tflops: float | None = None) -> None:
        if peak_tflops is not None and peak_tflops <= 0:
            raise ValueError(f"perf.peak_tflops must be positive, got {peak_tflops}")
        self.peak_tflops = peak_tflops
        self.peak_flops_per_device: float | None = None
        self._flops_per_token: int | None = None
        self._data_parallel_size = 1
        self._window_start = 0.0
        self._window_tokens = 0
        self._window_steps = 0
        self._window_wait_start = 0.0
        self._excluded = 0.0  # seconds of validation and checkpointing inside the window
        self._paused_at: float | None = None
        self._wait_at_pause = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Work out the FLOPs per token and the device's peak once; start the clock."""
        self._data_parallel_size = data_parallel_size_and_rank(trainer)[0]
        data, config = data_spec(trainer), getattr(pl_module, "config", None)
        if data is not None and isinstance(config, ModelConfig):
            self._flops_per_token = training_flops_per_token(config, data.seq_len)
        self.peak_flops_per_device = self._peak_flops(trainer, pl_module)
        self._start_window(trainer)

    def _peak_flops(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float | None:
        if self.peak_tflops is not None:
            return self.peak_tflops * 1e12
        device = trainer.strategy.root_device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        precision = run_precision(trainer.precision, getattr(pl_module, "parallel_config", None))
        peak = peak_flops(name, precision)
        if peak is None:
            log.info(
                "no peak FLOP/s known for %r at %s: perf/mfu is not logged (set --perf.peak_tflops to the "
                "device's dense peak TFLOP/s to get it)",
                name,
                precision,
            )
        else:
            log.info("MFU against %s's dense %s peak, %.1f TFLOP/s per device", name, precision, peak / 1e12)
        return peak

    def _loader_wait_seconds(self, trainer: L.Trainer) -> float:
        return float(getattr(trainer.train_dataloader, "wait_seconds", 0.0))

    def _start_window(self, trainer: L.Trainer) -> None:
        self._window_start = time.perf_counter()
        self._window_wait_start = self._loader_wait_seconds(trainer)
        self._window_tokens = self._window_steps = 0
        self._excluded = 0.0
        self._paused_at = None

    def _pause(self, trainer: L.Trainer) -> None:
        if self._paused_at is None:
            self._paused_at = time.perf_counter()
            self._wait_at_pause = self._loader_wait_seconds(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Validation inside training is not training time."""
        self._pause(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Neither is writing a checkpoint (the pause lasts until the next training batch starts)."""
        self._pause(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """End a pause; the wait for this batch's data, fetched during it, still counts as training time."""
        if self._paused_at is not None:
            waited = self._loader_wait_seconds(trainer) - self._wait_at_pause
            self._excluded += time.perf_counter() - self._paused_at - waited
            self._paused_at = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Count tokens; on logged optimizer steps, log the window's rates and start a new window."""
        self._window_tokens += tokens_in_batch(batch) * self._data_parallel_size
        if not ends_optimizer_step(batch_idx, trainer.accumulate_grad_batches):
            return
        self._window_steps += 1
        if not should_log_this_step(trainer):
            return
        now = time.perf_counter()
        elapsed = max(now - self._window_start - self._excluded, 1e-9)
        waited = self._loader_wait_seconds(trainer) - self._window_wait_start
        pl_module.log_dict(self.metrics(elapsed, waited, trainer.world_size), on_step=True, on_epoch=False)
        self._start_window(trainer)

    def metrics(self, elapsed: float, waited: float, world_size: int) -> dict[str, float]:
        """The window's `perf/*` values from its wall time and data wait, in seconds."""
        tokens_per_sec = self._window_tokens / elapsed
        metrics = {
            "perf/tokens_per_sec": tokens_per_sec,
            "perf/tokens_per_sec_per_device": tokens_per_sec / world_size,
            "perf/step_time_ms": 1000 * elapsed / self._window_steps,
            "perf/dataloader_wait_ms": 1000 * max(waited, 0.0) / self._window_steps,
        }
        if self._flops_per_token:
            flops_per_device = tokens_per_sec * self._flops_per_token / world_size
            metrics["perf/tflops_per_sec_per_device"] = flops_per_device / 1e12
            if self.peak_flops_per_device:
                metrics["perf/mfu"] = flops_per_device / self.peak_flops_per_device
        return metrics


def run_precision(trainer_precision: str | int, parallel: ParallelConfig | None) -> str:
    """The precision key of a run's matmuls: Lightning's precision, FSDP2's compute dtype, float8 if it runs."""
    return compute_precision(
        trainer_precision,
        fsdp_param_dtype=parallel.fsdp_param_dtype if parallel else None,
        float8=bool(parallel and parallel.float8) and float8_unavailable_reason() is None,
        float32_matmul_precision=torch.get_float32_matmul_precision(),
    )
