"""Autoregressive sampling from a `GPT` with its KV cache."""

from __future__ import annotations

import torch

from lit_pretrain.model import GPT


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick a token id from `logits` [..., vocab]: argmax if temperature is 0, else sample; returns [...]."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    # multinomial only takes 1-D or 2-D input, so fold any leading dimensions into one.
    samples = torch.multinomial(probs.reshape(-1, probs.size(-1)), num_samples=1, generator=generator)
    return samples.view(logits.shape[:-1])


@torch.inference_mode()
def generate(
    model: GPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue the 1-D token tensor `prompt`; returns `prompt` followed by the new tokens.

    The prompt is prefilled in one forward pass, then tokens are decoded one at a time through the KV cache.
    Generation stops after `max_new_tokens`, after emitting `eos_id` (which is kept in the output), or when
    the context reaches the model's `block_size`. The model never slides its window: a prompt of
    `block_size` tokens or more is truncated from the left to its last `block_size - 1` tokens, so that
    at least one token can be generated, but the full prompt is still returned at the front of the output.
    Any KV cache already set up on the model is replaced and cleared at the end. `generator`, if given,
    must live on the model's device.
    """
    if prompt.ndim != 1 or prompt.numel() == 0:
        raise ValueError(f"prompt must be a non-empty 1-D tensor of token ids, got {tuple(prompt.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if max_new_tokens == 0:
        return prompt.clone()
    block_size = model.config.block_size
    context = prompt if prompt.numel() < block_size else prompt[prompt.numel() - block_size + 1 :]
    max_new_tokens = min(max_new_tokens, block_size - context.numel())
    device = model.wte.weight.device
    context = context.to(device)

    # The last new token is never fed back, so the cache needs one slot less than the final length.
    model.setup_kv_cache(batch_size=1, max_seq_len=context.numel() + max_new_tokens - 1)
    try:
        input_pos = torch.arange(context.numel(), device=device)
        logits = model(context[None], input_pos)[0, -1]
        new_tokens = []
        for step in range(max_new_tokens):
            token = sample_next_token(logits, temperature, top_k, generator)
            new_tokens.append(token)
            if step == max_new_tokens - 1 or (eos_id is not None and token.item() == eos_id):
                break
            input_pos = input_pos[-1:] + 1
            logits = model(token.view(1, 1), input_pos)[0, -1]
    finally:
        model.clear_kv_cache()
    return torch.cat([prompt, torch.stack(new_tokens).to(prompt.device)])
