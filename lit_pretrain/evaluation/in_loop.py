"""Multiple-choice tasks inside the training loop, through the `InLoopEvaluation` callback:

    trainer:
      callbacks:
        - class_path: lit_pretrain.callbacks.evaluation.InLoopEvaluation
          init_args:
            every_n_steps: 1000
            evaluators:
              - class_path: lit_pretrain.evaluation.in_loop.MultipleChoiceTask
                init_args: {task: stdlib_code_next_lines, limit: 100}

logs `eval/<task>/acc` and `eval/<task>/acc_norm`, scored exactly as `lit-pretrain evaluate --tasks` scores
them, with the run's tokenizer.
"""

from __future__ import annotations

import torch

from lit_pretrain.callbacks.evaluation import EvaluationContext, InLoopEvaluator
from lit_pretrain.data.sources import ReadReport
from lit_pretrain.evaluation.multiple_choice import (
    MultipleChoiceRecord,
    accuracies,
    encode_records,
    find_task,
    read_task,
)
from lit_pretrain.inference.scoring import Windows, continuation_windows, score_windows


class MultipleChoiceTask(InLoopEvaluator):
    """acc and acc_norm on a shipped task (by name) or a task JSONL file, on its first `limit` records.

    Records are read and encoded once, in `setup`; every rank scores every record (the same forward passes
    on all ranks, which sharded models need), so the numbers need no reduction. Contexts longer than the
    training sequence length are cut from the left.
    """

    def __init__(
        self, task: str, limit: int | None = None, name: str | None = None, batch_size: int = 8
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"MultipleChoiceTask: limit must be at least 1, got {limit}")
        if batch_size < 1:
            raise ValueError(f"MultipleChoiceTask: batch_size must be at least 1, got {batch_size}")
        self.task = task
        self.limit = limit
        self.batch_size = batch_size
        self.task_name, self.path = find_task(task)
        self.name = name or self.task_name
        self._records: list[MultipleChoiceRecord] = []
        self._pairs: list[tuple[list[int], list[int]]] = []
        self._windows: dict[int, Windows] = {}
        self.report = ReadReport()

    def setup(self, context: EvaluationContext) -> None:
        """Read and encode the records with the run's tokenizer; refuse a task with no usable record."""
        if context.tokenizer is None or context.eos_id is None:
            raise ValueError(
                f"MultipleChoiceTask {self.name!r} needs the run's tokenizer with an end-of-document token: "
                "train on a PretrainDataModule"
            )
        self._records, self.report = read_task(self.path, self.limit)
        if not self._records:
            raise ValueError(
                f"MultipleChoiceTask {self.name!r}: {self.path} has no usable record "
                f"({self.report.malformed_records} skipped)"
            )
        tokenizer = context.tokenizer
        prefix = [context.eos_id] + ([context.bos_id] if context.bos_id is not None else [])
        self._pairs = encode_records(
            self._records, lambda text: tokenizer.encode(text, add_special_tokens=False).ids, prefix
        )
        self._windows = {}

    def evaluate(self, model: torch.nn.Module, context: EvaluationContext) -> dict[str, float]:
        """{"acc": ..., "acc_norm": ...} of the model on the task's records."""
        block_size = model.config.block_size
        window = min(context.seq_len, block_size) if context.seq_len else block_size
        if window not in self._windows:
            self._windows[window] = continuation_windows(self._pairs, window)
        scores = score_windows(model, self._windows[window], self.batch_size, context.device)
        result = accuracies(self._records, scores.log_likelihood.tolist())
        return {"acc": result["acc"], "acc_norm": result["acc_norm"]}
