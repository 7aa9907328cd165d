"""Parity with lm-evaluation-harness on the shipped tasks (slow). lm-eval[hf] is in the dev extra, so
`make test-slow` runs it; without lm_eval installed the test is skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_pretrain.evaluation.models import huggingface_model
from lit_pretrain.evaluation.multiple_choice import (
    accuracies,
    choice_log_likelihoods,
    read_task,
    shipped_tasks,
)
from tests.evaluation.conftest import make_hf_dir

TASK_YAML = """\
task: lit_parity
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(shipped_tasks()))
def test_log_likelihoods_and_accuracies_equal_lm_evaluation_harness(
    task: str, small_corpus: Path, tmp_path: Path
):
    lm_eval = pytest.importorskip("lm_eval")
    # lm-evaluation-harness refuses a continuation longer than the context: a context of 512.
    hf_dir = make_hf_dir(tmp_path / "model", small_corpus, max_position_embeddings=512)
    from lm_eval.tasks import TaskManager

    records_file = tmp_path / "records.jsonl"
    records_file.write_text("".join(shipped_tasks()[task].read_text().splitlines(keepends=True)[:20]))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "lit_parity.yaml").write_text(TASK_YAML.format(path=records_file))
    output = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={hf_dir},dtype=float32",
        tasks=["lit_parity"],
        task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
        batch_size=4,
        device="cpu",
        log_samples=True,
    )
    theirs = [
        float(response[0])
        for sample in sorted(output["samples"]["lit_parity"], key=lambda s: s["doc_id"])
        for (response,) in sample["resps"]
    ]
    records, _ = read_task(records_file)
    ours = choice_log_likelihoods(huggingface_model(hf_dir), records)
    assert ours == pytest.approx(theirs, abs=1e-4)  # measured: at most 8e-5 (float32 logits, batched)
    metrics = output["results"]["lit_parity"]
    mine = accuracies(records, ours)
    assert metrics["acc,none"] == pytest.approx(mine["acc"]) and metrics["acc_norm,none"] == pytest.approx(
        mine["acc_norm"]
    )
