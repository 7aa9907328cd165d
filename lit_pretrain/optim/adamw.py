"""AdamW with weight decay on matrices only, and its warmup + cosine schedule as a `LambdaLR`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from lit_pretrain.optim.schedules import warmup_cosine


@dataclass(frozen=True)
class AdamWConfig:
    """The optimizer and schedule settings `LitPretrain` takes as `--model.*`."""

    learning_rate: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8


def parameter_groups(parameters: Iterable[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """Decay tensors of two or more dimensions (matrices, embeddings); never norms or biases."""
    trainable = [p for p in parameters if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]


def build_adamw(
    parameters: Iterable[torch.nn.Parameter], config: AdamWConfig, decay_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and a schedule stepped once per optimizer step (so accumulation does not stretch it)."""
    optimizer = torch.optim.AdamW(
        parameter_groups(parameters, config.weight_decay),
        lr=config.learning_rate,
        betas=tuple(config.betas),
        eps=config.eps,
    )
    # LambdaLR multiplies the base lr, so the schedule is expressed as a fraction of it (a base lr of 0, which
    # trains nothing, e.g. to checkpoint imported weights as they are, has nothing to multiply).
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            warmup_cosine(step, config.warmup_steps, decay_steps, config.learning_rate, config.min_lr)
            / config.learning_rate
            if config.learning_rate
            else 0.0
        ),
    )
    return optimizer, scheduler
