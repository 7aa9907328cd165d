"""The training objective: next-token cross-entropy, plus PaLM's z-loss when asked for."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_token_losses(
    logits: torch.Tensor, targets: torch.Tensor, z_loss: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean cross-entropy of [batch, seq, vocab] logits, and `z_loss * mean(logsumexp(logits)^2)` (None at 0).

    The z-loss (PaLM, Chowdhery et al. 2022, section 5) pulls the softmax normaliser log Z towards 0,
    which keeps the logits from drifting to large magnitudes; it is added to the loss that is
    backpropagated, not to the cross-entropy that is reported.
    """
    flat = logits.flatten(0, 1).float()  # the softmax in float32 whatever the compute dtype
    cross_entropy = F.cross_entropy(flat, targets.flatten())
    if not z_loss:
        return cross_entropy, None
    return cross_entropy, z_loss * torch.logsumexp(flat, dim=-1).square().mean()
