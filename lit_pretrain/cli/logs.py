"""What reaches the terminal: the suite's log records, from global rank 0 only, as `[module] message` lines."""

from __future__ import annotations

import logging
import os
import sys

# Lightning's own rank_zero_only (it sets `.rank` on this object), without importing Lightning.
from lightning_utilities.core.rank_zero import rank_zero_only

PACKAGE = "lit_pretrain"


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at the time (pytest and progress bars swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):  # noqa: D102 - logging.StreamHandler's attribute, read at each emit
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


class _RankZero(logging.Filter):
    """Keeps records of global rank 0 (the other ranks would repeat them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rank = getattr(rank_zero_only, "rank", None)
        if rank is None:  # before Lightning knows: the launcher's environment says
            rank = int(
                os.environ.get("RANK", os.environ.get("SLURM_PROCID", os.environ.get("LOCAL_RANK", "0")))
            )
        return rank == 0


class _ModuleFormatter(logging.Formatter):
    """`[retention] message`: the module that logged the record, and the level when above INFO."""

    def format(self, record: logging.LogRecord) -> str:
        module = record.name.rsplit(".", 1)[-1]
        message = super().format(record)
        if record.levelno > logging.INFO:
            return f"[{module}] {record.levelname.lower()}: {message}"
        return f"[{module}] {message}"


def configure_logging(level: int = logging.INFO) -> None:
    """Send lit_pretrain's records at `level` and above to stdout, from rank 0 only (idempotent)."""
    logger = logging.getLogger(PACKAGE)
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        handler = _CurrentStdout()
        handler.addFilter(_RankZero())
        handler.setFormatter(_ModuleFormatter("%(message)s"))
        logger.addHandler(handler)
