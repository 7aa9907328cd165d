"""What a training batch holds: windows of `seq_len + 1` tokens, optionally tagged with their source."""

from __future__ import annotations

import torch

Batch = torch.Tensor | dict[str, torch.Tensor]


def batch_windows(batch: Batch) -> torch.Tensor:
    """The [batch, seq_len + 1] token windows (`PretrainDataModule` gives {"tokens", "source"})."""
    return batch["tokens"] if isinstance(batch, dict) else batch


def tokens_in_batch(batch: Batch) -> int:
    """Tokens this batch trains on: one prediction per window position but the last."""
    windows = batch_windows(batch)
    return windows.size(0) * (windows.size(1) - 1)
