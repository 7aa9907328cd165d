"""Gradient accumulation: which micro-batch closes an optimizer step."""

from __future__ import annotations


def ends_optimizer_step(batch_idx: int, accumulate_grad_batches: int) -> bool:
    """Whether micro-batch `batch_idx` (0-based, within the epoch) is the last of its optimizer step."""
    return (batch_idx + 1) % accumulate_grad_batches == 0
