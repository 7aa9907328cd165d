"""Decoding with per-row positions (`input_pos` [B, T]): each row at its own place in its own cache row."""

from __future__ import annotations

import pytest
import torch

from lit_pretrain.model import GPT, ModelConfig


def build(name: str) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig.from_name(name, init_std=0.2)).eval()


@pytest.mark.parametrize("name", ["gpt2-debug", "llama-debug"])
def test_rows_at_different_positions_match_their_full_forward(name):
    model = build(name)
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    short, long = (
        torch.randint(0, vocab, (5,), generator=generator),
        torch.randint(0, vocab, (12,), generator=generator),
    )
    continuation = torch.randint(0, vocab, (2, 4), generator=generator)
    with torch.no_grad():
        expected = [
            model(torch.cat([p, c])[None])[0] for p, c in zip((short, long), continuation, strict=True)
        ]
        # Prefill right-padded to the longer row; the short row's padding is overwritten as it decodes.
        padded = torch.stack([torch.cat([short, torch.zeros(7, dtype=torch.long)]), long])
        model.setup_kv_cache(batch_size=2, max_seq_len=16)
        prefill = model(padded, torch.arange(12))
        positions = torch.tensor([5, 12])
        steps = []
        for t in range(4):
            steps.append(model(continuation[:, t : t + 1], (positions + t)[:, None])[:, 0])
    torch.testing.assert_close(prefill[0, :5], expected[0][:5], rtol=0, atol=1e-5)
    torch.testing.assert_close(prefill[1], expected[1][:12], rtol=0, atol=1e-5)
    decoded = torch.stack(steps, dim=1)
    torch.testing.assert_close(decoded[0], expected[0][5:], rtol=0, atol=1e-5)
    torch.testing.assert_close(decoded[1], expected[1][12:], rtol=0, atol=1e-5)


def test_per_row_positions_equal_to_shared_ones_give_the_same_logits():
    model = build("llama-debug")
    idx = torch.randint(0, model.config.vocab_size, (3, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.setup_kv_cache(batch_size=3)
        shared = model(idx, torch.arange(6))
        model.setup_kv_cache(batch_size=3)
        per_row = model(idx, torch.arange(6).expand(3, 6))
    torch.testing.assert_close(per_row, shared, rtol=0, atol=1e-6)
