"""One loader for trained weights: a bare `GPT` from a checkpoint file or sharded directory.

Used by `generate`, `--model.init_from` and whatever else needs the model without its training state
(evaluation, export). The optimizer state is never read: a file is memory-mapped and only the model's
tensors are touched; a sharded directory is read for the model's keys only.

Every read is safe for a checkpoint from someone else (docs/checkpoints.md, "Safe loading"): files are read
with `torch.load(weights_only=True)`, a sharded directory's `.metadata` pickle with an allowlist of DCP's
own classes, and anything that would need arbitrary unpickling is refused unless the user trusts it
(`LIT_PRETRAIN_TRUST_CHECKPOINTS=1`).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    Metadata,
    StorageMeta,
    TensorStorageMetadata,
)

from lit_pretrain._compat.lightning import load_sharded_checkpoint
from lit_pretrain.checkpoint.legacy import FUSED_QKV, split_fused_qkv
from lit_pretrain.model import GPT, ModelConfig

log = logging.getLogger(__name__)

SHARDED_METADATA = "meta.pt"  # what Lightning writes beside the shards: everything but weights and optimizer
DCP_METADATA = ".metadata"  # torch.distributed.checkpoint's index of the shards (a plain pickle)
MODEL_PREFIX = "model."  # LitPretrain holds the GPT as `self.model`
TRUST_VARIABLE = "LIT_PRETRAIN_TRUST_CHECKPOINTS"

# What torch 2.13 pickles into a DCP `.metadata` file, found by unpickling the FSDP2 and TP checkpoints
# this project writes with a recording `find_class`. All are data classes, an enum, torch.Size, dtypes,
# and the by-name lookup torch pickles layouts as: none of them runs code a file could choose.
DCP_METADATA_GLOBALS = {
    "torch.distributed.checkpoint.metadata": frozenset(
        {
            "Metadata",
            "MetadataIndex",
            "StorageMeta",
            "TensorProperties",
            "TensorStorageMetadata",
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "_MEM_FORMAT_ENCODING",
        }
    ),
    "torch.distributed.checkpoint.filesystem": frozenset({"_StorageInfo"}),
    "torch.serialization": frozenset({"_get_layout"}),
    "torch": frozenset({"Size"}),
    "pathlib": frozenset({"PosixPath"}),  # StorageMeta.checkpoint_id: the directory it was saved to
}

T = TypeVar("T")


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with what generation and export need from the run."""

    model: GPT
    config: ModelConfig
    global_step: int | None
    tokenizer_json: str | None
    data_manifest: dict[str, Any] | None


class UnsafeCheckpointError(ValueError):
    """A checkpoint that would need arbitrary unpickling (which can run code from the file) to load."""

    def __init__(self, path: Path, reason: str) -> None:
        """Say which file, what torch or the allowlist refused, why that matters and how to override."""
        super().__init__(
            f"refused to load {path}: it holds more than plain values and tensors ({reason}). Unpickling "
            "arbitrary objects can run code from the file, and lit-pretrain's own checkpoints never need "
            "it, so this one was written by other code or altered. If you trust it, run again with "
            f"{TRUST_VARIABLE}=1 in the environment to load it with full unpickling."
        )
        self.path = path


def trust_checkpoints() -> bool:
    """Whether the user trusts every checkpoint this process loads (`LIT_PRETRAIN_TRUST_CHECKPOINTS=1`)."""
    return os.environ.get(TRUST_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def _refusal_reason(error: Exception) -> str:
    # torch's message is a page of advice (including how to allowlist the global): the name is the reason.
    named = re.search(r"global ([\w.]+\w)", str(error), re.IGNORECASE)
    if named:
        return f"unpickling it needs {named.group(1)}"
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _safely(path: Path, load: Callable[[bool], T]) -> T:
    """`load(True)` (restricted unpickling); when it is refused, `load(False)` if the user trusts files."""
    try:
        return load(True)
    except pickle.UnpicklingError as error:
        if not trust_checkpoints():
            raise UnsafeCheckpointError(path, _refusal_reason(error)) from None
        log.warning(
            "%s needs full unpickling (%s); loading it because %s is set",
            path,
            _refusal_reason(error),
            TRUST_VARIABLE,
        )
        return load(False)


class DamagedCheckpointError(ValueError):
    """A checkpoint file that is not a readable archive: truncated, corrupted, or not a checkpoint at all."""


def load_checkpoint_file(path: Path, map_location: Any = "cpu", mmap: bool = True) -> dict[str, Any]:
    """A checkpoint file read with `torch.load(weights_only=True)`; refused unless trusted when that fails."""
    path = Path(path)
    try:
        return _safely(
            path, lambda safe: torch.load(path, map_location=map_location, mmap=mmap, weights_only=safe)
        )
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile) as error:
        # torch's reader says "failed finding central directory" or "Invalid argument" (mmap of a short file).
        raise DamagedCheckpointError(
            f"{path} does not load ({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else 'no detail'}): "
            "it is truncated, corrupted or not a checkpoint; use an earlier checkpoint of the run"
        ) from error


class _DcpMetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # vars(), not getattr(): torch's module __getattr__ would import whatever submodule a file names.
        dtype = module == "torch" and isinstance(vars(torch).get(name), torch.dtype)
        if dtype or name in DCP_METADATA_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unsupported global {module}.{name} in {DCP_METADATA}")


