"""Log-likelihood of token sequences under a causal language model: the one scoring primitive.

Every score in lit-pretrain goes through here: the in-loop `TextBitsPerByte`, `lit-pretrain evaluate`'s
loss, perplexity and bits per byte, and its multiple-choice tasks (the log-likelihood of a continuation
given a context). The model is any function from token ids [B, T] to logits [B, T, vocab]: a bare `GPT`,
or a Hugging Face model behind an adapter.

A sequence is scored from a first target position on: every token from there to the end is predicted
from the tokens before it. A sequence longer than the model's context is cut into consecutive windows of
`max_length` inputs from its start, each read without the previous window (as `TextBitsPerByte` always
did; lm-evaluation-harness instead gives a short last window the full context before it, so its rolling
log-likelihoods of long texts can differ slightly). A continuation is scored as lm-evaluation-harness
scores one: the context is cut from the left so that context and continuation fit in one window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # a target that is context, or padding, not a prediction
# Token ids [B, T] -> logits [B, T, vocab].
Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Windows:
    """The rows the model reads to score some sequences: inputs, targets (IGNORE where nothing is scored)
    and the index of the sequence each row belongs to; rows sorted by length, longest first, so a batch of
    neighbouring rows needs little padding."""

    inputs: torch.Tensor  # [rows, longest] long, padded with 0 after each row's tokens
    targets: torch.Tensor  # [rows, longest] long, IGNORE on context and padding
    lengths: torch.Tensor  # [rows] long, the real length of each row
    owners: torch.Tensor  # [rows] long, index of the sequence in the caller's list
    num_sequences: int

    @property
    def num_targets(self) -> torch.Tensor:
        """Scored tokens per sequence, [num_sequences] long."""
        counts = (self.targets != IGNORE).sum(dim=1)
        return torch.zeros(self.num_sequences, dtype=torch.long).index_add_(0, self.owners, counts)


@dataclass(frozen=True)
class Scores:
    """Per sequence: the summed log-probability of its targets (nats, float64), how many targets there were,
    and whether each target was the model's most likely token (lm-evaluation-harness's `is_greedy`)."""

    log_likelihood: torch.Tensor  # [N] float64
    num_tokens: torch.Tensor  # [N] long
    greedy: torch.Tensor  # [N] bool


def rolling_windows(
    sequences: Sequence[Sequence[int]], first_targets: Sequence[int], max_length: int
) -> Windows:
    """Windows of at most `max_length` inputs from the start of each sequence, scoring positions from its
    first target on; a sequence with nothing to score (first target at or past its end) gets no rows."""
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    if len(sequences) != len(first_targets):
        raise ValueError(f"{len(sequences)} sequences but {len(first_targets)} first targets")
    rows: list[tuple[list[int], list[int], int]] = []
    for owner, (sequence, first) in enumerate(zip(sequences, first_targets, strict=True)):
        if first < 1:
            raise ValueError(
                f"sequence {owner}: the first target must be at position 1 or later, got {first}"
            )
        sequence = list(sequence)
        for start in range(0, len(sequence) - 1, max_length):
            inputs = sequence[start : start + max_length]
            # Position p of the window predicts token start + p + 1.
            targets = [
                token if start + offset + 1 >= first else IGNORE
                for offset, token in enumerate(sequence[start + 1 : start + 1 + max_length])
            ]
            if any(target != IGNORE for target in targets):
                rows.append((inputs, targets, owner))
    rows.sort(key=lambda row: -len(row[0]))  # stable: equal lengths keep the callers' order
    longest = len(rows[0][0]) if rows else 0
    inputs = torch.zeros((len(rows), longest), dtype=torch.long)
    targets = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
    for index, (row_inputs, row_targets, _) in enumerate(rows):
        inputs[index, : len(row_inputs)] = torch.tensor(row_inputs, dtype=torch.long)
        targets[index, : len(row_targets)] = torch.tensor(row_targets, dtype=torch.long)
    return Windows(
        inputs=inputs,
        targets=targets,
        lengths=torch.tensor([len(row[0]) for row in rows], dtype=torch.long),
        owners=torch.tensor([row[2] for row in rows], dtype=torch.long),
        num_sequences=len(sequences),
    )


def continuation_windows(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int) -> Windows:
    """Windows scoring each continuation given its context (both token ids, the context not empty).

    As lm-evaluation-harness's `HFLM._loglikelihood_tokens`: context + continuation is cut from the left to
    its last `max_length + 1` tokens and read as one window. A continuation longer than `max_length` cannot
    fit; it is scored in rolling windows over context and continuation instead.
    """
    sequences, first_targets = [], []
    for context, continuation in pairs:
        if not context:
            raise ValueError("a continuation needs at least one context token (a document prefix)")
        if not continuation:
            raise ValueError("an empty continuation has no log-likelihood")
        tokens = [*context, *continuation]
        if len(continuation) <= max_length:
            tokens = tokens[-(max_length + 1) :]
        sequences.append(tokens)
        first_targets.append(len(tokens) - len(continuation))
    return rolling_windows(sequences, first_targets, max_length)


def score_windows(forward: Forward, windows: Windows, batch_size: int, device: torch.device | str) -> Scores:
    """Run the model over the windows, `batch_size` rows at a time, and sum the scores of each sequence.

    Log-probabilities are taken in float32 from the logits and summed in float64; the sums stay on the
    device until the end (one transfer). Padding comes after each row's tokens, so causal attention keeps
    it from changing any scored position.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device)
    totals = torch.zeros(windows.num_sequences, dtype=torch.float64, device=device)
    misses = torch.zeros(windows.num_sequences, dtype=torch.long, device=device)
    for start in range(0, len(windows.inputs), batch_size):
        stop = min(start + batch_size, len(windows.inputs))
        width = int(windows.lengths[start])  # rows are sorted longest first
        inputs = windows.inputs[start:stop, :width].to(device)
        targets = windows.targets[start:stop, :width].to(device)
        owners = windows.owners[start:stop].to(device)
        logits = forward(inputs).float()
        scored = targets != IGNORE
        negative = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none"
        ).view_as(targets)
        totals.index_add_(0, owners, -negative.double().sum(dim=1))
        wrong = (logits.argmax(dim=-1) != targets) & scored
        misses.index_add_(0, owners, wrong.sum(dim=1))
    return Scores(log_likelihood=totals.cpu(), num_tokens=windows.num_targets, greedy=(misses == 0).cpu())


def log_likelihoods(
    forward: Forward,
    sequences: Sequence[Sequence[int]],
    first_targets: Sequence[int],
    max_length: int,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
) -> Scores:
    """Summed log-probability of each sequence's tokens from its first target on, in rolling windows."""
    return score_windows(forward, rolling_windows(sequences, first_targets, max_length), batch_size, device)


def continuation_log_likelihoods(
    forward: Forward,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    max_length: int,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
) -> Scores:
    """Log-probability of each (context, continuation) pair's continuation given its context."""
    return score_windows(forward, continuation_windows(pairs, max_length), batch_size, device)
