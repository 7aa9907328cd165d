"""Evaluation of trained models (docs/evaluation.md): `lit-pretrain evaluate` and in-loop tasks.

- `models`: the `LanguageModel` interface, with adapters for checkpoints and Hugging Face directories.
- `language_modeling`: loss, perplexity and bits per byte of texts, JSONL files and validation shards.
- `multiple_choice`: zero-shot multiple-choice tasks scored as lm-evaluation-harness scores them.
- `harness`: one evaluation run, its table and JSON; `in_loop`: `MultipleChoiceTask` for `InLoopEvaluation`.
- `tasks/`: the shipped task files and `make_tasks.py`, which makes them from the standard library.
"""
