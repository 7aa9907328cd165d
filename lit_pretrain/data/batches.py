"""What a training batch holds: windows of `seq_len + 1` tokens, optionally tagged with their source."""

from __future__ import annotations

import torch

Batch = torch.Tensor | dict[str, torch.Tensor]


def batch_windows(batch: Batch) -> torch.Tensor:
    """The [batch, seq_len + 1] token windows (`PretrainDataModule` gives {"tokens", "source"})."""
    return batch["tokens"] if isinstance(batch, dict) else batch


def tokens_per_window(batch: Batch) -> int:
    """Tokens one window trains on: one prediction per position but the last."""
    return batch_windows(batch).size(1) - 1


def tokens_in_batch(batch: Batch) -> int:
    """Tokens this batch trains on, over all its windows."""
    return batch_windows(batch).size(0) * tokens_per_window(batch)
