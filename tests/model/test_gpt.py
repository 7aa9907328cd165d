import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lit_pretrain.model import GPT, ModelConfig, available_models, num_parameters, training_flops_per_token

DEBUG_MODELS = ["gpt2-debug", "llama-debug"]


def build(name: str, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig.from_name(name, **overrides))


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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


def test_preset_parameter_counts():
    assert abs(num_parameters(ModelConfig.from_name("gpt2-124m")) - 124e6) < 1e6
    assert num_parameters(ModelConfig.from_name("gpt2-124m")) == 124_439_808  # the published GPT-2 small
    assert abs(num_parameters(ModelConfig.from_name("tinyllama-1.1b")) - 1.1e9) < 0.05e9


@pytest.mark.parametrize("name", available_models())
def test_num_parameters_matches_module(name):
    config = ModelConfig.from_name(name)
    # The meta device allocates nothing, so even the 7B model is cheap to count.
    with torch.device("meta"):
        model = GPT(config)
    assert num_parameters(config) == count_parameters(model)
    embedding_tables = config.vocab_size * config.n_embd * (not config.tie_embeddings)
    if config.position == "learned":
        embedding_tables += config.block_size * config.n_embd
    assert num_parameters(config, include_embedding=False) == count_parameters(model) - embedding_tables


@pytest.mark.parametrize("name", DEBUG_MODELS + ["tiny"])
def test_num_parameters_matches_real_module(name):
    assert num_parameters(ModelConfig.from_name(name)) == count_parameters(build(name))


@pytest.mark.parametrize("name", DEBUG_MODELS)
def test_training_flops_match_flop_counter(name):
    config = ModelConfig.from_name(name, n_layer=2, n_embd=128, block_size=64, vocab_size=512)
    model = GPT(config)
    batch, seq_len = 2, 64
    tokens = torch.randint(0, config.vocab_size, (batch, seq_len + 1))
    counter = FlopCounterMode(display=False)
    # FlopCounterMode has no formula for the fused CPU attention kernel and would count its FLOPs as zero; the
    # math backend runs attention as plain batched matmuls, which it does count.
    with counter, sdpa_kernel(SDPBackend.MATH):
        logits = model(tokens[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    counted_per_token = counter.get_total_flops() / (batch * seq_len)
    expected = training_flops_per_token(config, seq_len)
    assert counted_per_token == pytest.approx(expected, rel=0.05)
    # The attention term is exact: the batched matmuls are the score and value products.
    attention_flops = counter.get_flop_counts()["Global"][torch.ops.aten.bmm] / (batch * seq_len)
    assert attention_flops == 12 * config.n_layer * config.n_head * config.head_size * seq_len


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
    with pytest.raises(RuntimeError, match="setup_kv_cache"):
        model(idx[:, :1], torch.tensor([0]))


def test_kv_cache_not_in_state_dict():
    model = build("llama-debug")
    keys = set(model.state_dict())
    model.setup_kv_cache(batch_size=1)
    assert set(model.state_dict()) == keys
    assert not any("rope" in key for key in keys)


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
        (dict(norm="batchnorm"), "norm"),
        (dict(position="alibi"), "position"),
        (dict(mlp="relu"), "mlp"),
        (dict(n_layer=0), "n_layer"),
        (dict(intermediate_size=-1), "intermediate_size"),
    ],
)
def test_bad_config_raises(overrides, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig.from_name("llama-debug", **overrides)


def test_from_name():
    assert ModelConfig.from_name("tiny").name == "tiny"
    assert ModelConfig.from_name("tiny", n_layer=1).n_layer == 1
    assert ModelConfig().intermediate_size == ModelConfig.from_name("tiny").intermediate_size
    assert ModelConfig(n_head=8).n_kv_head == 8
    with pytest.raises(ValueError, match="gpt2-124m"):
        ModelConfig.from_name("gpt5")
