"""A decoder-only transformer in plain PyTorch, in GPT-2 or Llama flavour depending on `ModelConfig`.

GPT-2: LayerNorm, learned positions, GELU MLP, biases. Llama: RMSNorm, rotary positions (RoPE), SwiGLU MLP,
grouped-query attention, no biases. Optional modded-nanogpt-style switches: QK-norm, a ReLU² MLP, zero-initialised
residual projections, logit soft-capping, and document masking of packed windows. Training, distribution,
precision and compilation live elsewhere.

Document masking uses scaled_dot_product_attention with a boolean [B, 1, T, T] block-causal mask, not
flex_attention: in torch 2.13 flex_attention has no backward on the CPU ("FlexAttention does not support
backward on CPU", eager or compiled), so it cannot train there, and its eager forward took 270 ms where the
masked SDPA took 27 ms (causal SDPA 12 ms; B=4, 4 heads, T=256, head size 64); on CUDA it is only fast
when compiled, which could not be checked here. The boolean mask works on every device, compiled or not
and under tensor parallelism; it costs B*T*T bytes per forward and computes the masked-out scores anyway.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lit_pretrain.model.config import ModelConfig


class GPT(nn.Module):
    """Token embedding, a stack of pre-norm transformer blocks, a final norm and the language-model head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        target_device = torch.get_default_device()
        # Build on the meta device and initialise once in reset_parameters(): this skips PyTorch's throwaway
        # default init and makes a regular build draw exactly the same weights as meta build + to_empty + reset.
        with torch.device("meta"):
            self.wte = nn.Embedding(config.vocab_size, config.n_embd)
            if config.position == "learned":
                self.wpe = nn.Embedding(config.block_size, config.n_embd)
            self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
            self.norm_f = make_norm(config)
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            if config.tie_embeddings:
                self.lm_head.weight = self.wte.weight
            if config.position == "rope":
                # Non-persistent: derived from the config, so kept out of checkpoints.
                table_shape = (config.block_size, config.head_size)
                self.register_buffer(
                    "rope_cos", torch.empty(table_shape, dtype=torch.float32), persistent=False
                )
                self.register_buffer(
                    "rope_sin", torch.empty(table_shape, dtype=torch.float32), persistent=False
                )
        if target_device.type != "meta":
            self.to_empty(device=target_device)
            self.reset_parameters()

    def to_empty(self, *, device: torch.device | str | None, recurse: bool = True) -> GPT:
        """Allocate every tensor, uninitialised, on `device`, keeping a tied embedding and head tied."""
        super().to_empty(device=device, recurse=recurse)
        if self.config.tie_embeddings:
            # nn.Module.to_empty replaces every parameter with a new one, which unties shared weights.
            self.lm_head.weight = self.wte.weight
        return self

    def reset_parameters(self) -> None:
        """(Re)initialise all weights from the torch RNG and recompute the RoPE tables."""
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                self.init_parameter_(name, parameter)
        self.reset_buffers()

    def init_parameter_(
        self, name: str, tensor: torch.Tensor, generator: torch.Generator | None = None
    ) -> None:
        """Fill `tensor`, the full value of parameter `name`, with its initial values drawn from `generator`.

        One parameter at a time, in `named_parameters()` order: a sharded model can then be initialised
        exactly like an unsharded one by drawing each full parameter and keeping its own shard.
        """
        module_name, _, kind = name.rpartition(".")
        module = self.get_submodule(module_name)
        residual = module_name.endswith(".proj")  # attn.proj and mlp.proj write into the residual stream
        if kind == "bias":
            nn.init.zeros_(tensor)
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(tensor)
        elif residual and self.config.zero_init_proj:
            # modded-nanogpt: every block starts as the identity; the first step's gradients still reach
            # these weights (their inputs are not zero) and, through them, the rest of the block.
            nn.init.zeros_(tensor)
        else:
            # GPT-2: scale the projections that write into the residual stream so its variance does not
            # grow with depth (each block adds two of them).
            std = (
                self.config.init_std / math.sqrt(2 * self.config.n_layer)
                if residual
                else self.config.init_std
            )
            nn.init.normal_(tensor, mean=0.0, std=std, generator=generator)

    def reset_buffers(self) -> None:
        """Recompute the buffers derived from the config (the RoPE tables)."""
        config = self.config
        if config.position == "rope":
            cos, sin = rope_tables(
                config.block_size, config.head_size, config.rope_base, self.rope_cos.device
            )
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, T, vocab] for tokens `idx` [B, T]; with `input_pos`, decode through the KV cache.

        `input_pos` is [T], the positions of every row, or [B, T], each row's own: prompts of different
        lengths then decode in one batch, each row writing and reading its own cache positions.

        With `config.document_mask`, a full forward (no `input_pos`) keeps attention inside each document
        of the window (and, with `document_positions`, counts positions from each document's start).
        KV-cache decoding ignores both: it generates one document, attending to the whole cache.
        """
        config = self.config
        seq_len = idx.size(1)
        if seq_len > config.block_size:
            raise ValueError(f"Sequence length {seq_len} exceeds block_size {config.block_size}")
        attn_mask = None
        if input_pos is not None:
            positions = input_pos
        elif config.document_mask:
            documents = document_ids(idx, config.eos_token_id)
            attn_mask = document_causal_mask(documents)
            positions = (
                positions_in_documents(documents)
                if config.document_positions
                else torch.arange(seq_len, device=idx.device)
            )
        else:
            positions = torch.arange(seq_len, device=idx.device)
        x = self.wte(idx)
        if self.config.position == "learned":
            x = x + self.wpe(positions)
            cos = sin = None
        else:
            cos, sin = self.rope_cos[positions], self.rope_sin[positions]
            if positions.ndim == 2:
                # [B, T, head_size] -> [B, 1, T, head_size], to broadcast over the heads of [B, H, T, head_size].
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        for block in self.blocks:
            x = block(x, cos, sin, input_pos, attn_mask)
        logits = self.lm_head(self.norm_f(x))
        if config.logit_softcap is not None:
            # Gemma 2 / modded-nanogpt: a smooth bound on the logits; tanh in float32 (flat and coarse in bf16).
            cap = config.logit_softcap
            logits = (cap * torch.tanh(logits.float() / cap)).to(logits.dtype)
        return logits

    def setup_kv_cache(
        self,
        batch_size: int,
        max_seq_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        """Allocate a key/value cache in every attention layer, for decoding with `forward(idx, input_pos)`."""
        max_seq_len = max_seq_len or self.config.block_size
        if max_seq_len > self.config.block_size:
            raise ValueError(f"max_seq_len {max_seq_len} exceeds block_size {self.config.block_size}")
        device = device or self.wte.weight.device
        dtype = dtype or self.wte.weight.dtype
        shape = (batch_size, self.config.n_kv_head, max_seq_len, self.config.head_size)
        # Search all modules rather than self.blocks[i].attn so this works on wrapped (compiled/FSDP) blocks.
        for module in self.modules():
            if isinstance(module, CausalSelfAttention):
                module.kv_cache = KVCache(shape, device, dtype)

    def clear_kv_cache(self) -> None:
        """Free the key/value caches."""
        for module in self.modules():
            if isinstance(module, CausalSelfAttention):
                module.kv_cache = None


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.norm_2 = make_norm(config)
        self.mlp = {"gelu": GeluMLP, "swiglu": SwiGLUMLP, "relu2": ReLU2MLP}[config.mlp](config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor | None = None,
        sin: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the block to x [B, T, C]; cos/sin are the RoPE tables at x's positions."""
        x = x + self.dropout(self.attn(self.norm_1(x), cos, sin, input_pos, attn_mask))
        return x + self.dropout(self.mlp(self.norm_2(x)))


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal self-attention with an optional KV cache."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.n_kv_head, config.head_size
        kv_width = config.n_kv_head * config.head_size
        # Separate projections (not one fused qkv): tensor parallelism splits each by heads, and the
        # layout matches Hugging Face's q_proj / k_proj / v_proj.
        self.q = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.k = nn.Linear(config.n_embd, kv_width, bias=config.bias)
        self.v = nn.Linear(config.n_embd, kv_width, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # QK-norm (OLMo 2, Qwen 3, modded-nanogpt): bounds the attention logits, which otherwise grow and
        # destabilise training at high learning rates. One weight of head_size shared by all heads, so it is
        # replicated, not split, under tensor parallelism.
        self.q_norm = make_norm(config, config.head_size) if config.qk_norm else None
        self.k_norm = make_norm(config, config.head_size) if config.qk_norm else None
        self.kv_cache: KVCache | None = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor | None = None,
        sin: torch.Tensor | None = None,
        input_pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend over x [B, T, C] causally (or as `attn_mask` [B, 1, T, T] allows), or over the cache plus x.

        With `input_pos` (KV-cache decoding) `attn_mask` is ignored: each query sees the cache up to its position.
        """
        batch, seq_len, _ = x.shape
        # Head counts come from the projections' outputs (-1), not the config: under tensor parallelism
        # each rank holds only its share of the heads.
        q = self.q(x).view(batch, seq_len, -1, self.head_size).transpose(1, 2)
        k = self.k(x).view(batch, seq_len, -1, self.head_size).transpose(1, 2)
        v = self.v(x).view(batch, seq_len, -1, self.head_size).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if cos is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        mask = attn_mask
        if input_pos is not None:
            if self.kv_cache is None:
                raise RuntimeError("input_pos given but no KV cache: call model.setup_kv_cache() first")
            k, v = self.kv_cache.update(input_pos, k, v)
            # Query i sits at input_pos[..., i] and may see every cached position up to and including its own.
            mask = input_pos[..., :, None] >= torch.arange(k.size(2), device=x.device)
            if mask.ndim == 3:
                mask = mask.unsqueeze(1)  # per-row positions: [B, T, S] -> [B, 1, T, S], shared by the heads
        if self.n_kv_head != self.n_head:
            # Expand K/V heads explicitly: SDPA's enable_gqa is not supported by every backend (e.g. CUDA
            # memory-efficient attention), and silently falling back to the math kernel would cost memory.
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.proj(y.transpose(1, 2).reshape(batch, seq_len, -1))


class KVCache(nn.Module):
    """Keys and values of past positions, [B, n_kv_head, max_seq_len, head_size], written in place."""

    def __init__(self, shape: tuple[int, ...], device: torch.device | str, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def update(
        self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, n_kv_head, T, head_size] at `input_pos` ([T], or [B, T] per row) and return the cache."""
        k_cache, v_cache = self.k[: k.size(0)], self.v[: v.size(0)]
        if input_pos.ndim == 1:
            k_cache.index_copy_(2, input_pos, k.to(k_cache.dtype))
            v_cache.index_copy_(2, input_pos, v.to(v_cache.dtype))
        else:
            index = input_pos[:, None, :, None].expand(-1, k.size(1), -1, k.size(3))
            k_cache.scatter_(2, index, k.to(k_cache.dtype))
            v_cache.scatter_(2, index, v.to(v_cache.dtype))
        return k_cache.to(k.dtype), v_cache.to(v.dtype)


class GeluMLP(nn.Module):
    """GPT-2 MLP: proj(gelu(fc(x)))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        # GPT-2 was trained with the tanh approximation of GELU.
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class ReLU2MLP(GeluMLP):
    """modded-nanogpt MLP: proj(relu(fc(x))**2), with GeluMLP's two matrices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        return self.proj(F.relu(self.fc(x)).square())


class SwiGLUMLP(nn.Module):
    """Llama MLP: proj(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.up = nn.Linear(config.n_embd, config.intermediate_size, bias=config.bias)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP."""
        return self.proj(F.silu(self.gate(x)) * self.up(x))


def make_norm(config: ModelConfig, width: int | None = None) -> nn.Module:
    """The normalisation layer the config asks for, over `width` features (default n_embd)."""
    width = width or config.n_embd
    if config.norm == "layernorm":
        return nn.LayerNorm(width, eps=config.norm_eps, bias=config.bias)
    return nn.RMSNorm(width, eps=config.norm_eps)


def document_ids(idx: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Document index [B, T] of each token of packed windows `idx` [B, T]: the number of EOS tokens before it.

    Strictly before: an EOS belongs to the document it ends, and the token after it starts the next one.
    """
    is_eos = (idx == eos_token_id).int()
    return is_eos.cumsum(dim=1) - is_eos


def document_causal_mask(documents: torch.Tensor) -> torch.Tensor:
    """Boolean mask [B, 1, T, T] (True: may attend) for document ids [B, T]: causal and within a document."""
    seq_len = documents.size(1)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=documents.device).tril()
    return ((documents[:, :, None] == documents[:, None, :]) & causal).unsqueeze(1)


def positions_in_documents(documents: torch.Tensor) -> torch.Tensor:
    """Position [B, T] of each token within its document, for document ids [B, T] that never decrease."""
    index = torch.arange(documents.size(1), device=documents.device).expand_as(documents)
    starts = torch.ones_like(documents, dtype=torch.bool)
    starts[:, 1:] = documents[:, 1:] != documents[:, :-1]
    first = torch.where(starts, index, 0).cummax(dim=1).values  # where the current document began
    return index - first


def rope_tables(
    seq_len: int, head_size: int, base: float, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [seq_len, head_size] of the rotary angles, computed in float32."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, device=device, dtype=torch.float32) / head_size)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # the two halves of each head rotate together
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, T, head_size] by cos/sin [T, head_size] or [B, 1, T, head_size] (Llama's half-split)."""
    # Rotate in float32: in bf16 the angles of late positions lose too much precision.
    x_float = x.float()
    x1, x2 = x_float.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x_float * cos.float() + rotated * sin.float()).to(x.dtype)
