"""What evaluation needs of a model, and adapters that give it for lit-pretrain checkpoints and Hugging Face
model directories, so the same code scores both.

A `LanguageModel` turns token ids into logits, encodes text, names its end/beginning-of-document ids and
its context length. `GPTLanguageModel` wraps a bare `GPT` and a `tokenizers.Tokenizer` (a checkpoint, or the
model being trained); `HuggingFaceLanguageModel` wraps `transformers.AutoModelForCausalLM` and its
`AutoTokenizer`, read from local files only, weights from safetensors only.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tokenizers import Tokenizer

from lit_pretrain.checkpoint.loading import load_model
from lit_pretrain.data.tokenizer import find_eos_id
from lit_pretrain.parallel.config import DTYPES


class LanguageModel(Protocol):
    """A causal language model as evaluation sees it."""

    name: str
    max_length: int  # the most input tokens one forward pass may read
    device: torch.device
    eos_id: int | None
    bos_id: int | None

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, vocab] for token ids [B, T] on `device`."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        ...

    @property
    def document_prefix(self) -> list[int]:
        """The tokens a document follows: its first token is predicted from them."""
        ...

    @property
    def encoding_sha256(self) -> str | None:
        """`encoding_sha256` of the tokenizer, None if unknown."""
        ...


def encoding_sha256(tokenizer: Tokenizer) -> str:
    """Hash of what decides the ids of a text encoded without special tokens: the tokenizer's JSON less its
    post-processor, padding and truncation (transformers adds a no-op post-processor when it saves one)."""
    config = json.loads(tokenizer.to_str())
    for key in ("post_processor", "padding", "truncation"):
        config.pop(key, None)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


@dataclass
class GPTLanguageModel:
    """A `GPT` (or any module from ids to logits) with the `tokenizers.Tokenizer` it was trained with.

    Documents follow EOS, and BOS when the data was prepared with one: the position every document of the
    training stream is read from.
    """

    module: torch.nn.Module
    tokenizer: Tokenizer
    eos_id: int | None
    bos_id: int | None
    max_length: int
    device: torch.device
    name: str = "model"
    info: dict[str, Any] = field(default_factory=dict)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, vocab] of the module."""
        return self.module(ids)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    @property
    def document_prefix(self) -> list[int]:
        """EOS, then BOS if the data had one."""
        if self.eos_id is None:
            raise ValueError(f"{self.name}: the tokenizer has no end-of-document token to start a document")
        return [self.eos_id] + ([self.bos_id] if self.bos_id is not None else [])

    @property
    def encoding_sha256(self) -> str | None:
        """`encoding_sha256` of the tokenizer."""
        return encoding_sha256(self.tokenizer)


def checkpoint_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> GPTLanguageModel:
    """A lit-pretrain checkpoint (file or sharded directory) through `load_model`, with its stored tokenizer."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        loaded = load_model(path, device, dtype)
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError) as err:
        # torch.load's and load_state_dict's errors: a file that is not a checkpoint, or not of this model.
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable lit-pretrain checkpoint: {first_line}") from err
    if loaded.tokenizer_json is None:
        raise ValueError(f"{path} stores no tokenizer, so its text cannot be encoded")
    tokenizer = Tokenizer.from_str(loaded.tokenizer_json)
    manifest = loaded.data_manifest or {}
    eos_id = manifest.get("eos_id")
    if eos_id is None:
        eos_id = find_eos_id(tokenizer)
    return GPTLanguageModel(
        module=loaded.model,
        tokenizer=tokenizer,
        eos_id=eos_id,
        bos_id=manifest.get("bos_id"),
        max_length=loaded.config.block_size,
        device=torch.device(device),
        name=str(path),
        info={"kind": "lit-pretrain checkpoint", "path": str(path), "global_step": loaded.global_step},
    )


@dataclass
class HuggingFaceLanguageModel:
    """A `transformers` causal LM and its tokenizer.

    Documents follow BOS when the tokenizer has one, else EOS: lm-evaluation-harness's `prefix_token_id`.
    """

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    max_length: int
    device: torch.device
    name: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def eos_id(self) -> int | None:
        """The tokenizer's end-of-sequence id."""
        return self.tokenizer.eos_token_id

    @property
    def bos_id(self) -> int | None:
        """The tokenizer's beginning-of-sequence id."""
        return self.tokenizer.bos_token_id

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, vocab]; no attention mask: padding only ever follows the real tokens."""
        return self.model(input_ids=ids, use_cache=False).logits

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def document_prefix(self) -> list[int]:
        """BOS if the tokenizer has one, else EOS."""
        prefix = self.bos_id if self.bos_id is not None else self.eos_id
        if prefix is None:
            raise ValueError(
                f"{self.name}: the tokenizer has neither a BOS nor an EOS token to start a document"
            )
        return [prefix]

    @property
    def encoding_sha256(self) -> str | None:
        """`encoding_sha256` of the fast tokenizer (None for a slow tokenizer)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        return encoding_sha256(backend) if isinstance(backend, Tokenizer) else None


def context_length(config: Any) -> int | None:
    """The longest input a `transformers` config allows, under the names architectures give it."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def huggingface_model(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> HuggingFaceLanguageModel:
    """A local Hugging Face model directory (config.json, safetensors weights, a tokenizer) as a causal LM.

    Nothing is downloaded and no pickled weights are read (`local_files_only`, `use_safetensors`). Whatever
    transformers refuses (an architecture it has no causal-LM class for, missing weights) becomes a
    ValueError naming the directory.
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"no Hugging Face model directory at {directory}")
    if not directory.is_dir() or not (directory / "config.json").is_file():
        raise ValueError(f"{directory} is not a Hugging Face model directory (it has no config.json)")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise ValueError(
            f"evaluating {directory} needs transformers: pip install 'lit_pretrain[hf]'"
        ) from err
    try:
        model = AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, use_safetensors=True, dtype=dtype or "auto"
        )
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"transformers cannot load {directory} as a causal LM: {first_line}") from err
    model.to(device).eval()
    max_length = context_length(model.config) or getattr(tokenizer, "model_max_length", None)
    if not isinstance(max_length, int) or max_length <= 0 or max_length > 10**7:
        raise ValueError(f"{directory}: the config names no context length; pass --max_length")
    return HuggingFaceLanguageModel(
        model=model,
        tokenizer=tokenizer,
        max_length=max_length,
        device=torch.device(device),
        name=str(directory),
        info={
            "kind": "Hugging Face model",
            "path": str(directory),
            "architectures": json.loads((directory / "config.json").read_text()).get("architectures"),
        },
    )


def load_language_model(
    checkpoint: str | None = None,
    hf_dir: str | None = None,
    device: str | torch.device = "cpu",
    dtype: str | None = None,
    max_length: int | None = None,
) -> LanguageModel:
    """The model named by exactly one of `checkpoint` and `hf_dir`, its context capped at `max_length`."""
    if (checkpoint is None) == (hf_dir is None):
        raise ValueError("give exactly one of --checkpoint PATH and --hf_dir DIR")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    torch_dtype = DTYPES[dtype] if dtype else None
    if checkpoint is not None:
        model: LanguageModel = checkpoint_model(checkpoint, device, torch_dtype)
    else:
        model = huggingface_model(hf_dir, device, torch_dtype)
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"--max_length must be at least 1, got {max_length}")
        model.max_length = min(model.max_length, max_length)
    return model
