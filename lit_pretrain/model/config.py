"""Model hyperparameters: one dataclass for GPT-2 and Llama style decoders, plus named presets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_NORMS = ("layernorm", "rmsnorm")
_POSITIONS = ("learned", "rope")
_MLPS = ("gelu", "swiglu", "relu2")


@dataclass
class ModelConfig:
    """Shape and flavour of a decoder-only transformer; the defaults are the `tiny` CPU demo model."""

    name: str = "custom"
    vocab_size: int = 8192
    block_size: int = 256  # maximum sequence length
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    n_kv_head: int | None = None  # None -> n_head; fewer means grouped-query attention
    intermediate_size: int | None = None  # MLP width; None -> 4*n_embd (gelu, relu2) or ~8/3*n_embd (swiglu)
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    position: str = "rope"
    rope_base: float = 10000.0
    mlp: str = "swiglu"
    bias: bool = False
    tie_embeddings: bool = True
    init_std: float = 0.02
    dropout: float = 0.0  # on each block's two residual branches while training; pre-training uses 0
    # "Modern recipe" switches (modded-nanogpt, OLMo 2, Gemma 2); the defaults are the plain model above.
    qk_norm: bool = False  # normalise q and k per head (the `norm` type over head_size) before RoPE
    zero_init_proj: bool = False  # attn.proj and mlp.proj (the writes into the residual stream) start at 0
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap)
    # Packed windows hold many documents, each ended by eos_token_id. With document_mask a token attends
    # only to earlier tokens of its own document (an EOS belongs to the document it ends); with
    # document_positions its position counts from its document's first token (this matters for learned
    # positions; RoPE is relative, so under the mask it changes only rounding). Training-time choices:
    # KV-cache decoding (generation of one document) applies neither.
    document_mask: bool = False
    eos_token_id: int | None = None
    document_positions: bool = False

    def __post_init__(self) -> None:
        for field_name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, field_name) <= 0:
                raise ValueError(f"{field_name} must be positive, got {getattr(self, field_name)}")
        _check_choice("norm", self.norm, _NORMS)
        _check_choice("position", self.position, _POSITIONS)
        _check_choice("mlp", self.mlp, _MLPS)
        for field_name in ("qk_norm", "zero_init_proj", "document_mask", "document_positions"):
            if not isinstance(getattr(self, field_name), bool):
                raise ValueError(f"{field_name} must be true or false, got {getattr(self, field_name)!r}")
        self._check_modern_options()
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.n_kv_head <= 0 or self.n_head % self.n_kv_head != 0:
            raise ValueError(f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head})")
        if self.position == "rope" and self.head_size % 2 != 0:
            raise ValueError(f"n_embd / n_head must be even for rope positions, got {self.head_size}")
        if self.intermediate_size is None:
            if self.mlp in ("gelu", "relu2"):
                self.intermediate_size = 4 * self.n_embd
            else:
                # SwiGLU has three matrices instead of two, so 2/3 of 4*n_embd keeps the parameter count of a
                # GELU MLP; rounding up to a multiple of 16 keeps the matmuls hardware friendly.
                self.intermediate_size = 16 * math.ceil(8 * self.n_embd / 3 / 16)
        if self.intermediate_size <= 0:
            raise ValueError(f"intermediate_size must be positive, got {self.intermediate_size}")

    def _check_modern_options(self) -> None:
        cap = self.logit_softcap
        if cap is not None and (
            isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < math.inf
        ):
            raise ValueError(f"logit_softcap must be a positive number or None, got {cap!r}")
        eos = self.eos_token_id
        if eos is not None and (
            isinstance(eos, bool) or not isinstance(eos, int) or not 0 <= eos < self.vocab_size
        ):
            raise ValueError(
                f"eos_token_id must be a token id in [0, vocab_size={self.vocab_size}), got {eos!r}"
            )
        if self.document_mask and eos is None:
            raise ValueError("document_mask needs eos_token_id: documents are told apart by their EOS tokens")
        if self.document_positions and not self.document_mask:
            raise ValueError(
                "document_positions needs document_mask: positions restart at documents the mask keeps apart"
            )

    @property
    def head_size(self) -> int:
        """Width of one attention head."""
        return self.n_embd // self.n_head

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ModelConfig:
        """Build the preset called `name`, with any field replaced by `overrides`."""
        if name not in MODEL_PRESETS:
            raise ValueError(f"Unknown model name {name!r}; known names: {', '.join(available_models())}")
        return cls(**{"name": name, **MODEL_PRESETS[name], **overrides})


def _check_choice(field_name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{field_name} must be one of {choices}, got {value!r}")


_GPT2 = dict(norm="layernorm", position="learned", mlp="gelu", bias=True, tie_embeddings=True)
_LLAMA = dict(norm="rmsnorm", position="rope", mlp="swiglu", bias=False)

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        _LLAMA,
        vocab_size=8192,
        block_size=256,
        n_layer=4,
        n_head=4,
        n_kv_head=2,
        n_embd=256,
        intermediate_size=688,
        tie_embeddings=True,
    ),
    "gpt2-debug": dict(_GPT2, vocab_size=256, block_size=64, n_layer=2, n_head=4, n_embd=64),
    "llama-debug": dict(
        _LLAMA,
        vocab_size=256,
        block_size=64,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=64,
        tie_embeddings=False,
    ),
    "gpt2-124m": dict(
        _GPT2, vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, intermediate_size=3072
    ),
    "llama-160m": dict(
        _LLAMA,
        vocab_size=32000,
        block_size=2048,
        n_layer=12,
        n_head=12,
        n_embd=768,
        intermediate_size=3072,
        norm_eps=1e-6,
        tie_embeddings=False,
    ),
    "tinyllama-1.1b": dict(
        _LLAMA,
        vocab_size=32000,
        block_size=2048,
        n_layer=22,
        n_head=32,
        n_kv_head=4,
        n_embd=2048,
        intermediate_size=5632,
        tie_embeddings=False,
    ),
    "llama2-7b": dict(
        _LLAMA,
        vocab_size=32000,
        block_size=4096,
        n_layer=32,
        n_head=32,
        n_kv_head=32,
        n_embd=4096,
        intermediate_size=11008,
        tie_embeddings=False,
    ),
}


def available_models() -> list[str]:
    """Names accepted by `ModelConfig.from_name`."""
    return sorted(MODEL_PRESETS)
