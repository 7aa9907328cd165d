"""Decontamination: shared 13-grams with evaluation data are found with their file:line, 12 shared words are
not, normalisation is case- and punctuation-blind, short examples match whole, and bad files are errors."""

from __future__ import annotations

import gzip
import json
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest

from lit_pretrain.data import decontaminate
from lit_pretrain.data.decontaminate import (
    MAX_EXAMPLES,
    DecontaminationConfig,
    DecontaminationIndex,
    DecontaminationReport,
    Decontaminator,
    EvalLocation,
    NgramHasher,
    normalize_words,
    word_hashes,
)

TASKS = Path(__file__).resolve().parents[2] / "lit_pretrain" / "evaluation" / "tasks"
VOCABULARY = [f"w{i}" for i in range(5000)]


def words(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(VOCABULARY) for _ in range(count)]


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def index_of(*files: Path, **options: object) -> DecontaminationIndex:
    return DecontaminationIndex(DecontaminationConfig(files=[str(f) for f in files], **options))


def test_a_shared_13_gram_is_found_at_its_file_and_line_and_12_words_are_not(tmp_path: Path):
    examples = [" ".join(words(seed, 40)) for seed in range(5)]
    path = write_jsonl(tmp_path / "eval.jsonl", [{"text": t} for t in examples])
    index = index_of(path)
    example = examples[3].split()
    before, after = " ".join(words(100, 200)), " ".join(words(101, 200))
    assert index.match(f"{before} {' '.join(example[10:23])} {after}") == EvalLocation(str(path), 4)
    assert str(index.match(" ".join(example[27:40]))) == f"{path}:4"
    assert index.match(f"{before} {' '.join(example[10:22])} {after}") is None
    # Twelve and twelve words of the example with a foreign word between them are no 13-gram either.
    assert index.match(" ".join([*example[0:12], "intruder", *example[12:24]])) is None


def test_normalisation_ignores_case_punctuation_and_unicode_forms(tmp_path: Path):
    text = "The Quick brown fox's “final” jump—over thirteen lazy dogs, café ﬁnally_done; 42 times!"
    path = write_jsonl(tmp_path / "eval.jsonl", [{"text": text}])
    index = index_of(path)
    assert normalize_words("Hello, WORLD!").split() == [b"hello", b"world"]
    assert normalize_words("ﬁne CAFÉ").split() == "fine café".encode().split()
    variant = "the quick BROWN fox s final jump over thirteen lazy dogs CAFÉ fi-nally done 42 times"
    assert index.match(variant) is None  # "fi-nally" is two words, not "finally"
    variant = "the quick BROWN fox s (final) jump over thirteen lazy dogs: CAFÉ finally-done 42 times"
    assert index.match("Intro. " + variant + " Outro.") == EvalLocation(str(path), 1)


def test_ascii_and_unicode_paths_agree():
    text = "Alpha, beta_gamma (delta) 12 EPSILON zeta eta theta iota kappa lambda mu nu xi."
    assert normalize_words(text) == normalize_words(text + " é")[: len(normalize_words(text))]
    assert np.array_equal(word_hashes(normalize_words(text)), word_hashes(normalize_words(text + " é"))[:-1])


def test_short_examples_match_whole_and_very_short_ones_are_ignored(tmp_path: Path):
    ten = words(1, 10)
    five = words(2, 5)
    path = tmp_path / "prompts.txt"
    path.write_text(f"{' '.join(words(3, 30))}\n\n{' '.join(ten)}\n{' '.join(five)}\n")
    index = index_of(path)
    assert [(f.records, f.whole, f.too_short) for f in index.files] == [(3, 1, 1)]
    assert index.lengths == [10, 13]
    assert index.match(f"before {' '.join(ten)} after") == EvalLocation(str(path), 3)
    assert index.match(" ".join(ten[:9])) is None
    assert index.match(" ".join(ten[1:] + ten[:1])) is None
    assert index.match(" ".join(five)) is None
    # min_words above ngram: no text is matched whole.
    assert index_of(path, min_words=20).lengths == [13]


