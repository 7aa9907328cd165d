"""Autoregressive sampling from a `GPT` with its KV cache: one prompt, or a batch of prompts of different lengths.

One implementation serves both: a single prompt is a batch of one.

**Batching.** The prompts are right-padded to the longest and prefilled in one forward pass at the shared
positions 0..L-1. Row b's first next-token logits are read at its own last prompt position, and from there
every row decodes one token per step at its own position (`input_pos` [B, 1]): the new token of a row of
length n goes to position n, n + 1, ... A query attends only to cache positions at or below its own, and
the padding a short row's prefill wrote at positions n..L-1 is overwritten by the row's own tokens, each
one step before it becomes visible. So the causal mask is the only mask needed, no position is shifted,
and each row sees exactly the keys and values it would see alone.

**What "the same as alone" means.** With greedy decoding (temperature 0) row b gives the tokens of
`generate(model, prompts[b])`. When sampling, pass one `torch.Generator` per prompt: row b draws only from
its own generator, once per new token, so it gives the tokens `generate(model, prompts[b], generator=g)`
gives with `g` in the same state. Both hold up to floating-point rounding: a batched matmul may round
differently from a single one (about 1e-6 in float32), which changes a token only when two tokens tie that
closely (greedy) or a draw falls that close to a probability boundary (sampling). With one shared generator
(or none: the global RNG) the active rows draw from it in row order, so the output is reproducible for the
same batch but a row depends on the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from lit_pretrain.model import GPT

Generators = torch.Generator | Sequence[torch.Generator] | None


def check_sampling_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError for a negative temperature, a non-positive top_k or a top_p outside (0, 1]."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def next_token_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The float32 distribution [..., vocab] sampling draws from, for `logits` [..., vocab].

    softmax(logits / temperature), restricted to the `top_k` likeliest tokens and then to the nucleus: the
    smallest set of the likeliest tokens whose probability reaches `top_p` (never empty), renormalised.
    Temperature 0 gives all the mass to the argmax.
    """
    check_sampling_options(temperature, top_k, top_p)
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.size(-1)).float()
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth_largest = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1:
        # Stable sort: among tied logits the lower id is kept first, whatever the backend.
        sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)
        sorted_probs = sorted_logits.softmax(dim=-1)
        # A token stays if the likelier tokens before it have not reached top_p yet; the first always does.
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        drop_sorted = mass_before >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.softmax(dim=-1)


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: Generators = None,
) -> torch.Tensor:
    """Pick a token id from `logits` [..., vocab]: argmax if temperature is 0, else sample; returns [...].

    `generator` is one generator for every row, or one per row of 2-D `logits` [B, vocab], each row then
    drawing from its own only (see the module docstring).
    """
    if temperature == 0:
        check_sampling_options(temperature, top_k, top_p)
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    # multinomial only takes 1-D or 2-D input, so fold any leading dimensions into one.
    flat = probs.reshape(-1, probs.size(-1))
    if generator is None or isinstance(generator, torch.Generator):
        samples = torch.multinomial(flat, num_samples=1, generator=generator)
    else:
        generators = list(generator)
        if logits.ndim != 2 or len(generators) != flat.size(0):
            raise ValueError(
                f"one generator per row needs logits [rows, vocab] with {len(generators)} rows, "
                f"got {tuple(logits.shape)}"
            )
        samples = torch.cat(
            [torch.multinomial(row[None], 1, generator=g) for row, g in zip(flat, generators, strict=True)]
        )
    return samples.view(probs.shape[:-1])


def stream_batch(
    model: GPT,
    prompts: Sequence[torch.Tensor],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: Generators = None,
) -> Iterator[list[int | None]]:
    """Continue every 1-D prompt at once; yields each step's new token of every row, None where it finished.

    A row finishes after emitting `eos_id` (which it yields), after `max_new_tokens`, or when its context
    reaches the model's `block_size`; the iterator ends when every row has finished. The model never slides
    its window: a prompt of `block_size` tokens or more is truncated from the left to its last
    `block_size - 1` tokens, so that at least one token can be generated. `generator` is one generator for
    all rows or one per prompt, on the model's device. Any KV cache already set up on the model is replaced,
    and cleared when the iterator is exhausted or closed.
    """
    if len(prompts) == 0:
        raise ValueError("no prompts given")
    for prompt in prompts:
        if prompt.ndim != 1 or prompt.numel() == 0:
            raise ValueError(
                f"each prompt must be a non-empty 1-D tensor of token ids, got {tuple(prompt.shape)}"
            )
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    check_sampling_options(temperature, top_k, top_p)
    if generator is not None and not isinstance(generator, torch.Generator):
        generator = list(generator)
        if len(generator) != len(prompts):
            raise ValueError(
                f"got {len(generator)} generators for {len(prompts)} prompts: give one per prompt"
            )
    block_size = model.config.block_size
    contexts = [prompt[-(block_size - 1) :] if prompt.numel() >= block_size else prompt for prompt in prompts]
    budgets = [min(max_new_tokens, block_size - context.numel()) for context in contexts]
    return _decode(model, contexts, budgets, temperature, top_k, top_p, eos_id, generator)


