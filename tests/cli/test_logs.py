"""cli/logs.py: which process's log records reach the terminal before Lightning knows the ranks."""

from __future__ import annotations

import logging

import pytest

from lit_pretrain.cli.logs import _RankZero


@pytest.mark.parametrize(
    ("environment", "shown"),
    [
        ({}, True),
        ({"RANK": "0"}, True),
        ({"RANK": "3"}, False),
        ({"LOCAL_RANK": "1"}, False),
        # A Slurm task is rank SLURM_PROCID, even on a node where it is local rank 0.
        ({"SLURM_PROCID": "2", "SLURM_LOCALID": "0", "LOCAL_RANK": "0"}, False),
        ({"SLURM_PROCID": "0"}, True),
    ],
)
def test_records_come_from_global_rank_zero_only(environment: dict, shown: bool, monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    from lightning_utilities.core.rank_zero import rank_zero_only

    monkeypatch.delattr(rank_zero_only, "rank", raising=False)
    record = logging.LogRecord("lit_pretrain.x", logging.INFO, __file__, 1, "hello", None, None)
    assert _RankZero().filter(record) is shown
