"""AdamW with weight decay on matrices only, and the learning-rate schedule as a `LambdaLR`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from lit_pretrain.optim.schedules import DECAY_SHAPES, warmup_cosine, warmup_stable_decay

LR_SCHEDULES = ("cosine", "wsd")


@dataclass(frozen=True)
class AdamWConfig:
    """The optimizer and schedule settings `LitPretrain` takes as `--model.*`."""

    learning_rate: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    lr_schedule: str = "cosine"  # warmup + cosine, or "wsd": warmup, stable, decay
    decay_fraction: float = 0.2  # wsd: the share of the run spent decaying
    decay_shape: str = "linear"  # wsd: linear, cosine or sqrt (1 - sqrt)
    # The token embedding's own AdamW rate (modded-nanogpt trains it far faster than the rest); None: the
    # same as learning_rate. It follows the same schedule, scaled.
    embedding_lr: float | None = None

    def __post_init__(self) -> None:
        if self.embedding_lr is not None and not 0.0 <= self.embedding_lr < float("inf"):
            raise ValueError(f"--model.embedding_lr must be null or 0 or more, got {self.embedding_lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"--model.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError(f"--model.decay_fraction must be between 0 and 1, got {self.decay_fraction}")
        if self.decay_shape not in DECAY_SHAPES:
            raise ValueError(
                f"--model.decay_shape must be one of {', '.join(DECAY_SHAPES)}, got {self.decay_shape!r}"
            )

    def lr_at(self, step: int, decay_steps: int) -> float:
        """The learning rate of optimizer step `step` under this schedule."""
        if self.lr_schedule == "wsd":
            return warmup_stable_decay(
                step,
                self.warmup_steps,
                decay_steps,
                self.learning_rate,
                self.min_lr,
                self.decay_fraction,
                self.decay_shape,
            )
        return warmup_cosine(step, self.warmup_steps, decay_steps, self.learning_rate, self.min_lr)


def parameter_groups(
    parameters: Iterable[torch.nn.Parameter],
    weight_decay: float,
    embedding: torch.nn.Parameter | None = None,
    embedding_lr: float | None = None,
) -> list[dict]:
    """Decay tensors of two or more dimensions (matrices, embeddings); never norms or biases. With an
    `embedding_lr`, the `embedding` (tied head included) is a group of its own at that rate."""
    trainable = [p for p in parameters if p.requires_grad]
    own_rate = embedding is not None and embedding_lr is not None and embedding.requires_grad
    if own_rate:
        trainable = [p for p in trainable if p is not embedding]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    if own_rate:
        groups.append({"params": [embedding], "weight_decay": weight_decay, "lr": embedding_lr})
    return groups


def adamw(groups: list[dict], config: AdamWConfig) -> torch.optim.AdamW:
    """torch's AdamW over `groups` with the configured rate, betas and epsilon."""
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=tuple(config.betas), eps=config.eps)


def lr_scheduler(
    optimizer: torch.optim.Optimizer, config: AdamWConfig, decay_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule as a multiplier of every group's base rate, stepped once per optimizer step (so
    accumulation does not stretch it); groups with other base rates (Muon's) follow the same shape."""
    # LambdaLR multiplies the base lr, so the schedule is expressed as a fraction of it (a base lr of 0, which
    # trains nothing, e.g. to checkpoint imported weights as they are, has nothing to multiply).
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: config.lr_at(step, decay_steps) / config.learning_rate if config.learning_rate else 0.0,
    )


def build_adamw(
    parameters: Iterable[torch.nn.Parameter],
    config: AdamWConfig,
    decay_steps: int,
    embedding: torch.nn.Parameter | None = None,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and its schedule; `embedding` gets `config.embedding_lr` if that is set."""
    optimizer = adamw(
        parameter_groups(parameters, config.weight_decay, embedding, config.embedding_lr), config
    )
    return optimizer, lr_scheduler(optimizer, config, decay_steps)
