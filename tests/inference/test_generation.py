import pytest
import torch

from lit_pretrain.inference.generation import generate, sample_next_token
from lit_pretrain.model import GPT, ModelConfig


@pytest.fixture(params=["gpt2-debug", "llama-debug"])
def model(request) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig.from_name(request.param)).eval()


def test_greedy_matches_step_by_step_argmax(model):
    prompt = torch.tensor([3, 1, 4, 1, 5])
    out = generate(model, prompt, max_new_tokens=12, temperature=0)
    assert torch.equal(out, generate(model, prompt, max_new_tokens=12, temperature=0))
    expected = prompt
    with torch.no_grad():
        for _ in range(12):
            next_token = model(expected[None])[0, -1].argmax()
            expected = torch.cat([expected, next_token[None]])
    assert torch.equal(out, expected)
    assert model.blocks[0].attn.kv_cache is None  # cleared afterwards


def test_top_k_1_is_greedy(model):
    prompt = torch.tensor([7, 8, 9])
    greedy = generate(model, prompt, max_new_tokens=10, temperature=0)
    assert torch.equal(generate(model, prompt, max_new_tokens=10, temperature=0.8, top_k=1), greedy)


def test_seeded_sampling_is_reproducible(model):
    prompt = torch.tensor([1, 2])
    samples = [
        generate(model, prompt, 20, temperature=1.5, top_k=50, generator=torch.Generator().manual_seed(seed))
        for seed in (0, 0, 1)
    ]
    assert torch.equal(samples[0], samples[1])
    assert not torch.equal(samples[0], samples[2])


def test_eos_stops_generation(model):
    prompt = torch.tensor([5, 6])
    greedy = generate(model, prompt, max_new_tokens=10, temperature=0)
    eos_id = greedy[4].item()  # the third generated token
    out = generate(model, prompt, max_new_tokens=10, temperature=0, eos_id=eos_id)
    first_eos = (greedy[2:] == eos_id).nonzero()[0].item() + 2
    assert torch.equal(out, greedy[: first_eos + 1])
    assert out[-1].item() == eos_id


def test_output_length_bounds(model):
    block_size = model.config.block_size
    prompt = torch.arange(10)
    assert torch.equal(generate(model, prompt, 0), prompt)
    assert len(generate(model, prompt, 5)) == 15
    # The model's context is block_size: generation stops when it is full.
    assert len(generate(model, prompt, 10 * block_size)) == block_size
    # A prompt longer than the context is truncated from the left for the model but returned whole.
    long_prompt = torch.randint(0, model.config.vocab_size, (block_size + 5,))
    out = generate(model, long_prompt, 3, temperature=0)
    assert len(out) == block_size + 6
    assert torch.equal(out[: block_size + 5], long_prompt)
    expected_next = model(long_prompt[None, -(block_size - 1) :])[0, -1].argmax()
    assert out[-1] == expected_next
    with pytest.raises(ValueError, match="1-D"):
        generate(model, prompt[None], 3)


def test_sample_next_token():
    logits = torch.tensor([[0.0, 5.0, 1.0], [2.0, 0.0, 1.0]])
    assert sample_next_token(logits, temperature=0).tolist() == [1, 0]
    generator = torch.Generator().manual_seed(0)
    samples = sample_next_token(logits.expand(100, 2, 3), temperature=1.0, top_k=2, generator=generator)
    assert samples.shape == (100, 2)
    assert (samples[:, 0] != 0).all() and (samples[:, 1] != 1).all()  # the smallest logit is never kept
    assert sample_next_token(logits[0], temperature=1.0).shape == ()
