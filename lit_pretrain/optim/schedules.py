"""Learning-rate schedules as pure functions of the optimizer step."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, decay_steps: int, max_lr: float, min_lr: float) -> float:
    """Learning rate at optimizer step `step`: linear warmup to max_lr, cosine decay to min_lr, then flat."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


DECAY_SHAPES = ("linear", "cosine", "sqrt")


def decay_start(warmup_steps: int, decay_steps: int, decay_fraction: float) -> int:
    """The first step of warmup-stable-decay's decay: the last `decay_fraction` of the run, never in warmup."""
    return max(warmup_steps, decay_steps - round(decay_fraction * decay_steps))


def warmup_stable_decay(
    step: int,
    warmup_steps: int,
    decay_steps: int,
    max_lr: float,
    min_lr: float,
    decay_fraction: float = 0.2,
    shape: str = "linear",
) -> float:
    """Learning rate at `step`: linear warmup, max_lr until the last `decay_fraction` of the `decay_steps`
    steps, which decay to min_lr (linearly, by a half cosine, or as 1 - sqrt), then flat at min_lr.

    Warmup is as in `warmup_cosine`. The decay's first step runs at max_lr and its last one just above
    min_lr, which step `decay_steps` reaches: the same convention as `warmup_cosine`'s decay.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    start = decay_start(warmup_steps, decay_steps, decay_fraction)
    if step < start:
        return max_lr
    progress = (step - start) / (decay_steps - start)
    if shape == "linear":
        remaining = 1.0 - progress
    elif shape == "cosine":
        remaining = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif shape == "sqrt":
        remaining = 1.0 - math.sqrt(progress)
    else:
        raise ValueError(f"--model.decay_shape must be one of {', '.join(DECAY_SHAPES)}, got {shape!r}")
    return min_lr + remaining * (max_lr - min_lr)
