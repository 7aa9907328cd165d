"""Checkpoints written before the attention's fused `qkv` projection was split into `q`, `k` and `v`."""

from __future__ import annotations

from collections.abc import Iterable

import torch

FUSED_QKV = ".attn.qkv."
FUSED_QKV_RESUME_ERROR = (
    "this checkpoint was written before the attention's fused qkv projection was split into q, k and v: "
    "its optimizer state cannot be resumed. Start from its weights instead with --model.init_from PATH "
    "(fresh optimizer and schedule)"
)


def split_fused_qkv(state_dict: dict[str, torch.Tensor]) -> bool:
    """Rewrite, in place, weights saved with one fused `attn.qkv` projection as `attn.q`, `.k` and `.v`.

    Such checkpoints still load as weights (generation, --model.init_from); their optimizer states cannot
    be resumed. Returns whether any key was rewritten.
    """
    fused = [key for key in state_dict if FUSED_QKV in key]
    for key in fused:
        value = state_dict.pop(key)
        prefix, kind = key.split(FUSED_QKV)
        # Rows are [q (n_embd), k (kv width), v (kv width)]; the weight is [rows, n_embd].
        width = state_dict[f"{prefix}.attn.proj.weight"].shape[0]
        kv_width = (value.shape[0] - width) // 2
        for name, part in zip("qkv", value.split([width, kv_width, kv_width]), strict=True):
            state_dict[f"{prefix}.attn.{name}.{kind}"] = part.clone()
    return bool(fused)


def has_fused_qkv(keys: Iterable[str]) -> bool:
    """Whether state-dict keys (e.g. a sharded checkpoint's metadata) hold the old fused projection."""
    return any(FUSED_QKV in key for key in keys)
