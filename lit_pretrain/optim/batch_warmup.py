"""Batch-size warmup: while the run is young, each optimizer step trains on the first rows of its
micro-batches only, a share that grows linearly with the tokens trained on until it is the whole batch.

Why rows of fixed micro-batches, not fewer micro-batches per step: the data loader then yields exactly
what it yields without warmup, one micro-batch per `batch_idx`, and Lightning's accumulation keeps its
fixed `accumulate_grad_batches`. The rows used depend only on the token count at the start of the step,
which checkpoints hold, so a resumed run trains on exactly the rows the uninterrupted one did, under any
strategy (every data-parallel and tensor-parallel rank computes the same count). The price: the rows
left out are read and dropped, so the warmup consumes data faster than it trains on it, and the ramp
moves in whole rows (a micro-batch of one row cannot ramp, and is refused).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lit_pretrain.data.batches import Batch


@dataclass(frozen=True)
class BatchSizeWarmup:
    """`--model.batch_size_warmup_tokens` (0: off) and `--model.batch_size_warmup_start`."""

    tokens: int = 0  # trained tokens over which the batch grows to full size
    start: float = 0.0  # the share of each micro-batch trained on at first (at least one row)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            raise ValueError(f"--model.batch_size_warmup_tokens must be 0 (off) or more, got {self.tokens}")
        if not 0.0 <= self.start <= 1.0:
            raise ValueError(f"--model.batch_size_warmup_start must be between 0 and 1, got {self.start}")

    def rows(self, tokens_seen: int, micro_batch_size: int) -> int:
        """Rows of each micro-batch trained on by the optimizer step that starts after `tokens_seen` tokens."""
        if tokens_seen >= self.tokens:
            return micro_batch_size
        share = self.start + (1.0 - self.start) * tokens_seen / self.tokens
        # The epsilon keeps a share that is a whole number of rows from flooring one row lower.
        return max(1, min(micro_batch_size, math.floor(share * micro_batch_size + 1e-9)))

    def steps_to_reach(self, max_tokens: int, micro_batch_size: int, tokens_per_row: int) -> int:
        """Optimizer steps until `max_tokens` are trained on; `tokens_per_row`: a step's tokens per row."""
        steps, seen = 0, 0
        while seen < min(max_tokens, self.tokens):  # the ramp, step by step
            seen += self.rows(seen, micro_batch_size) * tokens_per_row
            steps += 1
        return steps + max(0, math.ceil((max_tokens - seen) / (micro_batch_size * tokens_per_row)))


def first_rows(batch: Batch, rows: int) -> Batch:
    """The first `rows` windows of a batch (and their source tags)."""
    if isinstance(batch, dict):
        return {key: value[:rows] for key, value in batch.items()}
    return batch[:rows]