@torch.inference_mode()
def _decode(
    model: GPT,
    contexts: list[torch.Tensor],
    budgets: list[int],
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eos_id: int | None,
    generator: torch.Generator | list[torch.Generator] | None,
) -> Iterator[list[int | None]]:
    if max(budgets) == 0:
        return
    device = model.wte.weight.device
    batch = len(contexts)
    lengths = torch.tensor([context.numel() for context in contexts], device=device)
    longest = max(context.numel() for context in contexts)
    # A row's last new token is never fed back, so it needs its length plus its budget, less one, slots; the
    # prefill writes `longest` slots in every row.
    cache_len = max(
        longest, *(context.numel() + budget - 1 for context, budget in zip(contexts, budgets, strict=True))
    )
    padded = torch.zeros(batch, longest, dtype=torch.long, device=device)
    for row, context in enumerate(contexts):
        padded[row, : context.numel()] = context.to(device)
    rows = torch.arange(batch, device=device)
    model.setup_kv_cache(batch_size=batch, max_seq_len=cache_len)
    try:
        logits = model(padded, torch.arange(longest, device=device))[rows, lengths - 1]
        positions = lengths.clone()  # where each row's next token goes
        active = list(range(batch))
        generated = [0] * batch
        for _ in range(max(budgets)):
            # Only the active rows sample, so that a finished row consumes no random numbers.
            row_generators = generator if not isinstance(generator, list) else [generator[r] for r in active]
            active_index = torch.tensor(active, device=device)
            sampled = sample_next_token(logits[active_index], temperature, top_k, top_p, row_generators)
            step: list[int | None] = [None] * batch
            for row, token in zip(active, sampled.tolist(), strict=True):
                step[row] = token
                generated[row] += 1
            yield step
            active = [r for r in active if generated[r] < budgets[r] and step[r] != eos_id]
            if not active:
                return
            tokens = torch.zeros(batch, dtype=torch.long, device=device)
            tokens[active_index] = sampled
            # Finished rows keep running (dropping them would mean reshaping every cache): they write junk
            # into their own cache row only, at a position clamped into it, and their logits are ignored.
            input_pos = positions.clamp(max=cache_len - 1)[:, None]
            logits = model(tokens[:, None], input_pos)[:, -1]
            positions += 1
    finally:
        model.clear_kv_cache()


def generate_batch(
    model: GPT,
    prompts: Sequence[torch.Tensor],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: Generators = None,
) -> list[torch.Tensor]:
    """Continue every 1-D prompt in one batch; returns each prompt (whole) followed by its new tokens.

    Stopping, truncation and generators as in `stream_batch`; row b equals its single-prompt run as the
    module docstring defines it.
    """
    new_tokens: list[list[int]] = [[] for _ in prompts]
    steps = stream_batch(
        model,
        prompts,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=eos_id,
        generator=generator,
    )
    for step in steps:
        for row, token in enumerate(step):
            if token is not None:
                new_tokens[row].append(token)
    return [
        torch.cat([prompt, torch.tensor(tokens, dtype=torch.long, device=prompt.device)])
        for prompt, tokens in zip(prompts, new_tokens, strict=True)
    ]


def generate(
    model: GPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Continue the 1-D token tensor `prompt` (a batch of one); returns `prompt` followed by the new tokens."""
    if prompt.ndim != 1 or prompt.numel() == 0:
        raise ValueError(f"prompt must be a non-empty 1-D tensor of token ids, got {tuple(prompt.shape)}")
    outputs = generate_batch(
        model,
        [prompt],
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=eos_id,
        generator=generator,
    )
    return outputs[0]
