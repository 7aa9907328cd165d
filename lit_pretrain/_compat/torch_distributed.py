"""Private names of torch.distributed: checked against torch 2.13.0 (`CHECKED_AGAINST`).

The rank watchdog (callbacks/rank_watchdog.py) publishes heartbeats through the key-value store that the
default process group was built on; torch has no public getter for it.
"""

from __future__ import annotations

import torch.distributed as dist
from torch.distributed.distributed_c10d import _get_default_store

CHECKED_AGAINST = "2.13.0"


def default_store() -> dist.Store:
    """The store the default process group rendezvoused through (raises when there is no process group)."""
    return _get_default_store()


__all__ = ["CHECKED_AGAINST", "default_store"]
