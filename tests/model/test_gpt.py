"""The model: its logits against a from-the-formulas reference, causality, the KV cache, init and config.

(Parameter and FLOP counts: test_flops.py; rotary embeddings: test_rope.py.)
"""

import pytest
import torch

from lit_pretrain.model import GPT, ModelConfig
from tests.helpers.reference import reference_forward

DEBUG_MODELS = ["gpt2-debug", "llama-debug"]


def build(name: str, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig.from_name(name, **overrides))


REFERENCE_CASES = [
    # Larger weights than the default init and a large norm eps make every part of the computation matter.
    ("gpt2-debug", dict(init_std=0.2, norm_eps=1e-2)),
    ("gpt2-debug", dict(init_std=0.2, bias=False, tie_embeddings=False)),
    ("llama-debug", dict(init_std=0.2, norm_eps=1e-2)),  # grouped-query: 4 query heads, 2 KV heads
    ("llama-debug", dict(init_std=0.2, n_kv_head=1, rope_base=100.0, tie_embeddings=True)),
    ("llama-debug", dict(init_std=0.2, n_kv_head=4, bias=True, norm="layernorm", mlp="gelu")),
]


@pytest.mark.parametrize(("name", "overrides"), REFERENCE_CASES)
def test_logits_match_the_reference_implementation(name, overrides):
    model = build(name, **overrides)
    idx = torch.randint(0, model.config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(idx)
    expected = reference_forward(model, idx)
    assert expected.abs().max() > 1.0, "the reference case is too small to tell mistakes from rounding"
    torch.testing.assert_close(logits.double(), expected, rtol=1e-4, atol=1e-4)


def test_dropout_acts_in_training_only():
    model = build("llama-debug", init_std=0.2, dropout=0.5)
    idx = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.train()
        first, second = model(idx), model(idx)
        model.eval()
        evaluated = model(idx)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(evaluated.double(), reference_forward(model, idx), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", DEBUG_MODELS)
def test_causality(name):
    model = build(name)
    config = model.config
    idx = torch.randint(0, config.vocab_size, (2, config.block_size))
    logits = model(idx)
    for t in (0, 17, config.block_size - 2):
        changed = idx.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % config.vocab_size
        changed_logits = model(changed)
        torch.testing.assert_close(changed_logits[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-6)
        # ...but the future did change, so the test above is not vacuous.
        assert not torch.allclose(changed_logits[:, t + 1 :], logits[:, t + 1 :])
    # And an early token influences later positions: the model is not a per-position constant.
    changed = idx.clone()
    changed[:, 0] = (changed[:, 0] + 1) % config.vocab_size
    assert not torch.allclose(model(changed)[:, -1], logits[:, -1])


def test_output_shape_and_too_long_sequence():
    model = build("llama-debug")
    config = model.config
    assert model(torch.zeros(3, 5, dtype=torch.long)).shape == (3, 5, config.vocab_size)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, config.block_size + 1, dtype=torch.long))


@pytest.mark.parametrize("name", DEBUG_MODELS)
def test_kv_cache_decoding_matches_full_forward(name):
    model = build(name)
    config = model.config
    idx = torch.randint(0, config.vocab_size, (2, 20))
    expected = model(idx)
    model.setup_kv_cache(batch_size=2)
    prompt_len = 7
    # Prefill the prompt in one call, then feed one token at a time.
    steps = [model(idx[:, :prompt_len], torch.arange(prompt_len))]
    for pos in range(prompt_len, idx.size(1)):
        steps.append(model(idx[:, pos : pos + 1], torch.tensor([pos])))
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, rtol=0, atol=1e-5)
    model.clear_kv_cache()
    with pytest.raises(
        RuntimeError, match=r"^input_pos given but no KV cache: call model.setup_kv_cache\(\) first$"
    ):
        model(idx[:, :1], torch.tensor([0]))


