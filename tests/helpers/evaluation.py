"""An `EvaluationContext` for evaluators run by hand in one CPU process."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer

from lit_pretrain.callbacks.evaluation import EvaluationContext


def cpu_context(
    tokenizer: Tokenizer | None, bos_id: int | None = None, seq_len: int | None = None
) -> EvaluationContext:
    """The context of a single CPU process at step 0, EOS read from the tokenizer (`<|endoftext|>`)."""
    return EvaluationContext(
        tokenizer=tokenizer,
        tokenizer_json=None,
        eos_id=tokenizer.token_to_id("<|endoftext|>") if tokenizer else None,
        bos_id=bos_id,
        seq_len=seq_len,
        device=torch.device("cpu"),
        global_step=0,
        world_size=1,
        global_rank=0,
        data_parallel_size=1,
        data_parallel_rank=0,
    )
