"""The modded-nanogpt style switches: QK-norm, the ReLU² MLP, zero-initialised projections, logit soft-capping
and untied heads, each checked to do what it says. (Document masking: test_document_mask.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_pretrain.model import GPT, ModelConfig, num_parameters
from lit_pretrain.model.gpt import ReLU2MLP

ALL_SWITCHES = dict(qk_norm=True, mlp="relu2", zero_init_proj=True, logit_softcap=15.0)


def build(name: str = "llama-debug", seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig.from_name(name, **overrides))


def tokens(config: ModelConfig, batch: int = 2, seq_len: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(seed)
    )


def record_attention_inputs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Make every scaled_dot_product_attention call append its (q, k) to the returned list."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = F.scaled_dot_product_attention

    def recording(q, k, v, *args, **kwargs):
        seen.append((q.detach(), k.detach()))
        return original(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return seen


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(qk_norm=1), r"^qk_norm must be true or false, got 1$"),
        (dict(zero_init_proj="yes"), r"^zero_init_proj must be true or false, got 'yes'$"),
        (dict(document_mask=None), r"^document_mask must be true or false, got None$"),
        (dict(document_positions=0), r"^document_positions must be true or false, got 0$"),
        (dict(logit_softcap=0.0), r"^logit_softcap must be a positive number or None, got 0.0$"),
        (dict(logit_softcap=-30.0), r"^logit_softcap must be a positive number or None, got -30.0$"),
        (dict(logit_softcap=float("inf")), r"^logit_softcap must be a positive number or None, got inf$"),
        (dict(logit_softcap="30"), r"^logit_softcap must be a positive number or None, got '30'$"),
        (dict(mlp="relu"), r"^mlp must be one of \('gelu', 'swiglu', 'relu2'\), got 'relu'$"),
        (dict(document_mask=True), r"^document_mask needs eos_token_id"),
        (dict(eos_token_id=256), r"^eos_token_id must be a token id in \[0, vocab_size=256\), got 256$"),
        (dict(eos_token_id=-1), r"^eos_token_id must be a token id in \[0, vocab_size=256\), got -1$"),
        (dict(document_positions=True, eos_token_id=0), r"^document_positions needs document_mask"),
    ],
)
def test_bad_switches_are_refused_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_name("llama-debug", **overrides)


def test_defaults_are_the_plain_model():
    config = ModelConfig()
    assert (config.qk_norm, config.zero_init_proj, config.logit_softcap) == (False, False, None)
    assert (config.document_mask, config.eos_token_id, config.document_positions) == (False, None, False)
    assert ModelConfig(logit_softcap=30).logit_softcap == 30  # an int is a fine cap
    plain, switched_off = build(), build(qk_norm=False, zero_init_proj=False, logit_softcap=None)
    assert plain.state_dict().keys() == switched_off.state_dict().keys()
    idx = tokens(plain.config)
    torch.testing.assert_close(plain(idx), switched_off(idx), rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
def test_qk_norm_gives_attention_unit_rms_heads_times_the_weight(monkeypatch, norm):
    # Learned positions: no rotation after the norm, so q and k reach attention exactly as normalised.
    model = build(qk_norm=True, position="learned", norm=norm, bias=False, init_std=0.2, norm_eps=1e-8)
    attn = model.blocks[0].attn
    assert isinstance(attn.q_norm, torch.nn.RMSNorm if norm == "rmsnorm" else torch.nn.LayerNorm)
    assert attn.q_norm.weight.shape == attn.k_norm.weight.shape == (model.config.head_size,)
    assert torch.all(attn.q_norm.weight == 1) and torch.all(attn.k_norm.weight == 1)
    with torch.no_grad():
        attn.q_norm.weight.uniform_(0.5, 2.0)
        attn.k_norm.weight.uniform_(0.5, 2.0)
    seen = record_attention_inputs(monkeypatch)
    with torch.no_grad():
        model(tokens(model.config))
    q, k = seen[0]  # block 0; k before the grouped-query expansion is not visible here, its copies are
    for tensor, weight in ((q, attn.q_norm.weight), (k, attn.k_norm.weight)):
        unit = tensor / weight
        if norm == "layernorm":
            torch.testing.assert_close(unit.mean(-1), torch.zeros(unit.shape[:-1]), rtol=0, atol=1e-5)
        rms = unit.pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms, torch.ones_like(rms), rtol=0, atol=1e-5)


def test_qk_norm_comes_before_rope(monkeypatch):
    # RoPE rotates pairs of features, so it keeps each head's RMS: 1 with the initial unit weights.
    model = build(qk_norm=True, init_std=0.2, norm_eps=1e-8)
    seen = record_attention_inputs(monkeypatch)
    with torch.no_grad():
        model(tokens(model.config))
    for q, k in seen:
        for tensor in (q, k):
            rms = tensor.pow(2).mean(-1).sqrt()
            torch.testing.assert_close(rms, torch.ones_like(rms), rtol=0, atol=1e-5)
    # Without QK-norm the heads are far from unit RMS, so the check above is not vacuous.
    monkeypatch.undo()
    plain = build(init_std=0.2)
    seen = record_attention_inputs(monkeypatch)
    with torch.no_grad():
        plain(tokens(plain.config))
    assert (seen[0][0].pow(2).mean(-1).sqrt() - 1).abs().max() > 0.1


@pytest.mark.parametrize("name", ["gpt2-debug", "llama-debug"])
def test_all_switches_decode_through_the_kv_cache_like_the_full_forward(name):
    # Document masking too: decoding one document (no EOS in it) sees what the masked full forward sees.
    documents = dict(document_mask=True, eos_token_id=0, document_positions=True)
    model = build(name, init_std=0.1, **{**ALL_SWITCHES, "zero_init_proj": False}, **documents)
    idx = 1 + tokens(model.config, seq_len=20) % (model.config.vocab_size - 1)
    with torch.no_grad():
        expected = model(idx)
        model.setup_kv_cache(batch_size=2)
        steps = [model(idx[:, :7], torch.arange(7))]
        steps += [model(idx[:, pos : pos + 1], torch.tensor([pos])) for pos in range(7, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, rtol=0, atol=1e-5)


def test_relu2_mlp_is_the_formula():
    config = ModelConfig.from_name("llama-debug", mlp="relu2", bias=True)
    assert config.intermediate_size == 4 * config.n_embd
    assert ModelConfig.from_name("llama-debug", mlp="relu2", intermediate_size=96).intermediate_size == 96
    torch.manual_seed(0)
    model = GPT(config)
    mlp = model.blocks[0].mlp
    assert isinstance(mlp, ReLU2MLP)
    assert [name for name, _ in mlp.named_parameters()] == [
        "fc.weight",
        "fc.bias",
        "proj.weight",
        "proj.bias",
    ]
    with torch.no_grad():
        mlp.fc.bias.normal_()
        mlp.proj.bias.normal_()
    x = torch.randn(3, 5, config.n_embd, dtype=torch.float64)
    weights = {name: p.detach().double() for name, p in mlp.named_parameters()}
    hidden = x @ weights["fc.weight"].T + weights["fc.bias"]
    expected = torch.where(hidden > 0, hidden * hidden, 0.0) @ weights["proj.weight"].T + weights["proj.bias"]
    torch.testing.assert_close(mlp.double()(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gpt2-debug", "llama-debug"])
def test_zero_init_proj_starts_every_block_as_the_identity(name):
    model = build(name, zero_init_proj=True, init_std=0.2)
    for block in model.blocks:
        assert torch.all(block.attn.proj.weight == 0) and torch.all(block.mlp.proj.weight == 0)
        assert block.attn.q.weight.std() > 0.1  # the other weights are drawn as usual
    idx = tokens(model.config)
    with torch.no_grad():
        x = model.wte(idx)
        if model.config.position == "learned":
            x = x + model.wpe(torch.arange(idx.size(1)))
        expected = model.lm_head(model.norm_f(x))
    torch.testing.assert_close(model(idx), expected, rtol=0, atol=1e-6)
    # One step moves the projections off zero: training is not stuck at the identity.
    model(idx).logsumexp(-1).mean().backward()
    assert model.blocks[0].attn.proj.weight.grad.abs().max() > 0
    assert model.blocks[0].mlp.proj.weight.grad.abs().max() > 0


def test_zero_init_proj_is_the_same_through_init_parameter_():
    # Sharded initialisation draws each full parameter through init_parameter_ with its own generator.
    model = build(zero_init_proj=True)
    tensor = torch.full((64, 64), 7.0)
    model.init_parameter_("blocks.1.attn.proj.weight", tensor, torch.Generator().manual_seed(0))
    assert torch.all(tensor == 0)


def test_logit_softcap_is_cap_times_tanh_of_the_raw_logits():
    cap = 2.0
    raw_model, capped_model = build(init_std=0.5), build(init_std=0.5, logit_softcap=cap)
    idx = tokens(raw_model.config)
    with torch.no_grad():
        raw, capped = raw_model(idx), capped_model(idx)
    assert raw.abs().max() > 3 * cap, "the raw logits must exceed the cap for the test to mean anything"
    assert capped.abs().max() < cap
    torch.testing.assert_close(capped, cap * torch.tanh(raw / cap), rtol=0, atol=1e-6)
    bf16 = build(init_std=0.5, logit_softcap=cap).to(torch.bfloat16)
    assert bf16(idx).dtype == torch.bfloat16


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("bias", [False, True])
def test_parameter_counts_of_the_switches(norm, bias):
    base = ModelConfig.from_name("llama-debug", norm=norm, bias=bias)
    switched = ModelConfig.from_name("llama-debug", norm=norm, bias=bias, **ALL_SWITCHES)
    with torch.device("meta"):
        base_count = sum(p.numel() for p in GPT(base).parameters())
        switched_count = sum(p.numel() for p in GPT(switched).parameters())
    assert num_parameters(switched) == switched_count
    # Per layer: two head_size norms (with a bias for a biased LayerNorm); SwiGLU's three 64 x 176 matrices
    # become ReLU²'s two 64 x 256 ones.
    per_feature = 2 if norm == "layernorm" and bias else 1
    qk = 2 * 16 * per_feature
    mlp_delta = (2 * 64 * 256 + bias * (256 + 64)) - (3 * 64 * 176 + bias * (2 * 176 + 64))
    assert switched_count - base_count == 2 * (qk + mlp_delta)


def test_untied_head_is_its_own_parameter_and_trains_apart_from_the_embedding():
    model = build(tie_embeddings=False)
    assert model.lm_head.weight is not model.wte.weight
    parameters = dict(model.named_parameters())
    assert "lm_head.weight" in parameters and "wte.weight" in parameters
    assert not torch.equal(model.lm_head.weight, model.wte.weight), "drawn separately"
    idx = tokens(model.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    head_before, table_before = model.lm_head.weight.detach().clone(), model.wte.weight.detach().clone()
    F.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten()).backward()
    optimizer.step()
    head_step, table_step = model.lm_head.weight - head_before, model.wte.weight - table_before
    # Embedding rows of tokens not in the batch get no gradient; every head row does (softmax over the vocab).
    unused = torch.ones(model.config.vocab_size, dtype=torch.bool)
    unused[idx[:, :-1].flatten()] = False
    assert unused.any()
    assert torch.all(head_step[unused].abs().amax(-1) > 0) and torch.all(table_step[unused] == 0)
    tied = build(tie_embeddings=True)
    assert [name for name, _ in tied.named_parameters()].count("lm_head.weight") == 0, "one tensor, one name"