def test_multiple_choice_records_are_matched_across_context_and_choice(tmp_path: Path):
    context = " ".join(words(10, 8)) + " "
    answer, distractor = " ".join(words(11, 8)), " ".join(words(12, 8))
    record = {"context": context, "choices": [distractor, answer], "label": 1}
    path = write_jsonl(tmp_path / "task.jsonl", [{"context": "x", "choices": ["a", "b"], "label": 0}, record])
    # Eight words of the context and five of the answer: a 13-gram only of the two together.
    spanning = f"{context}{' '.join(answer.split()[:5])}"
    assert index_of(path).match(spanning) == EvalLocation(str(path), 2)
    assert index_of(path).match(f"{context}{distractor}") == EvalLocation(str(path), 2)
    correct_only = index_of(path, choices="correct")
    assert correct_only.match(spanning) == EvalLocation(str(path), 2)
    assert correct_only.match(f"{context}{distractor}") is None


def test_a_shipped_task_file_in_the_evaluation_format(tmp_path: Path):
    path = TASKS / "stdlib_docstring_next_sentence.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    index = index_of(path, choices="correct")
    line = next(
        i
        for i, r in enumerate(records, start=1)
        if len((r["context"] + r["choices"][r["label"]]).split()) > 20
    )
    record = records[line - 1]
    document = (
        "Some unrelated introduction.\n" + record["context"] + record["choices"][record["label"]] + "\nMore."
    )
    location = index.match(document)
    assert location == EvalLocation(str(path), line)
    assert index.files[0].records == len(records) and index.files[0].sha256
    # All choices: the distractors are sentences of other stdlib docstrings, so they match as well.
    distractor = next(
        c for i, c in enumerate(record["choices"]) if i != record["label"] and len(c.split()) >= 13
    )
    assert index.match(distractor) is None
    assert index_of(path).match(distractor) is not None


def test_text_unit_file_spans_lines_and_reports_the_starting_line(tmp_path: Path):
    prose = words(20, 30)
    path = tmp_path / "held_out.txt"
    path.write_text("\n".join(" ".join(prose[i : i + 6]) for i in range(0, 30, 6)) + "\n")
    document = " ".join(prose[8:21])  # starts in line 2, word 3
    assert index_of(path, text_unit="file").match(document) == EvalLocation(str(path), 2)
    assert index_of(path).match(document) is None  # one example per line: no line has 13 words


def test_long_documents_are_hashed_in_windows_without_losing_an_ngram(monkeypatch: pytest.MonkeyPatch):
    normalized = normalize_words(" ".join(words(30, 3000)) + " " + "x" * 700 + " " + " ".join(words(31, 50)))
    whole = word_hashes(normalized)
    hasher = NgramHasher([9, 13])
    expected = {
        (first + i, j, int(h))
        for first, block, valid in hasher.blocks(whole)
        for (i, j), h in np.ndenumerate(block)
        if valid[i, j]
    }
    monkeypatch.setattr(decontaminate, "_WINDOW_BYTES", 64)
    monkeypatch.setattr(decontaminate, "_WINDOW_WORDS", 40)
    windowed = word_hashes(normalized)
    assert np.array_equal(windowed, whole)
    found = {
        (first + i, j, int(h))
        for first, block, valid in hasher.blocks(windowed)
        for (i, j), h in np.ndenumerate(block)
        if valid[i, j]
    }
    assert found == expected
    assert len(expected) == 2 * len(whole) - 8 - 12


def test_malformed_or_unreadable_evaluation_files_are_errors_naming_file_and_line(tmp_path: Path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\n\n{"text": oops}\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(bad_json))}:3: invalid JSON"):
        index_of(bad_json)
    no_text = write_jsonl(tmp_path / "no_text.jsonl", [{"text": "a"}, {"body": "b"}])
    with pytest.raises(
        ValueError,
        match=rf"{re.escape(str(no_text))}:2: neither a multiple-choice record .* nor a string at 'text'",
    ):
        index_of(no_text)
    bad_choices = write_jsonl(tmp_path / "mc.jsonl", [{"context": "c", "choices": "ab", "label": 0}])
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(bad_choices))}:1: no list of strings at 'choices'"
    ):
        index_of(bad_choices)
    bad_label = write_jsonl(tmp_path / "label.jsonl", [{"context": "c", "choices": ["a", "b"], "label": 2}])
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(bad_label))}:1: choices 'correct' needs an integer 'label'"
    ):
        index_of(bad_label, choices="correct")
    array = write_jsonl(tmp_path / "array.jsonl", [["not", "an", "object"]])
    with pytest.raises(ValueError, match=rf"{re.escape(str(array))}:1: a JSON list, not an object"):
        index_of(array)
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"text": "x"}\n')[:12])
    with pytest.raises(ValueError, match=rf"cannot read decontamination file {re.escape(str(broken))}"):
        index_of(broken)
    with pytest.raises(FileNotFoundError, match="missing.jsonl' does not exist"):
        index_of(tmp_path / "missing.jsonl")


