"""prepare --decontaminate: contaminated documents are dropped and counted the same with any num_proc."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lit_pretrain.cli.prepare import build_parser, rewrite_argv
from lit_pretrain.data.manifest import summary_lines
from lit_pretrain.data.prepare import prepare

VOCABULARY = [f"word{i}" for i in range(3000)]
# The synthetic words are no English: the stop-word rule would drop every document.
NO_STOP_WORDS = {"min_stop_words": None}


def sentence(seed: int, count: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCABULARY) for _ in range(count))


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path]:
    question = sentence(1, 30)
    eval_file = tmp_path / "task.jsonl"
    eval_file.write_text(
        json.dumps({"context": question[:100], "choices": [question[100:], " nope"], "label": 0}) + "\n"
    )
    docs = [{"id": f"d{i}", "text": sentence(100 + i, 200) + "."} for i in range(40)]
    docs[7]["text"] = sentence(7, 50) + " " + question.upper() + " " + sentence(8, 50)
    docs[21]["text"] = "Intro. " + " ".join(question.split()[5:18]) + ". " + sentence(9, 80)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return train, eval_file


@pytest.mark.parametrize("num_proc", [1, 2])
def test_prepare_drops_and_reports_contaminated_documents(tmp_path: Path, corpus, num_proc: int):
    train, eval_file = corpus
    manifest = prepare(
        [str(train)],
        tmp_path / f"out{num_proc}",
        filters=NO_STOP_WORDS,
        vocab_size=300,
        id_field="id",
        num_proc=num_proc,
        decontamination={"files": [str(eval_file)]},
    )
    report = manifest["decontamination"]
    assert report["dropped"] == 2 and report["by_file"] == {str(eval_file): 2}
    assert report["examples"] == [f"train:d7 -> {eval_file}:1", f"train:d21 -> {eval_file}:1"]
    assert manifest["sources"]["train"]["decontaminated"] == 2 and manifest["documents_kept"] == 38
    assert report["files"][0]["records"] == 1 and report["ngram"] == 13
    assert any(line.startswith("decontaminated: 2 (") for line in summary_lines(manifest))


def test_prepare_without_decontamination_writes_null(tmp_path: Path, corpus):
    manifest = prepare(
        [str(corpus[0])], tmp_path / "out", vocab_size=300, id_field="id", filters=NO_STOP_WORDS
    )
    assert manifest["decontamination"] is None and manifest["documents_kept"] == 40


def test_bad_evaluation_file_fails_before_any_output(tmp_path: Path, corpus):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: invalid JSON"):
        prepare([str(corpus[0])], tmp_path / "out", decontamination={"files": [str(bad)]})
    assert not (tmp_path / "out.partial").exists() and not (tmp_path / "out").exists()


def test_cli_options():
    parser = build_parser()
    argv = [
        "in.jsonl",
        "--output_dir",
        "o",
        "--decontaminate",
        "a.jsonl",
        "--decontaminate",
        "b.txt",
        "--decontamination.ngram",
        "8",
        "--decontamination.choices",
        "correct",
    ]
    args = parser.parse_args(rewrite_argv(parser, argv))
    args = parser.instantiate(args) if hasattr(parser, "instantiate") else parser.instantiate_classes(args)
    assert args.inputs == ["in.jsonl"] and args.decontaminate == ["a.jsonl", "b.txt"]
    assert args.decontamination.ngram == 8 and args.decontamination.choices == "correct"
    with pytest.raises((ValueError, SystemExit)):
        args = parser.parse_args(
            rewrite_argv(parser, ["x", "--output_dir", "o", "--decontamination.ngram", "0"])
        )
        parser.instantiate(args) if hasattr(parser, "instantiate") else parser.instantiate_classes(args)


def test_every_bare_word_after_decontaminate_is_evaluation_data_never_a_training_input():
    parser = build_parser()
    argv = ["in.jsonl", "--decontaminate", "a.jsonl", "b.txt", "--output_dir", "o", "more.jsonl"]
    args = parser.parse_args(rewrite_argv(parser, argv))
    assert args.decontaminate == ["a.jsonl", "b.txt"] and args.inputs == ["in.jsonl", "more.jsonl"]
