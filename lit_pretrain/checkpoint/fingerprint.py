"""What a checkpoint must match to be resumed, and the random number generators it carries."""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from lit_pretrain.model import ModelConfig

# Keys that may differ only when the data loader resumes elastically (see docs/checkpoints.md).
# The model's sharding is not here: sharded checkpoints reshard on load, so only the data-parallel size
# (which decides each rank's share of the data) matters; a tensor-parallel size may change freely.
ELASTIC_KEYS = ("data_parallel_size", "num_workers")


def resume_fingerprint(
    config: ModelConfig, datamodule: Any, data_parallel_size: int, accumulate_grad_batches: int
) -> dict[str, Any]:
    """Everything that must be the same for a resumed run to continue the interrupted one exactly."""
    fingerprint: dict[str, Any] = {"model": asdict(config), "data_parallel_size": data_parallel_size}
    fingerprint["accumulate_grad_batches"] = accumulate_grad_batches
    if datamodule is not None and hasattr(datamodule, "manifests"):
        fingerprint["data"] = {
            "data_dir": [str(path.resolve()) for path in datamodule.data_dirs],
            "weights": datamodule.source_weights(),
            "tokens": {s.name: s.train_tokens for s in datamodule.train_sources},
            "tokenizer_sha256": datamodule.manifest["tokenizer_sha256"],
        }
        fingerprint["seq_len"] = datamodule.seq_len
        fingerprint["micro_batch_size"] = datamodule.micro_batch_size
        fingerprint["num_workers"] = datamodule.num_workers
        fingerprint["seed"] = datamodule.seed
    return fingerprint


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def fingerprint_differences(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """`{dotted key: (checkpoint value, current value)}` for every key whose value differs."""
    old, new = _flatten(saved), _flatten(current)
    return {
        key: (old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if _comparable(old.get(key)) != _comparable(new.get(key))
    }


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def check_resume_fingerprint(saved: dict[str, Any], current: dict[str, Any], elastic: bool) -> list[str]:
    """Raise if the run differs from the checkpoint's in what decides its future; returns elastic changes.

    A changed data-parallel size or worker count is allowed only with `elastic` (litdata then redistributes
    the rest of the epoch without repeating samples, but the order is no longer the uninterrupted one).
    """
    differences = fingerprint_differences(saved, current)
    elastic_changes = [k for k in differences if k in ELASTIC_KEYS] if elastic else []
    blocking = {k: v for k, v in differences.items() if k not in elastic_changes}
    if blocking:
        lines = "\n".join(f"  {key}: checkpoint {old!r}, now {new!r}" for key, (old, new) in blocking.items())
        hint = (
            "\nWith a changed data-parallel size or worker count, pass --data.elastic_resume true to continue "
            "anyway."
            if any(k in ELASTIC_KEYS for k in blocking)
            else ""
        )
        raise ValueError(
            "cannot resume: this run differs from the checkpoint in\n"
            f"{lines}\n"
            "Resume with the settings the checkpoint was trained with, or start a new run from its weights "
            f"with --model.init_from PATH (fresh optimizer and schedule).{hint}"
        )
    return [f"{key}: {differences[key][0]} -> {differences[key][1]}" for key in elastic_changes]


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


def seed_for_step(seed: int, step: int, micro_batch: int, rank: int) -> int:
    """A seed that depends only on where a micro-batch is in the run, for step-local randomness."""
    digest = hashlib.blake2b(f"{seed}:{step}:{micro_batch}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**63


def seed_step(seed: int, step: int, micro_batch: int, rank: int) -> None:
    """Seed every global generator for one micro-batch (dropout masks then do not depend on history)."""
    value = seed_for_step(seed, step, micro_batch, rank)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
