"""Private names of torch's Muon (torch.optim._muon): checked against torch 2.13.0 (`CHECKED_AGAINST`).

optim/muon.py runs exactly torch's arithmetic (its Newton-Schulz iteration and per-shape learning-rate
adjustment) on full matrices gathered from shards, which torch's own step does not do.
"""

from __future__ import annotations

from torch.optim._muon import _adjust_lr as adjust_lr
from torch.optim._muon import _zeropower_via_newtonschulz as zeropower_via_newtonschulz

CHECKED_AGAINST = "2.13.0"

__all__ = ["CHECKED_AGAINST", "adjust_lr", "zeropower_via_newtonschulz"]
