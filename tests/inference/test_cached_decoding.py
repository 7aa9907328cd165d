"""Batched decoding through the KV cache gives the logits and tokens of recomputing every prompt in full."""

from __future__ import annotations

import pytest
import torch

from lit_pretrain.inference.generation import generate_batch
from lit_pretrain.model import GPT, ModelConfig

# Llama style: RoPE, RMSNorm, SwiGLU, grouped-query attention (4 query heads share 2 key/value heads).
# GPT-2 style: learned positions, LayerNorm, GELU, biases. A larger init_std spreads the logits apart, so
# greedy decoding does not hinge on near ties.
CONFIGS = {
    "llama": dict(name="llama-debug", init_std=0.2),
    "gpt2": dict(name="gpt2-debug", init_std=0.2),
}
MAX_NEW_TOKENS = 12


@pytest.fixture(params=sorted(CONFIGS))
def model(request) -> GPT:
    config = dict(CONFIGS[request.param])
    name = config.pop("name")
    config = ModelConfig.from_name(name, **config)
    if name == "llama-debug":
        assert config.position == "rope" and config.n_kv_head < config.n_head
    else:
        assert config.position == "learned"
    torch.manual_seed(0)
    return GPT(config).eval()


def record_logits(model: GPT) -> tuple[list[torch.Tensor], torch.utils.hooks.RemovableHandle]:
    calls: list[torch.Tensor] = []
    handle = model.lm_head.register_forward_hook(lambda module, args, output: calls.append(output.clone()))
    return calls, handle


def test_cached_batched_decoding_equals_full_recomputation(model):
    block_size = model.config.block_size
    generator = torch.Generator().manual_seed(1)
    lengths = [9, 1, 4, block_size - 5]  # the last row fills the context after 5 new tokens
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=generator) for n in lengths]

    calls, handle = record_logits(model)
    try:
        outputs = generate_batch(model, prompts, MAX_NEW_TOKENS, temperature=0)
    finally:
        handle.remove()
    # One prefill of every row ([B, longest, vocab]), then one call per decoding step ([B, 1, vocab]).
    prefill, *steps = calls
    assert prefill.shape[:2] == (len(prompts), max(lengths)) and all(s.shape[1] == 1 for s in steps)

    for row, (prompt, output) in enumerate(zip(prompts, outputs, strict=True)):
        new_tokens = min(MAX_NEW_TOKENS, block_size - len(prompt))
        assert len(output) == len(prompt) + new_tokens
        cached = [prefill[row, len(prompt) - 1]] + [step[row, -1] for step in steps[: new_tokens - 1]]
        sequence = prompt
        with torch.no_grad():
            for position in range(new_tokens):
                # No cache: the whole sequence so far, alone, through the plain training forward.
                full = model(sequence[None])[0, -1]
                torch.testing.assert_close(cached[position], full, rtol=0, atol=2e-5)
                sequence = torch.cat([sequence, full.argmax()[None]])
        assert torch.equal(output, sequence), f"row {row}"
