"""Parameter and FLOP counts against literal numbers, the built modules and torch's FLOP counter.

The literals were worked out by hand below and agree with building each preset on the meta device and
counting (and, for GPT-2 small, Llama 2 7B and TinyLlama, with the published sizes); they are written
out so that a wrong formula cannot agree with itself.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lit_pretrain.model import GPT, ModelConfig, available_models, num_parameters, training_flops_per_token

# name: (all parameters, without embedding tables). Tied tables count once; with include_embedding=False
# the learned position table is left out, and the token table too unless it doubles as the lm_head.
PRESET_PARAMETERS = {
    "gpt2-124m": (124_439_808, 123_653_376),  # published GPT-2 small; minus 1024 * 768 positions
    "gpt2-debug": (120_576, 116_480),
    "llama-160m": (162_417_408, 137_841_408),  # minus the untied 32000 * 768 token table
    "llama-debug": (125_248, 108_864),
    "llama2-7b": (6_738_415_616, 6_607_343_616),  # published Llama 2 7B
    "tiny": (4_999_424, 4_999_424),
    "tinyllama-1.1b": (1_100_048_384, 1_034_512_384),  # published TinyLlama 1.1B
}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_preset_has_a_literal():
    assert sorted(PRESET_PARAMETERS) == available_models()


@pytest.mark.parametrize("name", sorted(PRESET_PARAMETERS))
def test_preset_parameter_counts_are_the_literals(name: str):
    total, without_embedding = PRESET_PARAMETERS[name]
    config = ModelConfig.from_name(name)
    assert num_parameters(config) == total
    assert num_parameters(config, include_embedding=False) == without_embedding


def test_gpt2_small_parameters_by_hand():
    # Per block: attention q, k, v, proj 4 * (768 * 768 + 768); MLP 768 * 3072 + 3072 + 3072 * 768 + 768;
    # two LayerNorms with weight and bias 2 * 2 * 768.
    block = 4 * (768 * 768 + 768) + (768 * 3072 + 3072 + 3072 * 768 + 768) + 2 * 2 * 768
    assert block == 7_087_872
    tables = 50257 * 768 + 1024 * 768  # tied token table (also the lm_head) and learned positions
    assert 12 * block + 2 * 768 + tables == 124_439_808 == PRESET_PARAMETERS["gpt2-124m"][0]


def test_llama_debug_parameters_by_hand():
    # Grouped-query attention: q and proj 64 * 64, k and v 64 * (2 heads * 16); SwiGLU 3 * 64 * 176;
    # two RMSNorms 2 * 64; no biases. Untied token table and lm_head, 256 * 64 each.
    block = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 176 + 2 * 64
    assert block == 46_208
    assert 2 * block + 64 + 256 * 64 == 108_864 == PRESET_PARAMETERS["llama-debug"][1]
    assert 2 * block + 64 + 2 * 256 * 64 == 125_248 == PRESET_PARAMETERS["llama-debug"][0]


@pytest.mark.parametrize("name", sorted(PRESET_PARAMETERS))
def test_meta_built_presets_have_the_literal_counts(name: str):
    # The meta device allocates nothing, so even the 7B model is cheap to count.
    with torch.device("meta"):
        model = GPT(ModelConfig.from_name(name))
    assert count_parameters(model) == PRESET_PARAMETERS[name][0]


VARIANTS = [
    # Every combination the formula branches on: norm and bias, MLP, positions, tying, grouped-query.
    dict(norm="layernorm", bias=False, mlp="gelu", position="learned", tie_embeddings=True),
    dict(norm="layernorm", bias=True, mlp="swiglu", position="rope", tie_embeddings=False),
    dict(norm="rmsnorm", bias=True, mlp="gelu", position="rope", tie_embeddings=True, n_kv_head=1),
    dict(norm="rmsnorm", bias=False, mlp="swiglu", position="learned", tie_embeddings=False, n_kv_head=2),
    dict(norm="rmsnorm", bias=True, mlp="swiglu", position="learned", tie_embeddings=True, n_kv_head=2),
    dict(intermediate_size=100, n_layer=3, vocab_size=300, block_size=40),
    # QK-norm (two head_size norms per layer, with biases for a biased LayerNorm) and ReLU²'s two matrices.
    dict(norm="layernorm", bias=True, mlp="relu2", position="learned", qk_norm=True),
    dict(norm="rmsnorm", bias=False, mlp="relu2", tie_embeddings=True, qk_norm=True, intermediate_size=72),
    dict(norm="rmsnorm", bias=True, mlp="swiglu", qk_norm=True, zero_init_proj=True, logit_softcap=30.0),
    dict(mlp="gelu", document_mask=True, eos_token_id=0, document_positions=True),
]


@pytest.mark.parametrize("overrides", VARIANTS)
def test_num_parameters_matches_the_module(overrides: dict):
    config = ModelConfig.from_name("llama-debug", **overrides)
    with torch.device("meta"):
        model = GPT(config)
    assert num_parameters(config) == count_parameters(model)
    tables = 0 if config.tie_embeddings else config.vocab_size * config.n_embd
    if config.position == "learned":
        tables += config.block_size * config.n_embd
    assert num_parameters(config, include_embedding=False) == count_parameters(model) - tables


@pytest.mark.parametrize("name", ["gpt2-debug", "llama-debug", "tiny"])
def test_num_parameters_matches_a_real_module(name: str):
    assert num_parameters(ModelConfig.from_name(name)) == count_parameters(GPT(ModelConfig.from_name(name)))


# 6N + 12 * L * H * Q * T written out: N without embedding tables, L layers, H query heads, Q head size.
PRESET_FLOPS = [
    ("gpt2-124m", 1024, 6 * 123_653_376 + 12 * 12 * 12 * 64 * 1024, 855_166_464),
    ("gpt2-124m", 128, 6 * 123_653_376 + 12 * 12 * 12 * 64 * 128, 756_076_032),
    ("llama-160m", 2048, 6 * 137_841_408 + 12 * 12 * 12 * 64 * 2048, 1_053_540_864),
    # Grouped-query attention (4 KV heads) still scores with all 32 query heads.
    ("tinyllama-1.1b", 2048, 6 * 1_034_512_384 + 12 * 22 * 32 * 64 * 2048, 7_314_370_560),
    ("llama2-7b", 4096, 6 * 6_607_343_616 + 12 * 32 * 32 * 128 * 4096, 46_086_512_640),
    ("tiny", 256, 6 * 4_999_424 + 12 * 4 * 4 * 64 * 256, 33_142_272),
    ("gpt2-debug", 64, 6 * 116_480 + 12 * 2 * 4 * 16 * 64, 797_184),
    ("llama-debug", 1, 6 * 108_864 + 12 * 2 * 4 * 16 * 1, 654_720),
]


@pytest.mark.parametrize(("name", "seq_len", "formula", "literal"), PRESET_FLOPS)
def test_training_flops_per_token_literals(name: str, seq_len: int, formula: int, literal: int):
    assert formula == literal
    assert training_flops_per_token(ModelConfig.from_name(name), seq_len) == literal


# Every switch on: QK-norm's weights are norms (not matmuls), ReLU² has two matrices, the soft-cap is
# elementwise, and the document mask leaves the attention matmuls at full size.
SWITCHED = dict(qk_norm=True, mlp="relu2", logit_softcap=30.0, document_mask=True, eos_token_id=0)


@pytest.mark.parametrize(
    ("name", "overrides"), [("gpt2-debug", {}), ("llama-debug", {}), ("llama-debug", SWITCHED)]
)
@pytest.mark.parametrize("seq_len", [64, 16])
def test_training_flops_match_flop_counter(name: str, overrides: dict, seq_len: int):
    config = ModelConfig.from_name(name, n_layer=2, n_embd=128, block_size=64, vocab_size=512, **overrides)
    model = GPT(config)
    batch = 2
    tokens = torch.randint(0, config.vocab_size, (batch, seq_len + 1))
    tokens[:, seq_len // 3] = 0  # an EOS: two documents per window
    counter = FlopCounterMode(display=False)
    # FlopCounterMode has no formula for the fused CPU attention kernel and would count its FLOPs as zero; the
    # math backend runs attention as plain batched matmuls, which it does count.
    with counter, sdpa_kernel(SDPBackend.MATH):
        logits = model(tokens[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    counts = {op: flops / (batch * seq_len) for op, flops in counter.get_flop_counts()["Global"].items()}
    # The attention term is exact: the batched matmuls are the score and value products.
    assert counts[torch.ops.aten.bmm] == 12 * 2 * 4 * 32 * seq_len
    # The counter sees every matmul and nothing else. The formula's 6N also counts the norms' and the
    # biases' parameters, which are not matmul weights: take them out and the two agree exactly (the
    # difference is 0.14% of the total for llama-debug and 0.72% for gpt2-debug).
    not_matmul = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias") or "norm" in n)
    assert (
        counter.get_total_flops() / (batch * seq_len)
        == training_flops_per_token(config, seq_len) - 6 * not_matmul
    )
    assert counter.get_total_flops() / (batch * seq_len) == pytest.approx(
        training_flops_per_token(config, seq_len), rel=0.008
    )
    assert num_parameters(config) == count_parameters(model)
