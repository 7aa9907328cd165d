"""What a checkpoint must match to be resumed: the resume fingerprint and how two of them differ."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from lit_pretrain.data.datamodule import DataSpec
from lit_pretrain.model import ModelConfig

# Keys that may differ only when the data loader resumes elastically (see docs/checkpoints.md).
# The model's sharding is not here: sharded checkpoints reshard on load, so only the data-parallel size
# (which decides each rank's share of the data) matters; a tensor-parallel size may change freely.
ELASTIC_KEYS = ("data_parallel_size", "num_workers")


def resume_fingerprint(
    config: ModelConfig, data: DataSpec | None, data_parallel_size: int, accumulate_grad_batches: int
) -> dict[str, Any]:
    """Everything that must be the same for a resumed run to continue the interrupted one exactly."""
    fingerprint: dict[str, Any] = {"model": asdict(config), "data_parallel_size": data_parallel_size}
    fingerprint["accumulate_grad_batches"] = accumulate_grad_batches
    if data is not None:
        fingerprint["data"] = {
            "data_dir": [str(path.resolve()) for path in data.data_dirs],
            "weights": data.source_weights,
            "tokens": data.train_tokens,
            "tokenizer_sha256": data.manifest["tokenizer_sha256"],
        }
        fingerprint["seq_len"] = data.seq_len
        fingerprint["micro_batch_size"] = data.micro_batch_size
        fingerprint["num_workers"] = data.num_workers
        fingerprint["seed"] = data.seed
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


def check_resume_fingerprint(saved: dict[str, Any], current: dict[str, Any], elastic: bool) -> None:
    """Raise if the run differs from the checkpoint's in what decides its future.

    A changed data-parallel size or worker count is allowed only with `elastic` (litdata then redistributes
    the rest of the epoch without repeating samples, but the order is no longer the uninterrupted one).
    """
    differences = fingerprint_differences(saved, current)
    blocking = {k: v for k, v in differences.items() if not (elastic and k in ELASTIC_KEYS)}
    if not blocking:
        return
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


def elastic_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The allowed-with-elastic differences, as `key: old -> new` lines (for a warning)."""
    differences = fingerprint_differences(saved, current)
    return [f"{k}: {differences[k][0]} -> {differences[k][1]}" for k in differences if k in ELASTIC_KEYS]
