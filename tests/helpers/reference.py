"""Independent re-implementations of model maths, written from the formulas, to check lit_pretrain's against.

They use explicit arithmetic in float64 rather than the torch.nn layers and fused kernels the model uses.
"""

from __future__ import annotations

import math

import torch

from lit_pretrain.model import GPT


def reference_rope(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """x [..., T, D] with each pair (x[i], x[i + D/2]) rotated as the complex number x[i] + 1j * x[i + D/2]
    times exp(1j * position * base**(-2i/D)) (Llama's half-split layout), in float64."""
    half = x.size(-1) // 2
    frequencies = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / x.size(-1))
    angles = positions.double()[:, None] * frequencies[None, :]
    pairs = torch.complex(x[..., :half].double(), x[..., half:].double())
    rotated = pairs * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([rotated.real, rotated.imag], dim=-1)


def reference_forward(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, vocab] of `model`'s weights on `idx` [B, T], computed in float64 from the formulas."""
    config = model.config
    weights = {name: value.detach().double() for name, value in model.state_dict().items()}
    batch, seq_len = idx.shape
    width, heads, kv_heads, head_size = config.n_embd, config.n_head, config.n_kv_head, config.head_size

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        y = x @ weights[f"{name}.weight"].T
        return y + weights[f"{name}.bias"] if config.bias else y

    def norm(x: torch.Tensor, name: str) -> torch.Tensor:
        if config.norm == "layernorm":
            centred = x - x.mean(-1, keepdim=True)
            y = centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + config.norm_eps)
            y = y * weights[f"{name}.weight"]
            return y + weights[f"{name}.bias"] if config.bias else y
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + config.norm_eps) * weights[f"{name}.weight"]

    positions = torch.arange(seq_len)
    x = weights["wte.weight"][idx]
    if config.position == "learned":
        x = x + weights["wpe.weight"][positions]
    # Query head h reads key/value head h // (heads / kv_heads): consecutive query heads share one.
    kv_of_head = torch.arange(heads) // (heads // kv_heads)
    future = torch.ones(seq_len, seq_len).triu(diagonal=1).bool()
    for layer in range(config.n_layer):
        prefix = f"blocks.{layer}"
        h = norm(x, f"{prefix}.norm_1")
        q = linear(h, f"{prefix}.attn.q").view(batch, seq_len, heads, head_size).transpose(1, 2)
        k = linear(h, f"{prefix}.attn.k").view(batch, seq_len, kv_heads, head_size).transpose(1, 2)
        v = linear(h, f"{prefix}.attn.v").view(batch, seq_len, kv_heads, head_size).transpose(1, 2)
        if config.position == "rope":
            q = reference_rope(q, positions, config.rope_base)
            k = reference_rope(k, positions, config.rope_base)
        k, v = k[:, kv_of_head], v[:, kv_of_head]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_size)
        probabilities = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        attended = (probabilities @ v).transpose(1, 2).reshape(batch, seq_len, width)
        x = x + linear(attended, f"{prefix}.attn.proj")
        h = norm(x, f"{prefix}.norm_2")
        if config.mlp == "gelu":
            a = linear(h, f"{prefix}.mlp.fc")
            # The tanh approximation GPT-2 was trained with.
            a = 0.5 * a * (1 + torch.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
        else:
            gate = linear(h, f"{prefix}.mlp.gate")
            a = gate * torch.sigmoid(gate) * linear(h, f"{prefix}.mlp.up")
        x = x + linear(a, f"{prefix}.mlp.proj")
    return norm(x, "norm_f") @ weights["lm_head.weight"].T
