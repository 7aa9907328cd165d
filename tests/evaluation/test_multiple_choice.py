"""Multiple choice as lm-evaluation-harness scores it: the context/continuation split, log-likelihoods equal to
one full forward pass per choice (lit-pretrain checkpoint and Hugging Face model alike), acc and acc_norm
where the answer is forced, and unusable records skipped with file:line."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from lit_pretrain.evaluation.models import checkpoint_model, huggingface_model
from lit_pretrain.evaluation.multiple_choice import (
    MultipleChoiceRecord,
    accuracies,
    choice_log_likelihoods,
    encode_pair,
    find_task,
    multiple_choice_metrics,
    read_task,
    shipped_tasks,
)

RECORDS = [
    MultipleChoiceRecord("def add(a, b):\n    return", (" a + b\n", " a - b\n", " None\n"), 0, "r:1"),
    MultipleChoiceRecord("The tokenizer reads ", ("bytes.", "the text, one byte at a time."), 1, "r:2"),
    MultipleChoiceRecord("", ("import os", "x"), 0, "r:3"),  # empty context: the document prefix
    MultipleChoiceRecord("naïve café " * 12, ("東京", "x = 1"), 0, "r:4"),  # context cut from the left
]


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_the_pair_is_split_as_lm_evaluation_harness_splits_it(corpus_tokenizer):
    def encode(text: str) -> list[int]:
        return corpus_tokenizer.encode(text, add_special_tokens=False).ids

    # The context's trailing space moves to the continuation; the continuation is what follows the
    # context's tokens in the encoding of the whole text.
    context, continuation = encode_pair(encode, [0], "The tokenizer reads ", "bytes.")
    assert context == encode("The tokenizer reads")
    assert continuation == encode("The tokenizer reads bytes.")[len(context) :]
    assert encode_pair(encode, [0, 7], "", "import os") == ([0, 7], encode("import os"))


@pytest.mark.parametrize("kind", ["checkpoint", "huggingface"])
def test_choice_scores_equal_one_full_forward_pass_per_choice(
    kind: str, random_checkpoint: Path, hf_dir: Path
):
    model = checkpoint_model(random_checkpoint) if kind == "checkpoint" else huggingface_model(hf_dir)
    model.max_length = 24  # short, so that the long context is cut from the left
    scores = choice_log_likelihoods(model, RECORDS, batch_size=3)

    expected = []
    for record in RECORDS:
        for choice in record.choices:
            context, continuation = encode_pair(model.encode, model.document_prefix, record.context, choice)
            tokens = (context + continuation)[-(model.max_length + 1) :]
            with torch.no_grad():
                logits = model.logits(torch.tensor([tokens[:-1]])).double()[0]
            log_probs = torch.log_softmax(logits, dim=-1)
            first = len(tokens) - len(continuation)
            expected.append(sum(log_probs[p - 1, tokens[p]].item() for p in range(first, len(tokens))))
    assert len(context + continuation) > model.max_length + 1, "the last record's context is cut"
    assert scores == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_acc_and_acc_norm_where_the_answer_is_forced(uniform_checkpoint: Path, tmp_path: Path):
    """Uniform logits: a choice's log-likelihood is -(its tokens) * ln 512. acc picks the choice with the
    fewest tokens; acc_norm divides by the characters, so it picks the fewest tokens per character."""
    model = checkpoint_model(uniform_checkpoint)
    short, long = "xq", " the" * 12
    tokens = {c: len(encode_pair(model.encode, model.document_prefix, "Say:", c)[1]) for c in (short, long)}
    assert tokens[short] < tokens[long] and tokens[long] / len(long) < tokens[short] / len(short)
    task = _write(
        tmp_path / "forced.jsonl",
        [
            {"context": "Say:", "choices": [long, short], "label": 1},  # acc right, acc_norm wrong
            {"context": "Say:", "choices": [short, long], "label": 1},  # acc wrong, acc_norm right
            {"context": "Say:", "choices": [short, short], "label": 0},  # a tie goes to the first: both right
        ],
    )
    result = multiple_choice_metrics(model, str(task))
    assert (result.acc, result.acc_norm, result.n) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert result.chance == 0.5
    records, _ = read_task(task)
    log_likelihoods = choice_log_likelihoods(model, records)
    assert log_likelihoods[:2] == pytest.approx(
        [-tokens[long] * math.log(512), -tokens[short] * math.log(512)]
    )


def test_accuracies_follow_the_lm_evaluation_harness_formulas():
    records = [
        MultipleChoiceRecord("c", ("aaaa", "b"), 0, "x:1"),
        MultipleChoiceRecord("c", ("aaaa", "b", "cc"), 2, "x:2"),
    ]
    # Record 1: argmax(ll) = 1 ("b"), argmax(ll / len) = 0 (-4/4 > -2/1). Record 2: both pick 2.
    result = accuracies(records, [-4.0, -2.0, -8.0, -3.0, -1.0])
    assert result == {"acc": 0.5, "acc_norm": 1.0, "chance": pytest.approx((1 / 2 + 1 / 3) / 2)}


def test_unusable_records_are_skipped_and_counted_with_file_and_line(random_checkpoint: Path, tmp_path: Path):
    good = {"context": "x =", "choices": [" 1", " 2"], "label": 0}
    task = _write(
        tmp_path / "task.jsonl",
        [
            good,
            {**good, "label": 2},
            {**good, "label": -1},
            "not json",
            {**good, "label": "0"},
            {**good, "label": True},
            {**good, "choices": [" 1"]},
            {**good, "choices": [" 1", ""]},
            {"choices": [" 1", " 2"], "label": 0},
            "",
            {**good, "label": 1},
        ],
    )
    records, report = read_task(task)
    assert [r.location for r in records] == [f"{task}:1", f"{task}:11"]
    assert report.malformed_records == 8
    assert report.malformed_locations[:3] == [
        f"{task}:2: label 2 out of range for 2 choices",
        f"{task}:3: label -1 out of range for 2 choices",
        f"{task}:4: invalid JSON (Expecting value)",
    ]
    assert [location.split(": ")[0] for location in report.malformed_locations[3:]] == [
        f"{task}:{line}" for line in (5, 6, 7, 8, 9)
    ]
    result = multiple_choice_metrics(checkpoint_model(random_checkpoint), str(task))
    assert result.n == 2 and result.skipped["count"] == 8
    limited, _ = read_task(task, limit=1)
    assert len(limited) == 1


def test_tasks_are_found_by_name_or_path(tmp_path: Path):
    name, path = find_task("stdlib_code_next_lines")
    assert path == shipped_tasks()["stdlib_code_next_lines"]
    own = _write(tmp_path / "mine.jsonl", [{"context": "a", "choices": ["b", "c"], "label": 0}])
    assert find_task(str(own)) == ("mine", own)
    with pytest.raises(FileNotFoundError, match="neither a shipped task .*stdlib_code_next_lines"):
        find_task("no_such_task")


def test_the_shipped_tasks_are_well_formed_and_indexed():
    index = json.loads((shipped_tasks()["stdlib_code_next_lines"].parent / "tasks.json").read_text())
    assert set(shipped_tasks()) == set(index["tasks"]) and len(index["tasks"]) >= 3
    for name, path in shipped_tasks().items():
        records, report = read_task(path)
        assert report.malformed_records == 0, report.malformed_locations
        assert len(records) == index["tasks"][name]["records"] and 50 <= len(records) <= 200
        assert hashlib.sha256(path.read_bytes()).hexdigest() == index["tasks"][name]["sha256"]
        labels = [r.label for r in records]
        assert len(set(labels)) > 1, "the right answer is not always in the same place"
