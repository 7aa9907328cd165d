"""One loader for trained weights: a bare `GPT` from a checkpoint file or sharded directory.

Used by `generate`, `--model.init_from` and whatever else needs the model without its training state
(evaluation, export). The optimizer state is never read: a file is memory-mapped and only the model's
tensors are touched; a sharded directory is read for the model's keys only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lit_pretrain._compat.lightning import load_sharded_checkpoint
from lit_pretrain.checkpoint.legacy import sharded_checkpoint_has_fused_qkv, split_fused_qkv
from lit_pretrain.model import GPT, ModelConfig

SHARDED_METADATA = "meta.pt"  # what Lightning writes beside the shards: everything but weights and optimizer
MODEL_PREFIX = "model."  # LitPretrain holds the GPT as `self.model`


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with what generation and export need from the run."""

    model: GPT
    config: ModelConfig
    global_step: int | None
    tokenizer_json: str | None
    data_manifest: dict[str, Any] | None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A whole checkpoint as one dict on the CPU: a file, or a sharded (FSDP2/TP) directory gathered in full.

    Only for checkpoints you trust: they hold pickled training state.
    """
    path = Path(path)
    if path.is_dir():
        checkpoint = load_sharded_checkpoint(path)
    else:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    if "state_dict" in checkpoint:
        split_fused_qkv(checkpoint["state_dict"])
    return checkpoint


def read_metadata(path: Path) -> dict[str, Any]:
    """Everything a checkpoint holds except its tensors' training state (hyperparameters, step, tokenizer)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        metadata_file = path / SHARDED_METADATA
        if not metadata_file.is_file():
            raise ValueError(f"{path} is not a sharded lit-pretrain checkpoint (no {SHARDED_METADATA})")
        return torch.load(metadata_file, map_location="cpu", weights_only=False)
    checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    return {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}


def model_config(metadata: dict[str, Any], path: Path) -> ModelConfig:
    """The `ModelConfig` a checkpoint was trained with, from its hyperparameters."""
    hyper_parameters = metadata.get("hyper_parameters") or {}
    if "model_name" not in hyper_parameters:
        raise ValueError(f"{path} is not a lit-pretrain checkpoint (its hyperparameters name no model)")
    return ModelConfig.from_name(
        hyper_parameters["model_name"], **(hyper_parameters.get("model_overrides") or {})
    )


def read_model_weights(path: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    """The model's full tensors on the CPU, keyed as in `GPT.state_dict()`, without the optimizer state."""
    path = Path(path)
    if path.is_file():
        state_dict = torch.load(path, map_location="cpu", mmap=True, weights_only=False)["state_dict"]
    elif sharded_checkpoint_has_fused_qkv(path):
        state_dict = load_sharded_checkpoint(path)["state_dict"]  # old layout: read whole, then split
    else:
        state_dict = _read_sharded_model(path, config)
    weights = {k.removeprefix(MODEL_PREFIX): v for k, v in state_dict.items() if k.startswith(MODEL_PREFIX)}
    split_fused_qkv(weights)
    return weights


def _read_sharded_model(path: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint import load as load_distributed

    model = empty_model(config, torch.device("cpu"))
    wanted = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    load_distributed({"state_dict": wanted}, storage_reader=FileSystemReader(path), no_dist=True)
    return wanted


def empty_model(config: ModelConfig, device: torch.device | str, dtype: torch.dtype | None = None) -> GPT:
    """A `GPT` built on the meta device and allocated (uninitialised) on `device` in `dtype`."""
    with torch.device("meta"):
        model = GPT(config)
    if dtype is not None:
        model.to(dtype)
    model.to_empty(device=device)
    model.reset_buffers()
    return model


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> LoadedModel:
    """The checkpoint's model in eval mode on `device` in `dtype` (default: as saved), ready to run."""
    path = Path(path)
    metadata = read_metadata(path)
    config = model_config(metadata, path)
    weights = read_model_weights(path, config)
    model = empty_model(config, device, dtype)
    # Copies each tensor into place on the target device, converting dtype on the way.
    model.load_state_dict(weights, strict=True)
    return LoadedModel(
        model=model.eval(),
        config=config,
        global_step=metadata.get("global_step"),
        tokenizer_json=metadata.get("tokenizer_json"),
        data_manifest=metadata.get("data_manifest"),
    )
