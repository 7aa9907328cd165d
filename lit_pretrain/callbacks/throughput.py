"""Training callbacks: throughput, MFU and the tokens drawn from each data source."""

from __future__ import annotations

import time

import lightning as L
import torch

from lit_pretrain.parallel.apply import data_parallel_size_and_rank


class TokenThroughput(L.Callback):
    """Logs tokens/s, tokens seen and, with `peak_flops` given, model FLOPs utilisation (MFU)."""

    def __init__(self, peak_flops_per_device: float | None = None) -> None:
        self.peak_flops_per_device = peak_flops_per_device
        self._window_start: float | None = None
        self._window_tokens = 0
        self._data_parallel_size = 1  # the ranks that read different batches; set when training starts
        self._flops_per_token: int | None = None
        # Tokens drawn from each training source (by index); kept on the batch's device, read when logged.
        self._source_tokens: torch.Tensor | None = None
        self._source_names: list[str] = []

    def state_dict(self) -> dict:
        """The per-source token counts survive a resume."""
        counts = None if self._source_tokens is None else self._source_tokens.cpu()
        return {"source_tokens": counts, "source_names": self._source_names}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore per-source token counts."""
        self._source_tokens = state_dict.get("source_tokens")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock and work out the FLOPs per token once."""
        self._data_parallel_size = data_parallel_size_and_rank(trainer)[0]
        datamodule = trainer.datamodule
        seq_len = getattr(datamodule, "seq_len", None)
        if seq_len is not None and hasattr(pl_module, "model_summary"):
            summary = pl_module.model_summary(seq_len)
            self._flops_per_token = summary["flops_per_token"]
            if trainer.is_global_zero:
                print(
                    f"model {pl_module.config.name}: {summary['parameters'] / 1e6:.2f}M parameters, "
                    f"{summary['flops_per_token'] / 1e6:.1f} MFLOPs per token at seq_len {seq_len}",
                    flush=True,
                )
        self._source_names = [s.name for s in getattr(datamodule, "train_sources", [])]
        self._window_start = time.perf_counter()
        self._window_tokens = 0

    def _count_source_tokens(self, batch: dict[str, torch.Tensor]) -> None:
        tokens_per_window = batch["tokens"].size(1) - 1
        counts = torch.bincount(batch["source"], minlength=len(self._source_names)) * tokens_per_window
        self._source_tokens = (
            counts if self._source_tokens is None else self._source_tokens.to(counts.device) + counts
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        """Count tokens; every `log_every_n_steps` optimizer steps, log the rate over that window."""
        tokens = batch["tokens"] if isinstance(batch, dict) else batch
        self._window_tokens += tokens.size(0) * (tokens.size(1) - 1) * self._data_parallel_size
        if isinstance(batch, dict) and self._source_names:
            self._count_source_tokens(batch)
        is_step_end = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if not is_step_end or trainer.global_step % trainer.log_every_n_steps != 0:
            return
        elapsed = time.perf_counter() - self._window_start
        tokens_per_sec = self._window_tokens / max(elapsed, 1e-9)
        metrics = {"perf/tokens_per_sec": tokens_per_sec, "train/tokens_seen": float(pl_module.tokens_seen)}
        if self._flops_per_token and self.peak_flops_per_device:
            achieved = tokens_per_sec * self._flops_per_token / trainer.world_size
            metrics["perf/mfu"] = achieved / self.peak_flops_per_device
        if self._source_tokens is not None:
            # This process's draws; one host sync per logging interval.
            for name, count in zip(self._source_names, self._source_tokens.tolist(), strict=False):
                metrics[f"data/tokens/{name}"] = float(count)
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)
        pl_module.log("tok/s", tokens_per_sec, prog_bar=True, logger=False, on_step=True, on_epoch=False)
        self._window_start = time.perf_counter()
        self._window_tokens = 0