def test_kv_cache_not_in_state_dict():
    model = build("llama-debug")
    keys = set(model.state_dict())
    model.setup_kv_cache(batch_size=1)
    assert set(model.state_dict()) == keys
    assert not any("rope" in key for key in keys)


def test_kv_cache_larger_than_the_batch_and_in_another_dtype():
    # A cache set up for 3 sequences and kept in bfloat16 serves a batch of 1 in float32.
    model = build("llama-debug", init_std=0.2)
    idx = torch.randint(0, model.config.vocab_size, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(idx)
        model.setup_kv_cache(batch_size=3, max_seq_len=16, dtype=torch.bfloat16)
        cache = model.blocks[0].attn.kv_cache
        assert cache.k.shape == cache.v.shape == (3, 2, 16, 16)  # [batch, kv heads, positions, head size]
        assert cache.k.dtype == cache.v.dtype == torch.bfloat16
        steps = [model(idx[:, :6], torch.arange(6))]
        steps += [model(idx[:, pos : pos + 1], torch.tensor([pos])) for pos in range(6, 10)]
    logits = torch.cat(steps, dim=1)
    assert logits.dtype == torch.float32
    # Keys and values rounded to bfloat16 (relative 2**-8) move the logits by about that much.
    torch.testing.assert_close(logits, expected, rtol=0.05, atol=0.05)


def test_kv_cache_defaults_to_the_weights_device_and_dtype():
    model = build("llama-debug").double()
    model.setup_kv_cache(batch_size=2)
    cache = model.blocks[1].attn.kv_cache
    assert cache.k.dtype == cache.v.dtype == torch.float64
    assert cache.k.shape == (2, 2, model.config.block_size, 16)
    with torch.device("meta"):
        meta_model = GPT(ModelConfig.from_name("llama-debug"))
    meta_model.setup_kv_cache(batch_size=1)
    assert meta_model.blocks[0].attn.kv_cache.k.is_meta and meta_model.blocks[0].attn.kv_cache.v.is_meta
    model.setup_kv_cache(batch_size=1, device="meta", dtype=torch.float16)
    assert model.blocks[0].attn.kv_cache.v.is_meta and model.blocks[0].attn.kv_cache.v.dtype == torch.float16
    with pytest.raises(ValueError, match="max_seq_len 65 exceeds block_size 64"):
        model.setup_kv_cache(batch_size=1, max_seq_len=65)


def test_weight_tying():
    tied = build("gpt2-debug")
    assert tied.config.tie_embeddings
    assert tied.lm_head.weight is tied.wte.weight
    untied = build("gpt2-debug", tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.wte.weight.data_ptr()
    # A gradient step through the head moves the embedding only when tied.
    for model in (tied, untied):
        before = model.wte.weight.detach().clone()
        model(torch.tensor([[1, 2, 3]]))[:, -1, 5].sum().backward()
        with torch.no_grad():
            model.lm_head.weight -= model.lm_head.weight.grad
        embedding_moved = not torch.equal(model.wte.weight[5], before[5])
        assert embedding_moved == model.config.tie_embeddings


@pytest.mark.parametrize("name", DEBUG_MODELS)
def test_init_is_deterministic(name):
    first, second, other = (build(name, seed=seed).state_dict() for seed in (1, 1, 2))
    for (key, a), b, c in zip(first.items(), second.values(), other.values(), strict=True):
        assert torch.equal(a, b), key
        if key.endswith("weight") and "norm" not in key:
            assert not torch.equal(a, c), key


def test_init_statistics():
    model = build("gpt2-debug", n_layer=8, n_embd=256)
    std = model.config.init_std
    assert model.wte.weight.std().item() == pytest.approx(std, rel=0.05)
    assert model.blocks[0].attn.q.weight.std().item() == pytest.approx(std, rel=0.05)
    assert model.blocks[0].mlp.proj.weight.std().item() == pytest.approx(std / 4, rel=0.05)  # 1/sqrt(2*8)
    assert torch.all(model.blocks[0].attn.k.bias == 0)
    assert torch.all(model.blocks[0].norm_1.weight == 1)


@pytest.mark.parametrize("name", DEBUG_MODELS)
def test_meta_build_then_reset_matches_regular_build(name):
    config = ModelConfig.from_name(name)
    torch.manual_seed(3)
    expected = GPT(config)
    with torch.device("meta"):
        model = GPT(config)
    assert model.wte.weight.is_meta
    assert config.tie_embeddings == (model.lm_head.weight is model.wte.weight)  # tied from the start
    model.to_empty(device="cpu")
    torch.manual_seed(3)
    model.reset_parameters()
    assert model.config.tie_embeddings == (model.lm_head.weight is model.wte.weight)
    for (key, a), b in zip(model.state_dict().items(), expected.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    idx = torch.randint(0, config.vocab_size, (1, 16))
    torch.testing.assert_close(model(idx), expected(idx), rtol=0, atol=0)  # RoPE buffers recomputed too


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(n_embd=65), "n_embd"),
        (dict(n_kv_head=3), "n_kv_head"),
        (dict(norm="batchnorm"), r"^norm must be one of \('layernorm', 'rmsnorm'\), got 'batchnorm'$"),
        (dict(position="alibi"), r"^position must be one of \('learned', 'rope'\), got 'alibi'$"),
        (dict(mlp="relu"), r"^mlp must be one of \('gelu', 'swiglu', 'relu2'\), got 'relu'$"),
        (dict(n_layer=0), "n_layer"),
        (dict(intermediate_size=-1), "intermediate_size"),
        (dict(intermediate_size=0), r"^intermediate_size must be positive, got 0$"),
        (dict(n_kv_head=0), r"n_kv_head \(0\) must divide n_head \(4\)"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (dict(n_embd=12, n_head=4), r"n_embd / n_head must be even for rope positions, got 3"),
    ],
)
def test_bad_config_raises(overrides, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig.from_name("llama-debug", **overrides)


def test_smallest_valid_sizes_are_accepted():
    assert ModelConfig.from_name("gpt2-debug", n_embd=12, n_head=4).head_size == 3  # odd: fine without RoPE
    assert ModelConfig.from_name("llama-debug", intermediate_size=1).intermediate_size == 1


def test_rope_tables_stay_float32_whatever_the_default_dtype():
    # Built under a bfloat16 default (a common way to get a bf16 model), the weights are bf16 but the
    # rotary tables keep float32: in bf16 the angles of late positions lose too much precision.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = GPT(ModelConfig.from_name("llama-debug"))
    finally:
        torch.set_default_dtype(default)
    assert model.wte.weight.dtype == torch.bfloat16
    assert model.rope_cos.dtype == model.rope_sin.dtype == torch.float32


def test_decoding_without_a_cache_is_a_clear_error():
    model = build("llama-debug")
    with pytest.raises(RuntimeError, match="call model.setup_kv_cache"):
        model(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))


def test_from_name():
    assert ModelConfig.from_name("tiny").name == "tiny"
    assert ModelConfig.from_name("tiny", n_layer=1).n_layer == 1
    assert ModelConfig().intermediate_size == ModelConfig.from_name("tiny").intermediate_size
    assert ModelConfig(n_head=8).n_kv_head == 8
    known = "gpt2-124m, gpt2-debug, llama-160m, llama-debug, llama2-7b, tiny, tinyllama-1.1b"
    with pytest.raises(ValueError, match=f"Unknown model name 'gpt5'; known names: {known}$"):
        ModelConfig.from_name("gpt5")


def test_init_parameter_draws_from_the_given_generator():
    # Sharded initialisation draws each full parameter from its own generator, not the global RNG.
    model = build("llama-debug")
    tensors = [torch.empty(64, 64) for _ in range(2)]
    torch.manual_seed(0)
    for tensor in tensors:
        model.init_parameter_("blocks.0.attn.q.weight", tensor, generator=torch.Generator().manual_seed(5))
    assert torch.equal(tensors[0], tensors[1])
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(0)))
