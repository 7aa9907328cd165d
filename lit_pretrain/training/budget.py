"""How long a run lasts: the schedule's length in optimizer steps, and the token budget."""

from __future__ import annotations

import math
from typing import Any


def schedule_length(max_steps: int | None, max_tokens: int | None, tokens_per_step: int) -> int:
    """Optimizer steps the learning-rate schedule spans: the sooner of `max_steps` and `max_tokens`.

    Not Lightning's `estimated_stepping_batches`: an epoch over a weighted mixture ends when one source
    runs out, which litdata's length does not know (it gave 2 steps for a 24-step epoch), and reading it
    drops the data loader's position on resume (Lightning issue 20550, reproduced here).
    """
    limits = []
    if max_steps and max_steps > 0:
        limits.append(max_steps)
    if max_tokens:
        limits.append(math.ceil(max_tokens / tokens_per_step))
    if not limits:
        raise ValueError(
            "the learning-rate schedule needs a length: set --trainer.max_steps, --model.max_tokens or "
            "--model.lr_decay_steps (training by epochs alone is not supported)"
        )
    return min(limits)


class TokenCount(int):
    """A positive whole number of tokens, also written as 3e12, 3.0e+12 or 20_000_000_000."""

    def __new__(cls, value: Any) -> TokenCount:
        if isinstance(value, bool):
            raise TypeError(f"{value!r} is not a number of tokens")
        number = value
        if not isinstance(value, int):
            text = str(value).strip().replace("_", "")
            try:
                number = int(text)
            except ValueError:
                as_float = float(text)
                if not as_float.is_integer():
                    raise ValueError(f"{value!r} is not a whole number of tokens") from None
                number = int(as_float)
        if number < 1:
            raise ValueError(f"{value!r} is not a positive number of tokens")
        return super().__new__(cls, number)
