import pytest
import torch

from lit_pretrain.inference.generation import (
    generate,
    generate_batch,
    next_token_probs,
    sample_next_token,
    stream_batch,
)
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


# Lengths chosen so that rows finish prefill at different places and one row is a single token.
RAGGED_PROMPTS = [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], [7], [2, 7, 1, 8], [6, 6, 6, 6, 6, 6, 6]]


def ragged_prompts() -> list[torch.Tensor]:
    return [torch.tensor(prompt) for prompt in RAGGED_PROMPTS]


def test_batched_greedy_equals_each_prompt_alone(model):
    prompts = ragged_prompts()
    batched = generate_batch(model, prompts, max_new_tokens=15, temperature=0)
    for prompt, row in zip(prompts, batched, strict=True):
        assert torch.equal(row, generate(model, prompt, max_new_tokens=15, temperature=0))
    assert model.blocks[0].attn.kv_cache is None


def test_batched_sampling_with_one_generator_per_row_equals_each_prompt_alone(model):
    # The definition of "equal" for sampling: row b draws only from generator b, once per new token, so it
    # gives what the prompt alone gives with a generator in the same state.
    prompts = ragged_prompts()
    options = dict(temperature=1.3, top_k=40, top_p=0.95)
    generators = [torch.Generator().manual_seed(100 + row) for row in range(len(prompts))]
    batched = generate_batch(model, prompts, 20, **options, generator=generators)
    for row, prompt in enumerate(prompts):
        alone = generate(model, prompt, 20, generator=torch.Generator().manual_seed(100 + row), **options)
        assert torch.equal(batched[row], alone)
    # And the samples really are random: another seed gives other tokens.
    others = [torch.Generator().manual_seed(7 + row) for row in range(len(prompts))]
    assert any(
        not torch.equal(a, b)
        for a, b in zip(batched, generate_batch(model, prompts, 20, **options, generator=others), strict=True)
    )


def test_one_shared_generator_is_reproducible_for_the_same_batch(model):
    prompts = ragged_prompts()
    runs = [
        generate_batch(model, prompts, 12, temperature=1.0, generator=torch.Generator().manual_seed(5))
        for _ in range(2)
    ]
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_eos_stops_each_row_on_its_own(model):
    prompts = ragged_prompts()
    alone = [generate(model, prompt, 12, temperature=0) for prompt in prompts]
    # The EOS is the third new token of row 0, so row 0 stops early; rows that never emit it run to the end.
    eos_id = alone[0][len(RAGGED_PROMPTS[0]) + 2].item()
    expected = [generate(model, prompt, 12, temperature=0, eos_id=eos_id) for prompt in prompts]
    assert len(expected[0]) <= len(RAGGED_PROMPTS[0]) + 3 and expected[0][-1] == eos_id
    assert any(len(row) == len(prompt) + 12 for row, prompt in zip(expected, RAGGED_PROMPTS, strict=True))
    batched = generate_batch(model, prompts, 12, temperature=0, eos_id=eos_id)
    assert all(torch.equal(a, b) for a, b in zip(batched, expected, strict=True))

    steps = list(stream_batch(model, prompts, 12, temperature=0, eos_id=eos_id))
    new_counts = [len(row) - len(prompt) for row, prompt in zip(expected, RAGGED_PROMPTS, strict=True)]
    assert len(steps) == max(new_counts)
    for row, count in enumerate(new_counts):
        column = [step[row] for step in steps]
        assert all(token is not None for token in column[:count])
        assert all(token is None for token in column[count:]), "a finished row stops growing"


def test_the_batch_stops_when_every_row_emitted_eos(model):
    prompt = torch.tensor([5, 6])
    first = generate(model, prompt, 1, temperature=0)[-1].item()
    # Every row is the same prompt, so every row emits `first` at once and the batch stops after one step.
    steps = list(stream_batch(model, [prompt, prompt, prompt], 50, temperature=0, eos_id=first))
    assert steps == [[first, first, first]]


