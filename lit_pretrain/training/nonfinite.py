"""Skipping optimizer steps whose loss was NaN or infinite, and stopping a run that keeps diverging."""

from __future__ import annotations

import torch


class NonFiniteSteps:
    """Collects, without a host sync, whether every micro-batch of a step had a finite loss; counts skips."""

    def __init__(self, max_consecutive: int) -> None:
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self._finite: torch.Tensor | None = None

    def observe(self, loss: torch.Tensor) -> None:
        """Note one micro-batch's loss (a tensor operation: no device sync)."""
        finite = torch.isfinite(loss.detach())
        self._finite = finite if self._finite is None else self._finite & finite

    def take_bad_flag(self) -> torch.Tensor | None:
        """1.0 when a micro-batch of this step was not finite, else 0.0 (None without any); resets."""
        finite, self._finite = self._finite, None
        return None if finite is None else (~finite).float()

    def record(self, bad: bool) -> None:
        """Count a finished step, skipped (`bad`) or not."""
        if not bad:
            self.consecutive = 0
            return
        self.skipped += 1
        self.consecutive += 1

    def check_not_diverged(self, step: int) -> None:
        """Raise once more than `max_consecutive` bad steps came in a row."""
        if self.consecutive > self.max_consecutive:
            raise RuntimeError(
                f"the loss was NaN or infinite for {self.consecutive} optimizer steps in a row "
                f"(up to step {step}; --model.max_consecutive_skipped_steps is {self.max_consecutive}): "
                "training has diverged. Lower --model.learning_rate, add --trainer.gradient_clip_val, or "
                "check the data; resume from the last checkpoint with --ckpt_path last"
            )
