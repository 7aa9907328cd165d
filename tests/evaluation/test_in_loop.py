"""`MultipleChoiceTask` in a short `fit`: built from YAML, logged as eval/<task>/acc and acc_norm with the
validation of the same weights, and equal to `lit-pretrain evaluate`'s numbers for the checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from lit_pretrain.callbacks.evaluation import InLoopEvaluation
from lit_pretrain.evaluation.in_loop import MultipleChoiceTask
from lit_pretrain.evaluation.models import checkpoint_model
from lit_pretrain.evaluation.multiple_choice import multiple_choice_metrics
from tests.helpers.evaluation import cpu_context
from tests.helpers.runs import scalars


def test_the_yaml_config_builds_the_tasks(in_loop_run):
    _, cli = in_loop_run
    (evaluation,) = [c for c in cli.trainer.callbacks if isinstance(c, InLoopEvaluation)]
    code, prose = evaluation.evaluators
    assert isinstance(code, MultipleChoiceTask) and code.name == "stdlib_code_next_lines" and code.limit == 12
    assert prose.name == "prose" and prose.task == "stdlib_docstring_next_sentence"


def test_acc_and_acc_norm_are_logged_with_the_validation_of_the_same_weights(in_loop_run):
    run_dir, _ = in_loop_run
    logged = scalars(run_dir)
    for name in ("stdlib_code_next_lines", "prose"):
        for metric in ("acc", "acc_norm"):
            values = logged[f"eval/{name}/{metric}"]
            assert [step for step, _ in values] == [2, 5] == [step for step, _ in logged["val/loss"]]
            # Fractions of 12 records.
            assert all(0 <= value <= 1 and abs(value * 12 - round(value * 12)) < 1e-4 for _, value in values)


def test_the_logged_accuracy_is_what_evaluate_gives_for_the_checkpoint(in_loop_run):
    run_dir, _ = in_loop_run
    logged = scalars(run_dir)
    model = checkpoint_model(run_dir / "checkpoints" / "step-0000006.ckpt")
    model.max_length = 32  # the run's sequence length: what the in-loop task reads at most
    result = multiple_choice_metrics(model, "stdlib_code_next_lines", limit=12)
    assert logged["eval/stdlib_code_next_lines/acc"][-1][1] == pytest.approx(result.acc, abs=1e-6)
    assert logged["eval/stdlib_code_next_lines/acc_norm"][-1][1] == pytest.approx(result.acc_norm, abs=1e-6)


def test_bad_settings_are_refused(tmp_path: Path, corpus_tokenizer: Tokenizer):
    with pytest.raises(FileNotFoundError, match="neither a shipped task"):
        MultipleChoiceTask("no_such_task")
    with pytest.raises(ValueError, match="limit"):
        MultipleChoiceTask("stdlib_code_next_lines", limit=0)
    unusable = tmp_path / "unusable.jsonl"
    unusable.write_text('{"context": "a", "choices": ["b", "c"], "label": 2}\n')
    with pytest.raises(ValueError, match="needs the run's tokenizer"):
        MultipleChoiceTask(str(unusable)).setup(cpu_context(None))
    with pytest.raises(ValueError, match="no usable record"):
        MultipleChoiceTask(str(unusable)).setup(cpu_context(corpus_tokenizer))
