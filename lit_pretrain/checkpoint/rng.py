"""The random number generators a checkpoint carries, and seeding each micro-batch from its place in the run."""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

import numpy as np
import torch


def global_seed() -> int:
    """The run's seed as `seed_everything` set it (`--seed_everything`), 0 when none was set."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) global generators.

    Only plain Python values and tensors, so that `torch.load(weights_only=True)` reads them back.
    """
    kind, key, position, has_gauss, gauss = np.random.get_state()
    numpy_state = (kind, key.tolist(), position, has_gauss, gauss)
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states` returned."""
    random.setstate(states["python"])
    kind, key, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def micro_batch_seed(seed: int, step: int, micro_batch: int, rank: int) -> int:
    """A seed that depends only on where a micro-batch is in the run (not on what ran before it)."""
    digest = hashlib.blake2b(f"{seed}:{step}:{micro_batch}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**63


def seed_global_generators(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (dropout masks then do not depend on history)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