def test_directories_pick_up_jsonl_and_txt_files_once(tmp_path: Path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": " ".join(words(40, 20))}])
    (tmp_path / "b.txt").write_text(" ".join(words(41, 20)) + "\n")
    (tmp_path / "notes.md").write_text(" ".join(words(42, 20)) + "\n")
    index = DecontaminationIndex(DecontaminationConfig(files=[str(tmp_path), str(tmp_path / "a.jsonl")]))
    assert [Path(f.path).name for f in index.files] == ["a.jsonl", "b.txt"]
    assert index.match(" ".join(words(42, 20))) is None
    assert index_of(tmp_path / "notes.md").match(" ".join(words(42, 20))) is not None


def test_memory_filesystem_evaluation_file():
    fsspec = pytest.importorskip("fsspec")
    url = "memory://decontaminate-test/eval.jsonl"
    fsspec.filesystem("memory").pipe(url, json.dumps({"text": " ".join(words(50, 20))}).encode() + b"\n")
    try:
        index = DecontaminationIndex(DecontaminationConfig(files=[url]))
        assert index.match(" ".join(words(50, 20))) == EvalLocation(
            "memory:///decontaminate-test/eval.jsonl", 1
        )
    finally:
        fsspec.filesystem("memory").rm("/decontaminate-test", recursive=True)


def test_decontaminator_counts_by_file_and_reports_merge(tmp_path: Path):
    first = write_jsonl(tmp_path / "one.jsonl", [{"text": " ".join(words(60, 20))}])
    second = write_jsonl(tmp_path / "two.jsonl", [{"text": "x"}, {"text": " ".join(words(61, 20))}])
    decontaminator = Decontaminator(DecontaminationConfig(files=[str(first), str(second)]))
    assert decontaminator.check("doc-a", " ".join(words(60, 20))) == EvalLocation(str(first), 1)
    assert decontaminator.check("doc-b", "nothing in common here at all") is None
    assert decontaminator.check("doc-c", " ".join(words(61, 20))) == EvalLocation(str(second), 2)
    manifest = decontaminator.to_manifest()
    assert manifest["dropped"] == 2 and manifest["by_file"] == {str(first): 1, str(second): 1}
    assert manifest["examples"] == [f"doc-a -> {first}:1", f"doc-c -> {second}:2"]
    assert manifest["ngram"] == 13 and [f["too_short"] for f in manifest["files"]] == [0, 1]

    # A worker process gets the index pickled: it matches the same there.
    copy = pickle.loads(pickle.dumps(decontaminator))
    assert copy.check("doc-d", " ".join(words(60, 20))) == EvalLocation(str(first), 1)

    other = DecontaminationReport()
    for i in range(MAX_EXAMPLES):
        other.record(f"w{i}", EvalLocation(str(second), 2))
    merged = DecontaminationReport.from_manifest(decontaminator.report.to_manifest()).merge(other)
    assert merged.dropped == 2 + MAX_EXAMPLES
    assert merged.by_file == {str(first): 1, str(second): 1 + MAX_EXAMPLES}
    assert len(merged.examples) == MAX_EXAMPLES and merged.examples[:2] == manifest["examples"]


def test_config_is_validated_with_the_key_named():
    with pytest.raises(ValueError, match="decontamination ngram must be a positive integer, got 0"):
        DecontaminationConfig(ngram=0)
    with pytest.raises(ValueError, match="decontamination min_words must be a positive integer"):
        DecontaminationConfig(min_words=True)
    with pytest.raises(ValueError, match="decontamination files must be a list of paths"):
        DecontaminationConfig(files="eval.jsonl")
    with pytest.raises(ValueError, match="decontamination choices must be one of all, correct"):
        DecontaminationConfig(choices="some")
    with pytest.raises(ValueError, match="decontamination text_unit must be one of line, file"):
        DecontaminationConfig(text_unit="page")
    with pytest.raises(ValueError, match="unknown decontamination option 'n'"):
        DecontaminationConfig.from_dict({"n": 13})
    assert DecontaminationConfig.from_dict({"ngram": 8}).ngram == 8
    assert not DecontaminationConfig().enabled
    assert Decontaminator(DecontaminationConfig()).check("d", "any text at all") is None
