"""Analytic parameter and FLOP counts, for sizing runs and computing model FLOPs utilisation (MFU)."""

from __future__ import annotations

from lit_pretrain.model.config import ModelConfig


def num_parameters(config: ModelConfig, include_embedding: bool = True) -> int:
    """Number of parameters of `GPT(config)`, counted from the config alone.

    With `include_embedding=True` this equals `sum(p.numel() for p in GPT(config).parameters())` (a tied
    embedding/lm_head matrix counts once). With `include_embedding=False` the lookup tables are left out: the
    learned position table always, the token embedding table only when it is untied. A tied table is kept
    because it also serves as the lm_head matmul, so it costs FLOPs like any other weight; the untied
    lm_head is always counted.
    """
    width, hidden, kv_width = config.n_embd, config.intermediate_size, config.n_kv_head * config.head_size
    bias = int(config.bias)
    per_feature = 2 if config.norm == "layernorm" and config.bias else 1  # weight, and bias if any
    norm = width * per_feature
    attention = width * (width + 2 * kv_width) + width * width + bias * (2 * width + 2 * kv_width)
    if config.qk_norm:
        attention += 2 * config.head_size * per_feature  # one norm over head_size each for q and k
    if config.mlp in ("gelu", "relu2"):
        mlp = 2 * width * hidden + bias * (hidden + width)
    else:
        mlp = 3 * width * hidden + bias * (2 * hidden + width)
    block = attention + mlp + 2 * norm
    token_table = config.vocab_size * width
    position_table = config.block_size * width if config.position == "learned" else 0
    lm_head = 0 if config.tie_embeddings else config.vocab_size * width
    total = config.n_layer * block + norm + lm_head
    if include_embedding:
        return total + token_table + position_table
    return total + (token_table if config.tie_embeddings else 0)


def training_flops_per_token(config: ModelConfig, seq_len: int) -> int:
    """FLOPs of one training step (forward + backward) per token, for sequences of length `seq_len`.

    Returns 6N + 12·L·H·Q·T, with N = `num_parameters(config, include_embedding=False)`, L layers, H query
    heads, Q head size and T = `seq_len`:

    - 6N: every weight takes part in one multiply-add per token in the forward pass (2 FLOPs) and in two in
      the backward pass (gradient w.r.t. the input and w.r.t. the weight: 4 FLOPs).
    - 12·L·H·Q·T: the attention scores Q·Kᵀ and the weighted sum of values each cost 2·T·Q FLOPs per token
      and head in the forward pass, and twice that in the backward pass. The full T×T score matrix is
      counted, as PaLM and FlashAttention do, though causal masking could skip half of it; recomputation
      of the scores in a fused backward kernel is not counted (these are model FLOPs, not hardware FLOPs).

    Norms, biases, activations, softmax, the logit soft-cap and the loss are ignored (they are a small
    fraction and not matmuls). With grouped-query attention the score FLOPs still scale with the number of
    query heads. Document masking does not change the count: the full T×T score matrix is counted, as with
    causal masking (and the masked SDPA kernel the model uses does compute all of it).
    """
    n = num_parameters(config, include_embedding=False)
    return 6 * n + 12 * config.n_layer * config.n_head * config.head_size * seq_len
