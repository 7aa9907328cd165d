"""Export a lit-pretrain checkpoint as a Hugging Face model directory that `transformers` loads offline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, processors

from lit_pretrain.checkpoint.loading import model_config, read_metadata, read_model_weights
from lit_pretrain.interop.huggingface import family, to_hf_config, to_hf_state_dict
from lit_pretrain.model import ModelConfig
from lit_pretrain.parallel.config import DTYPES

log = logging.getLogger(__name__)


def export_checkpoint(
    checkpoint: str | Path, output_dir: str | Path, dtype: str = "float32", max_shard_size: str | int = "5GB"
) -> Path:
    """Write `output_dir`: config.json, generation_config.json, model.safetensors (sharded above
    `max_shard_size`, with an index), and the tokenizer files. Reads the model's weights only.

    A single-file or sharded (FSDP2/TP) checkpoint works alike. The directory must not hold files already.
    """
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"{output_dir} is not empty: export into a new directory")
    metadata = read_metadata(checkpoint)
    config = model_config(metadata, checkpoint)
    family(config)  # refuse an inexpressible model before reading any weights
    manifest = metadata.get("data_manifest") or {}
    eos_id, bos_id = manifest.get("eos_id"), manifest.get("bos_id")
    weights = read_model_weights(checkpoint, config)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_hf_model(config, weights, output_dir, DTYPES[dtype], eos_id, bos_id, max_shard_size)
    if metadata.get("tokenizer_json"):
        write_hf_tokenizer(metadata["tokenizer_json"], output_dir, config, eos_id, bos_id)
    else:
        log.warning(
            "%s stores no tokenizer: %s has the model only (add the tokenizer files by hand)",
            checkpoint,
            output_dir,
        )
    log.info(
        "exported %s (step %s) as %s to %s",
        checkpoint,
        metadata.get("global_step", "?"),
        to_hf_config(config).architectures[0],
        output_dir,
    )
    return output_dir


def write_hf_model(
    config: ModelConfig,
    weights: dict[str, torch.Tensor],
    output_dir: Path,
    dtype: torch.dtype,
    eos_id: int | None,
    bos_id: int | None,
    max_shard_size: str | int = "5GB",
) -> None:
    """config.json, generation_config.json and the safetensors weights of `weights` (our names)."""
    from huggingface_hub import save_torch_state_dict
    from transformers import GenerationConfig

    hf_config = to_hf_config(config, eos_id, bos_id)
    hf_config.dtype = dtype
    hf_config.save_pretrained(output_dir)
    GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id).save_pretrained(
        output_dir
    )
    tensors = {
        name: tensor.to(dtype).contiguous() for name, tensor in to_hf_state_dict(config, weights).items()
    }
    save_torch_state_dict(tensors, output_dir, max_shard_size=max_shard_size, metadata={"format": "pt"})


def write_hf_tokenizer(
    tokenizer_json: str, output_dir: Path, config: ModelConfig, eos_id: int | None, bos_id: int | None
) -> None:
    """tokenizer.json and its config, so `AutoTokenizer` encodes a document's start as training did.

    Training puts BOS (when the data used one) before each document and EOS after it. The exported tokenizer
    adds BOS when asked to add special tokens (as Llama's does) and never EOS: a prompt is an unfinished
    document.
    """
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer.from_str(tokenizer_json)
    special: dict[str, Any] = {}
    if eos_id is not None:
        special["eos_token"] = tokenizer.id_to_token(eos_id)
        special["pad_token"] = special["eos_token"]  # batched inference needs one; never trained on
    if bos_id is not None:
        bos = tokenizer.id_to_token(bos_id)
        special["bos_token"] = bos
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=config.block_size,
        clean_up_tokenization_spaces=False,
        **special,
    )
    fast.save_pretrained(output_dir)
