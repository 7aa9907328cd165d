"""Batch-size warmup: the rows each step trains on, the steps a token budget lasts, and validation."""

from __future__ import annotations

import pytest
import torch

from lit_pretrain.optim.batch_warmup import BatchSizeWarmup, first_rows

# Micro-batches of 8 rows; the share grows from 0.25 (2 rows) to 1 over 1000 tokens.
RAMP = BatchSizeWarmup(tokens=1000, start=0.25)


@pytest.mark.parametrize(
    ("tokens_seen", "rows"),
    [
        (0, 2),  # 0.25 * 8
        (166, 2),  # share 0.3745: 2.996 rows, floored
        (167, 3),  # share 0.37525: 3.002 rows
        (500, 5),  # share 0.625: 5 rows exactly (not floored to 4)
        (999, 7),  # share 0.99925
        (1000, 8),
        (10**9, 8),
    ],
)
def test_rows_follow_the_ramp(tokens_seen: int, rows: int):
    assert RAMP.rows(tokens_seen, 8) == rows


def test_at_least_one_row_and_off_by_default():
    assert BatchSizeWarmup(tokens=1000, start=0.0).rows(0, 8) == 1
    assert BatchSizeWarmup().rows(0, 8) == 8


def test_steps_to_reach_a_token_budget():
    # 100 tokens per row and step. The ramp: 2 rows (200 tokens), at 200 seen 3.2 -> 3 rows (300), at 500
    # seen 5 rows (500); from 1000 seen on, full steps of 8 rows (800 tokens).
    assert [RAMP.rows(seen, 8) for seen in (0, 200, 500, 1000)] == [2, 3, 5, 8]
    assert RAMP.steps_to_reach(1000, 8, 100) == 3
    assert RAMP.steps_to_reach(1001, 8, 100) == 4
    assert RAMP.steps_to_reach(1800, 8, 100) == 4
    assert RAMP.steps_to_reach(1801, 8, 100) == 5
    assert RAMP.steps_to_reach(300, 8, 100) == 2, "a budget inside the ramp"
    assert BatchSizeWarmup().steps_to_reach(1600, 8, 100) == 2, "no warmup: the budget over full steps"


def test_first_rows_of_plain_and_tagged_batches():
    tokens = torch.arange(12).view(4, 3)
    assert torch.equal(first_rows(tokens, 2), tokens[:2])
    tagged = first_rows({"tokens": tokens, "source": torch.tensor([0, 1, 0, 1])}, 3)
    assert torch.equal(tagged["tokens"], tokens[:3]) and tagged["source"].tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tokens": -1}, "--model.batch_size_warmup_tokens must be 0"),
        ({"tokens": 10, "start": 1.5}, "--model.batch_size_warmup_start must be between 0 and 1"),
    ],
)
def test_settings_are_validated(settings: dict, message: str):
    with pytest.raises(ValueError, match=message):
        BatchSizeWarmup(**settings)
