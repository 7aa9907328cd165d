"""One evaluation run: language-modelling metrics of texts, JSONL files or validation shards, and
multiple-choice tasks, for one model; the results as a table and as JSON (what `lit-pretrain evaluate` runs)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lit_pretrain.data.sources import ReadReport
from lit_pretrain.evaluation.language_modeling import (
    LanguageModelingResult,
    read_jsonl_texts,
    read_text_files,
    shard_metrics,
    text_metrics,
)
from lit_pretrain.evaluation.models import LanguageModel
from lit_pretrain.evaluation.multiple_choice import (
    MultipleChoiceResult,
    find_task,
    multiple_choice_metrics,
)


@dataclass
class EvaluationResults:
    """Everything one run measured."""

    model: dict[str, Any]
    language_modeling: list[LanguageModelingResult] = field(default_factory=list)
    tasks: list[MultipleChoiceResult] = field(default_factory=list)
    seconds: float = 0.0

    def rows(self) -> list[tuple[str, float, int]]:
        """(metric, value, n) rows: `<input>/<metric>` and `<task>/<metric>`."""
        rows = []
        for result in [*self.language_modeling, *self.tasks]:
            for metric, (value, n) in result.metrics().items():
                rows.append((f"{result.name}/{metric}", value, n))
        return rows

    def table(self) -> str:
        """The rows as an aligned text table, with skipped records noted below it."""
        rows = [("metric", "value", "n")] + [
            (metric, f"{value:.4f}" if math.isfinite(value) else str(value), f"{n:,}")
            for metric, value, n in self.rows()
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        lines = [f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}" for row in rows]
        for result in [*self.language_modeling, *self.tasks]:
            count = result.skipped.get("count", 0)
            if count:
                first = "; ".join(result.skipped.get("first", [])[:3])
                lines.append(f"{result.name}: {count} record(s) skipped, e.g. {first}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The results as written to --output."""
        return {
            "model": self.model,
            "language_modeling": {result.name: result.to_json() for result in self.language_modeling},
            "tasks": {result.name: result.to_json() for result in self.tasks},
            "seconds": self.seconds,
        }


def evaluate(
    model: LanguageModel,
    text: Sequence[str] = (),
    jsonl: Sequence[str] = (),
    text_field: str = "text",
    data_dir: str | None = None,
    tasks: Sequence[str] = (),
    batch_size: int = 8,
    limit: int | None = None,
) -> EvaluationResults:
    """Evaluate `model` on what is given; `limit` keeps the first N documents, windows per source, or records."""
    if not (text or jsonl or data_dir or tasks):
        raise ValueError("nothing to evaluate: give --text, --jsonl, --data_dir and/or --tasks")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    names = [find_task(task)[0] for task in tasks]  # fails on a missing task before any scoring
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--tasks names {', '.join(repeated)} twice: rename one of the files")
    start = time.perf_counter()
    info = dict(getattr(model, "info", {}) or {})
    info["max_length"] = model.max_length
    results = EvaluationResults(model=info)
    if text:
        report = ReadReport()
        documents = read_text_files(text, report)
        results.language_modeling.append(text_metrics(model, documents, "text", batch_size, limit, report))
    if jsonl:
        report = ReadReport()
        documents = read_jsonl_texts(jsonl, text_field, report)
        results.language_modeling.append(text_metrics(model, documents, "jsonl", batch_size, limit, report))
    if data_dir:
        results.language_modeling.extend(shard_metrics(model, data_dir, batch_size, limit))
    for task in tasks:
        results.tasks.append(multiple_choice_metrics(model, task, batch_size, limit))
    results.seconds = time.perf_counter() - start
    return results
