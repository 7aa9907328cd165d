"""Rotary position embeddings against an independent reference (pairs of features rotated as complex
numbers, tests/helpers/reference.py) and the properties that make them positional encodings."""

from __future__ import annotations

import math

import pytest
import torch

from lit_pretrain.model import GPT, ModelConfig
from lit_pretrain.model.gpt import apply_rope, rope_tables
from tests.helpers.reference import reference_rope


def rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """The model's rotation of x [..., T, D] at `positions`."""
    cos, sin = rope_tables(int(positions.max()) + 1, x.size(-1), base)
    return apply_rope(x, cos[positions], sin[positions])


def test_tables_hold_cos_and_sin_of_position_times_frequency():
    # head_size 4, base 100: frequencies 100**(-0/4) = 1 and 100**(-2/4) = 0.1, each used by two features.
    cos, sin = rope_tables(3, 4, 100.0)
    assert cos.shape == sin.shape == (3, 4) and cos.dtype == sin.dtype == torch.float32
    torch.testing.assert_close(cos[0], torch.ones(4))
    torch.testing.assert_close(sin[0], torch.zeros(4))
    # Position 2: angles 2 and 0.2.
    expected_cos = [-0.4161468365471424, 0.9800665778412416, -0.4161468365471424, 0.9800665778412416]
    expected_sin = [0.9092974268256817, 0.19866933079506122, 0.9092974268256817, 0.19866933079506122]
    torch.testing.assert_close(cos[2], torch.tensor(expected_cos))
    torch.testing.assert_close(sin[2], torch.tensor(expected_sin))


def test_one_pair_rotates_like_a_complex_number():
    # head_size 2: one pair (a, b) = a + ib, frequency 1, so position m rotates it by m radians.
    x = torch.tensor([[[[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]]]])  # [B=1, H=1, T=3, D=2]
    rotated = rope(x, torch.tensor([0, 1, 2]))
    c1, s1, c2, s2 = math.cos(1), math.sin(1), math.cos(2), math.sin(2)
    # 1 * e^0 = 1; i * e^(i) = -sin 1 + i cos 1; (3 + 4i) * e^(2i) = (3c - 4s) + i(3s + 4c).
    expected = torch.tensor([[[[1.0, 0.0], [-s1, c1], [3 * c2 - 4 * s2, 3 * s2 + 4 * c2]]]])
    torch.testing.assert_close(rotated, expected)


@pytest.mark.parametrize(("head_size", "base"), [(8, 10000.0), (16, 500.0), (64, 10000.0)])
def test_rotation_matches_complex_multiplication(head_size: int, base: float):
    generator = torch.Generator().manual_seed(head_size)
    x = torch.randn(2, 3, 40, head_size, generator=generator)
    positions = torch.arange(40) * 3 + 1  # not just 0..T-1: the tables are indexed by position
    expected = reference_rope(x, positions, base)
    torch.testing.assert_close(rope(x, positions, base).double(), expected, rtol=1e-5, atol=1e-5)


def test_rotation_preserves_norms_and_position_zero_is_identity():
    x = torch.randn(2, 4, 30, 16, generator=torch.Generator().manual_seed(0))
    rotated = rope(x, torch.arange(30))
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rotated[:, :, 0], x[:, :, 0], rtol=0, atol=0)
    assert not torch.allclose(rotated[:, :, 1:], x[:, :, 1:], atol=1e-3)


def test_scores_depend_only_on_relative_position():
    generator = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 1, 1, 32, generator=generator), torch.randn(1, 1, 1, 32, generator=generator)

    def score(m: int, n: int) -> float:
        query = rope(q, torch.tensor([m]))
        key = rope(k, torch.tensor([n]))
        return float((query * key).sum())

    # <rope(q, m), rope(k, n)> is a function of m - n alone...
    for offset in (0, 1, 7):
        scores = [score(m, m - offset) for m in (offset, offset + 5, offset + 100, offset + 1000)]
        assert scores == pytest.approx([scores[0]] * len(scores), rel=1e-4, abs=1e-4)
    # ...and it does depend on m - n.
    assert score(5, 5) != pytest.approx(score(5, 4), rel=1e-2)
    assert score(5, 4) != pytest.approx(score(4, 5), rel=1e-2)


def test_low_precision_input_is_rotated_in_float32_and_keeps_its_dtype():
    x = torch.randn(1, 2, 8, 16, generator=torch.Generator().manual_seed(2))
    positions = torch.arange(8) * 250
    rotated = rope(x.bfloat16(), positions)
    assert rotated.dtype == torch.bfloat16
    expected = reference_rope(x.bfloat16().float(), positions, 10000.0)
    # One bfloat16 rounding of the result (relative 2**-8), not of every intermediate.
    torch.testing.assert_close(rotated.double(), expected, rtol=2**-8, atol=1e-6)


def last_logits_for_permuted_prefixes(model: GPT, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    config = model.config
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, config.vocab_size, (1, 24), generator=generator)
    permuted = idx.clone()
    permuted[0, :-1] = idx[0, :-1][torch.randperm(23, generator=generator)]
    with torch.no_grad():
        return model(idx)[0, -1], model(permuted)[0, -1]


def test_rope_makes_a_one_layer_model_see_token_order():
    # In one causal layer without positions the last token attends to the *set* of earlier tokens: its
    # logits do not change when they are shuffled. Rotary embeddings make them change.
    torch.manual_seed(0)
    model = GPT(ModelConfig.from_name("llama-debug", n_layer=1, init_std=0.2))
    original, permuted = last_logits_for_permuted_prefixes(model)
    assert (original - permuted).abs().max() > 1e-2

    # The same model with every rotation by angle zero is order-blind: the difference above is RoPE's.
    model.rope_cos.fill_(1.0)
    model.rope_sin.fill_(0.0)
    original, permuted = last_logits_for_permuted_prefixes(model)
    torch.testing.assert_close(original, permuted, rtol=1e-5, atol=1e-5)


def test_model_uses_the_tables_of_the_token_positions():
    # Decoding one token at position p through the KV cache must use the rotation of position p: with the
    # tables of position 0 instead, the cached prefix is seen from the wrong place.
    torch.manual_seed(0)
    model = GPT(ModelConfig.from_name("llama-debug", init_std=0.2))
    idx = torch.randint(0, model.config.vocab_size, (1, 12))
    with torch.no_grad():
        full = model(idx)
        model.setup_kv_cache(batch_size=1)
        model(idx[:, :11], torch.arange(11))
        last = model(idx[:, 11:], torch.tensor([11]))
    torch.testing.assert_close(last[0, 0], full[0, 11], rtol=1e-5, atol=1e-5)