def test_a_row_that_fills_the_context_stops_while_the_others_go_on(model):
    block_size = model.config.block_size
    long_prompt = torch.randint(
        0, model.config.vocab_size, (block_size - 3,), generator=torch.Generator().manual_seed(0)
    )
    prompts = [long_prompt, torch.tensor([1, 2, 3])]
    batched = generate_batch(model, prompts, 10, temperature=0)
    assert len(batched[0]) == block_size and len(batched[1]) == 13
    for prompt, row in zip(prompts, batched, strict=True):
        assert torch.equal(row, generate(model, prompt, 10, temperature=0))


def test_closing_the_stream_early_clears_the_cache(model):
    steps = stream_batch(model, ragged_prompts(), 10, temperature=0)
    assert len(next(steps)) == len(RAGGED_PROMPTS)
    assert model.blocks[0].attn.kv_cache is not None
    steps.close()
    assert model.blocks[0].attn.kv_cache is None


def test_batch_arguments_are_checked(model):
    prompts = ragged_prompts()
    assert all(torch.equal(a, b) for a, b in zip(generate_batch(model, prompts, 0), prompts, strict=True))
    with pytest.raises(ValueError, match="got 1 generators for 4 prompts"):
        generate_batch(model, prompts, 3, generator=[torch.Generator()])
    with pytest.raises(ValueError, match="no prompts"):
        generate_batch(model, [], 3)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        generate_batch(model, [torch.tensor([1]), torch.tensor([], dtype=torch.long)], 3)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        generate_batch(model, prompts, 3, top_p=0.0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        sample_next_token(torch.zeros(3), top_p=1.5)


def test_top_p_keeps_the_smallest_set_reaching_p():
    # Probabilities 0.1, 0.5, 0.15, 0.25 at ids 0..3: sorted 0.5 (id 1), 0.25 (id 3), 0.15 (id 2), 0.1 (id 0).
    probs = torch.tensor([0.1, 0.5, 0.15, 0.25])
    logits = probs.log()

    def nucleus(top_p: float, **options) -> list[float]:
        return next_token_probs(logits, top_p=top_p, **options).tolist()

    assert nucleus(0.7) == pytest.approx([0, 2 / 3, 0, 1 / 3])  # 0.5 < 0.7 <= 0.75
    assert nucleus(0.8) == pytest.approx([0, 0.5 / 0.9, 0.15 / 0.9, 0.25 / 0.9])  # 0.75 < 0.8 <= 0.9
    assert nucleus(0.95) == pytest.approx(probs.tolist())  # every token is needed to reach 0.95
    assert nucleus(1.0) == pytest.approx(probs.tolist())
    assert nucleus(0.3) == pytest.approx([0, 1, 0, 0])  # the likeliest token alone already reaches it
    assert nucleus(1e-6) == pytest.approx([0, 1, 0, 0])  # never empty
    # Temperature first: at temperature 2 the probabilities are proportional to sqrt(p).
    hot = probs.sqrt() / probs.sqrt().sum()  # 0.197, 0.441, 0.242, 0.309 -> sorted cumsum .441, .683, ...
    assert hot[1] < 0.6 < hot[1] + hot[3]
    expected = torch.tensor([0.0, hot[1], 0.0, hot[3]])
    assert nucleus(0.6, temperature=2.0) == pytest.approx((expected / expected.sum()).tolist())
    # top_k before top_p: top_k=2 leaves 2/3 and 1/3, of which 2/3 alone reaches 0.6.
    assert nucleus(0.6, top_k=2) == pytest.approx([0, 1, 0, 0])
    assert nucleus(0.7, top_k=2) == pytest.approx([0, 2 / 3, 0, 1 / 3])
    # Row by row, in any leading shape.
    batch = torch.stack([logits, logits.flip(0)])[None]
    assert next_token_probs(batch, top_p=0.7)[0, 1].tolist() == pytest.approx([1 / 3, 0, 2 / 3, 0])


def test_top_p_sampling_draws_only_from_the_nucleus():
    logits = torch.tensor([0.1, 0.5, 0.15, 0.25]).log().expand(2000, 4)
    samples = sample_next_token(logits, top_p=0.7, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(samples, minlength=4).tolist()
    assert counts[0] == counts[2] == 0
    assert counts[1] / 2000 == pytest.approx(2 / 3, abs=0.04)