def read_dcp_metadata(directory: Path) -> Metadata:
    """A sharded checkpoint's DCP `.metadata`, unpickled with `DCP_METADATA_GLOBALS` only (unless trusted).

    torch's own `FileSystemReader.read_metadata` runs `pickle.load` on it, which a crafted file turns into
    code execution.
    """
    path = Path(directory) / DCP_METADATA
    if not path.is_file():
        raise ValueError(f"{directory} is not a sharded checkpoint (no {DCP_METADATA})")

    def load(safe: bool) -> Metadata:
        with open(path, "rb") as file:
            metadata = (_DcpMetadataUnpickler(file) if safe else pickle.Unpickler(file)).load()
        if not isinstance(metadata, Metadata):
            raise ValueError(f"{path} holds a {type(metadata).__name__}, not DCP metadata")
        return metadata

    return _safely(path, load)


class VerifiedMetadataReader(FileSystemReader):
    """torch's `FileSystemReader` handing DCP the metadata already read by `read_dcp_metadata`.

    So the pickle is never read again by torch, and what was checked is what is loaded.
    """

    def __init__(self, directory: Path, metadata: Metadata) -> None:
        """Read the shards of `directory` as `metadata` describes them."""
        super().__init__(directory)
        self.verified_metadata = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """The verified metadata (per-rank metadata files are not written by this project's saves)."""
        if kwargs.get("rank") is not None:
            raise ValueError(f"{self.path}: per-rank DCP metadata is not supported")
        if self.verified_metadata.storage_meta is None:
            self.verified_metadata.storage_meta = StorageMeta()
        self.verified_metadata.storage_meta.load_id = self.load_id
        return self.verified_metadata


def verify_shards(directory: Path, metadata: Metadata) -> None:
    """Check what `metadata` says is in the shards: files present and long enough, non-tensor values safe.

    The non-tensor values (the optimizer's hyperparameters) are read here with `weights_only=True` because
    torch's `DefaultLoadPlanner`, which Lightning resumes with, reads them with `weights_only=False`.
    """
    directory = Path(directory)
    sizes: dict[str, int] = {}
    for index, info in metadata.storage_data.items():
        name = info.relative_path
        if Path(name).name != name:
            raise ValueError(f"{directory}: shard file {name!r} is outside the checkpoint directory")
        if name not in sizes:
            if not (directory / name).is_file():
                raise ValueError(f"{directory}: shard file {name} is missing")
            sizes[name] = (directory / name).stat().st_size
        if info.offset + info.length > sizes[name]:
            raise ValueError(
                f"{directory / name} is truncated: {sizes[name]} bytes, {index.fqn} ends at byte "
                f"{info.offset + info.length}"
            )
        if not isinstance(metadata.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            continue
        if info.transform_descriptors:
            raise ValueError(
                f"{directory}: {index.fqn} is stored transformed, which this loader does not read"
            )
        with open(directory / name, "rb") as file:
            file.seek(info.offset)
            value = io.BytesIO(file.read(info.length))
        try:
            torch.load(value, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            # Trusted: left to the load itself, so that a check never runs the file's code.
            if not trust_checkpoints():
                reason = f"{index.fqn}: {_refusal_reason(error)}"
                raise UnsafeCheckpointError(directory / name, reason) from None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A whole checkpoint as one dict on the CPU: a file, or a sharded (FSDP2/TP) directory gathered in full.

    Read safely (see the module docstring): a checkpoint that needs arbitrary unpickling is refused.
    """
    path = Path(path)
    if path.is_dir():
        metadata = read_dcp_metadata(path)
        verify_shards(path, metadata)
        checkpoint = _safely(
            path,
            lambda safe: load_sharded_checkpoint(
                path, VerifiedMetadataReader(path, metadata), weights_only=safe
            ),
        )
    else:
        checkpoint = load_checkpoint_file(path)
    if "state_dict" in checkpoint:
        split_fused_qkv(checkpoint["state_dict"])
    return checkpoint


def read_metadata(path: Path) -> dict[str, Any]:
    """Everything a checkpoint holds except its tensors' training state (hyperparameters, step, tokenizer).

    For a sharded directory, this also checks the shards (`verify_shards`), so that `fit --ckpt_path` has
    refused a crafted directory before Lightning reads it with torch's unrestricted DCP reader.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        metadata_file = path / SHARDED_METADATA
        if not metadata_file.is_file():
            raise ValueError(f"{path} is not a sharded lit-pretrain checkpoint (no {SHARDED_METADATA})")
        verify_shards(path, read_dcp_metadata(path))
        return load_checkpoint_file(metadata_file)
    checkpoint = load_checkpoint_file(path)
    return {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}


def verify_checkpoint(path: Path) -> None:
    """Raise unless `path` loads: the structure of a file (its tensors are mapped, not read), or a directory's
    metadata and shard sizes. Cheap enough to run on every candidate of `--ckpt_path last`."""
    read_metadata(path)


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
        state_dict = load_checkpoint_file(path)["state_dict"]
    else:
        metadata = read_dcp_metadata(path)
        if any(FUSED_QKV in key for key in metadata.state_dict_metadata):
            state_dict = read_checkpoint(path)["state_dict"]  # old layout: read whole, then split
        else:
            state_dict = _read_sharded_model(path, config, metadata)
    weights = {k.removeprefix(MODEL_PREFIX): v for k, v in state_dict.items() if k.startswith(MODEL_PREFIX)}
    split_fused_qkv(weights)
    return weights


def _read_sharded_model(path: Path, config: ModelConfig, metadata: Metadata) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint import load as load_distributed

    model = empty_model(config, torch.device("cpu"))
    wanted = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    for key in wanted:
        # DCP reads a key the metadata calls bytes with torch.load(weights_only=False), whatever was asked.
        if not isinstance(metadata.state_dict_metadata.get(f"state_dict.{key}"), TensorStorageMetadata):
            raise ValueError(f"{path} is not a lit-pretrain checkpoint of this model: no tensor for {key}")
    reader = VerifiedMetadataReader(path, metadata)
    load_distributed({"state_dict": wanted}, storage_reader=reader, no_dist=True)
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
