"""The scoring primitive (lit_pretrain/inference/scoring.py) against independent loops: one full forward
pass per sequence (or per position), in float64 from the formulas."""

from __future__ import annotations

import random

import pytest
import torch

from lit_pretrain.inference.scoring import (
    continuation_log_likelihoods,
    continuation_windows,
    log_likelihoods,
)
from tests.evaluation.conftest import tiny_model
from tests.helpers.reference import reference_forward


def _token_log_prob(model, inputs: list[int], target: int) -> float:
    logits = reference_forward(model, torch.tensor(inputs)[None])[0, -1]
    return torch.log_softmax(logits, dim=-1)[target].item()


def _sequences(seed: int, count: int, low: int, high: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(512) for _ in range(rng.randint(low, high))] for _ in range(count)]


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_rolling_scores_equal_a_loop_over_positions(batch_size: int):
    model = tiny_model()
    window = 8
    sequences = _sequences(0, 5, 2, 30)
    first_targets = [1, 2, 5, 1, 3]
    with torch.no_grad():
        scores = log_likelihoods(model, sequences, first_targets, window, batch_size)
    for index, (sequence, first) in enumerate(zip(sequences, first_targets, strict=True)):
        expected = 0.0
        for position in range(first, len(sequence)):
            start = (position - 1) // window * window  # the window of inputs that predicts it, read alone
            expected += _token_log_prob(model, sequence[start:position], sequence[position])
        assert scores.log_likelihood[index].item() == pytest.approx(expected, rel=1e-5, abs=1e-4)
        assert scores.num_tokens[index].item() == max(len(sequence) - first, 0)


def test_continuation_scores_equal_one_full_forward_per_pair():
    model = tiny_model()
    rng = random.Random(1)
    window = 16
    pairs = [
        ([rng.randrange(512) for _ in range(context)], [rng.randrange(512) for _ in range(continuation)])
        for context, continuation in [(3, 1), (10, 4), (40, 5), (2, 15), (5, 16), (30, 3), (1, 1)]
    ]
    with torch.no_grad():
        scores = continuation_log_likelihoods(model, pairs, window, batch_size=3)
    for index, (context, continuation) in enumerate(pairs):
        # lm-evaluation-harness: the last window + 1 tokens, the continuation's log-probs summed.
        tokens = (context + continuation)[-(window + 1) :]
        logits = reference_forward(model, torch.tensor(tokens[:-1])[None])[0]
        log_probs = torch.log_softmax(logits, dim=-1)
        first = len(tokens) - len(continuation)
        expected = sum(log_probs[p - 1, tokens[p]].item() for p in range(first, len(tokens)))
        assert scores.log_likelihood[index].item() == pytest.approx(expected, rel=1e-5, abs=1e-4)
        assert scores.num_tokens[index].item() == len(continuation)


def test_a_continuation_longer_than_the_context_window_rolls():
    model = tiny_model()
    context, continuation = [1, 2, 3], list(range(10, 30))
    with torch.no_grad():
        (rolled,) = continuation_log_likelihoods(model, [(context, continuation)], 8).log_likelihood.tolist()
        expected = log_likelihoods(model, [context + continuation], [3], 8).log_likelihood.item()
    assert rolled == pytest.approx(expected, rel=1e-6)
    windows = continuation_windows([(context, continuation)], 8)
    assert (windows.targets != -100).sum().item() == len(continuation)


class _AlwaysPredicts(torch.nn.Module):
    """Logits that make `token` the likeliest everywhere."""

    def __init__(self, token: int, vocab: int = 16) -> None:
        super().__init__()
        self.token, self.vocab = token, vocab

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*ids.shape, self.vocab)
        logits[..., self.token] = 5.0
        return logits


def test_greedy_says_whether_every_target_was_the_argmax():
    scores = continuation_log_likelihoods(
        _AlwaysPredicts(7), [([1], [7, 7, 7]), ([1], [7, 3]), ([1, 2], [7])], max_length=4
    )
    assert scores.greedy.tolist() == [True, False, True]


def test_uniform_logits_give_minus_log_vocab_per_token():
    scores = log_likelihoods(lambda ids: torch.zeros(*ids.shape, 16), [[0, 1, 2, 3, 4]], [1], max_length=2)
    assert scores.log_likelihood.item() == pytest.approx(-4 * torch.log(torch.tensor(16.0)).item())


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="at least one context token"):
        continuation_windows([([], [1])], 4)
    with pytest.raises(ValueError, match="empty continuation"):
        continuation_windows([([1], [])], 4)
    with pytest.raises(ValueError, match="max_length"):
        log_likelihoods(lambda ids: ids, [[1, 2]], [1], 0)
    with pytest.raises(ValueError, match="position 1 or later"):
        log_likelihoods(lambda ids: ids, [[1, 2]], [0], 4)
