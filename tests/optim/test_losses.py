"""next_token_losses: cross-entropy as before, and the z-loss with PaLM's value and gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_pretrain.optim.losses import next_token_losses


def test_z_loss_value_on_uniform_logits():
    # Zero logits over 4 tokens: log Z = log 4 at every position, so the term is 1e-2 * log(4)^2.
    cross_entropy, z_term = next_token_losses(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), 1e-2)
    assert cross_entropy.item() == pytest.approx(math.log(4))
    assert z_term.item() == pytest.approx(1e-2 * math.log(4) ** 2)


def test_without_z_loss_the_loss_is_cross_entropy_alone():
    logits, targets = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    cross_entropy, z_term = next_token_losses(logits, targets)
    assert z_term is None and torch.equal(
        cross_entropy, F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    )


def test_z_loss_gradient_is_2_z_log_z_softmax_over_n():
    # d/dlogits of c * mean(lse^2) over N positions is c * 2 * lse * softmax / N, added to the CE gradient.
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 5, 7)).requires_grad_()
    targets = torch.randint(0, 7, (2, 5))
    cross_entropy, z_term = next_token_losses(logits, targets, 0.1)
    (with_z,) = torch.autograd.grad(cross_entropy + z_term, logits)
    (without,) = torch.autograd.grad(next_token_losses(logits, targets)[0], logits)
    lse = logits.detach().logsumexp(-1, keepdim=True)
    expected = 0.1 * 2 * lse * torch.softmax(logits.detach(), -1) / 10
    torch.testing.assert_close(with_z - without, expected, rtol=1e-4, atol=1e-7)
