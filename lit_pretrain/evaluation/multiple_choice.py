"""Zero-shot multiple choice, scored as lm-evaluation-harness scores `output_type: multiple_choice` tasks.

A task is a JSONL file of records `{"context": str, "choices": [str, ...], "label": int}`. Each choice is
encoded as the continuation of the context and scored by its summed log-likelihood given the context; the
prediction is the choice with the highest one (`acc`), or with the highest log-likelihood per character of
the choice (`acc_norm`). The choice is appended to the context as it is: unlike lm-evaluation-harness's
default `target_delimiter: " "`, nothing is put between them, so a choice that starts a new word carries its
own leading space. Records that cannot be used (not JSON, a missing or mistyped field, fewer than two
choices, an empty choice, a label out of range) are skipped, counted and listed as `file:line: reason`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lit_pretrain.data.sources import ReadReport
from lit_pretrain.evaluation.language_modeling import skipped
from lit_pretrain.evaluation.models import LanguageModel
from lit_pretrain.inference.scoring import continuation_windows, score_windows

TASKS_DIR = Path(__file__).parent / "tasks"


@dataclass(frozen=True)
class MultipleChoiceRecord:
    """One question: a context, its choices, the index of the right one, and where it was read."""

    context: str
    choices: tuple[str, ...]
    label: int
    location: str


@dataclass
class MultipleChoiceResult:
    """Accuracy of one task, with what it was computed over."""

    name: str
    acc: float
    acc_norm: float
    n: int
    chance: float  # the expected accuracy of guessing: the mean of 1 / number of choices
    skipped: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, tuple[float, int]]:
        """(value, records) by metric name."""
        return {"acc": (self.acc, self.n), "acc_norm": (self.acc_norm, self.n)}

    def to_json(self) -> dict[str, Any]:
        """The result as written to --output."""
        return {
            "acc": self.acc,
            "acc_norm": self.acc_norm,
            "n": self.n,
            "chance": self.chance,
            "skipped": self.skipped,
        }


def shipped_tasks() -> dict[str, Path]:
    """The tasks that ship with lit-pretrain, by name (lit_pretrain/evaluation/tasks/*.jsonl)."""
    return {path.name.removesuffix(".jsonl"): path for path in sorted(TASKS_DIR.glob("*.jsonl"))}


def find_task(name_or_file: str) -> tuple[str, Path]:
    """(name, path) of a shipped task given by name, or of a JSONL file (named by its file name)."""
    tasks = shipped_tasks()
    if name_or_file in tasks:
        return name_or_file, tasks[name_or_file]
    path = Path(name_or_file)
    if path.is_file():
        return path.name.removesuffix(".jsonl"), path
    raise FileNotFoundError(
        f"--tasks {name_or_file}: neither a shipped task ({', '.join(tasks) or 'none'}) nor a JSONL file"
    )


def _problem(record: Any) -> str | None:
    """Why a parsed line is not a usable record, or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    context, choices, label = record.get("context"), record.get("choices"), record.get("label")
    if not isinstance(context, str):
        return "no string at 'context'"
    if not isinstance(choices, list) or not all(isinstance(choice, str) for choice in choices):
        return "no list of strings at 'choices'"
    if len(choices) < 2:
        return f"{len(choices)} choice(s): at least two are needed"
    if not all(choices):
        return "an empty choice (it has no tokens to score)"
    if isinstance(label, bool) or not isinstance(label, int):
        return "no integer at 'label'"
    if not 0 <= label < len(choices):
        return f"label {label} out of range for {len(choices)} choices"
    return None


def read_task(path: str | Path, limit: int | None = None) -> tuple[list[MultipleChoiceRecord], ReadReport]:
    """The first `limit` usable records of a task file, and the report of the lines skipped before them."""
    path = Path(path)
    report = ReadReport()
    records: list[MultipleChoiceRecord] = []
    with open(path, "rb") as lines:
        for line_number, raw in enumerate(lines, start=1):
            if limit is not None and len(records) >= limit:
                break
            if not raw.strip():
                continue
            location = f"{path}:{line_number}"
            report.documents_in += 1
            try:
                record = json.loads(report.decode(raw))
            except json.JSONDecodeError as err:
                report.malformed(location, f"invalid JSON ({err.msg})")
                continue
            problem = _problem(record)
            if problem is not None:
                report.malformed(location, problem)
                continue
            records.append(
                MultipleChoiceRecord(record["context"], tuple(record["choices"]), record["label"], location)
            )
    return records, report


def encode_pair(
    encode: Callable[[str], list[int]], document_prefix: list[int], context: str, continuation: str
) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation), split as lm-evaluation-harness splits them.

    As `TemplateLM._encode_pair` (lm_eval/api/model.py): whitespace that ends the context (spaces, newlines)
    moves to the start of the continuation, the whole text is encoded, and the continuation is what follows
    the context's tokens, so tokens are merged as in running text. As `TemplateLM.loglikelihood`, an empty
    context becomes the document prefix. If the context's tokens swallow the whole continuation (a merge
    across the boundary), the continuation is encoded on its own.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        return list(document_prefix), encode(continuation)
    context_ids = encode(context)
    continuation_ids = encode(context + continuation)[len(context_ids) :]
    return context_ids, continuation_ids or encode(continuation)


def encode_records(
    records: Sequence[MultipleChoiceRecord], encode: Callable[[str], list[int]], document_prefix: list[int]
) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) ids of every choice of every record, record by record."""
    return [
        encode_pair(encode, document_prefix, record.context, choice)
        for record in records
        for choice in record.choices
    ]


def accuracies(records: Sequence[MultipleChoiceRecord], log_likelihoods: Sequence[float]) -> dict[str, float]:
    """acc, acc_norm and chance of the records from their choices' log-likelihoods, record by record.

    As lm-evaluation-harness's `ConfigurableTask.process_results` (lm_eval/api/task.py, multiple_choice):
    `acc` is argmax of the summed log-likelihoods, `acc_norm` argmax of each divided by its choice's length
    in characters (`len(choice)`, the string without any delimiter); ties go to the first choice.
    """
    if not records:
        raise ValueError("no records to score")
    correct = correct_norm = 0
    chance = 0.0
    start = 0
    for record in records:
        scores = log_likelihoods[start : start + len(record.choices)]
        start += len(record.choices)
        normalized = [score / len(choice) for score, choice in zip(scores, record.choices, strict=True)]
        correct += _argmax(scores) == record.label
        correct_norm += _argmax(normalized) == record.label
        chance += 1 / len(record.choices)
    if start != len(log_likelihoods):
        raise ValueError(f"{len(log_likelihoods)} log-likelihoods for {start} choices")
    return {
        "acc": correct / len(records),
        "acc_norm": correct_norm / len(records),
        "chance": chance / len(records),
    }


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # max keeps the first of equal values


def choice_log_likelihoods(
    model: LanguageModel, records: Sequence[MultipleChoiceRecord], batch_size: int = 8
) -> list[float]:
    """Log-likelihood of every choice of every record given its context, record by record."""
    pairs = encode_records(records, model.encode, model.document_prefix)
    with torch.inference_mode():
        scores = score_windows(
            model.logits, continuation_windows(pairs, model.max_length), batch_size, model.device
        )
    return scores.log_likelihood.tolist()


def multiple_choice_metrics(
    model: LanguageModel, task: str, batch_size: int = 8, limit: int | None = None
) -> MultipleChoiceResult:
    """acc and acc_norm of `model` on a shipped task (by name) or a task JSONL file."""
    name, path = find_task(task)
    records, report = read_task(path, limit)
    if not records:
        raise ValueError(f"task {name} ({path}) has no usable record: {skipped(report)['first'][:3]}")
    result = accuracies(records, choice_log_likelihoods(model, records, batch_size))
    return MultipleChoiceResult(
        name=name,
        acc=result["acc"],
        acc_norm=result["acc_norm"],
        n=len(records),
        chance=result["chance"],
        skipped=skipped(report),
    )
