"""prepare with worker processes (--num_proc) writes exactly what one process writes, byte for byte."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lit_pretrain.data import workers
from lit_pretrain.data.dedup import DedupConfig, Deduplicator
from lit_pretrain.data.manifest import summary_lines
from lit_pretrain.data.prepare import prepare
from tests.helpers.corpus import prose, write_jsonl_texts
from tests.helpers.outputs import assert_same_output


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory) -> list[str]:
    """Two JSONL sources and a text directory with exact and near duplicates across them, documents the
    filters drop, a malformed record, and enough documents for several batches."""
    root = tmp_path_factory.mktemp("mixed")
    originals = [prose(seed, words=60 + seed % 50) for seed in range(700)]
    near = originals[3].replace("model", "models", 1)
    write_jsonl_texts(root / "a.jsonl", originals)
    b = [
        originals[0],
        originals[1].upper(),
        near,
        "too short",
        "again\n" * 40,
        *(prose(s) for s in range(900, 960)),
    ]
    write_jsonl_texts(root / "b.jsonl", b)
    with open(root / "b.jsonl", "a") as file:
        file.write('{"text": "unterminated\n')
    (root / "notes").mkdir()
    for index in range(5):
        (root / "notes" / f"{index}.txt").write_text(prose(2000 + index) + "e\u0301 accents\n")
    return [str(root / "a.jsonl"), str(root / "b.jsonl"), str(root / "notes")]


@pytest.mark.parametrize("given_tokenizer", [False, True], ids=["trained-bpe", "given-tokenizer"])
def test_two_processes_write_the_bytes_one_process_writes(
    mixed_inputs, tmp_path: Path, given_tokenizer, monkeypatch
):
    # Small batches, so that the work is really spread over both processes and comes back in pieces.
    monkeypatch.setattr(workers, "BATCH_DOCUMENTS", 32)
    options = dict(vocab_size=400, val_fraction=0.05, dedup={"exact": True, "near": True})
    one = prepare(mixed_inputs, tmp_path / "one", **options)
    assert (
        one["exact_duplicates"] == 2
        and one["near_duplicates"] == 1
        and one["malformed_records"]["count"] == 1
    )
    assert one["filtered"] and one["cleaned"], "the filters and the cleaning ran"
    if given_tokenizer:
        options["tokenizer"] = tmp_path / "one" / "tokenizer.json"
        prepare(mixed_inputs, tmp_path / "reference", **options)
        one_dir = tmp_path / "reference"
    else:
        one_dir = tmp_path / "one"
    prepare(mixed_inputs, tmp_path / "two", num_proc=2, **options)
    assert_same_output(one_dir, tmp_path / "two")  # manifest.json included: counts, filters, sources


def test_num_proc_must_be_a_positive_count(tmp_path: Path):
    with pytest.raises(ValueError, match="num_proc"):
        prepare(["python-stdlib"], tmp_path / "out", num_proc=0)
    assert not (tmp_path / "out").exists()


def test_keys_computed_elsewhere_give_the_same_decisions_as_check():
    config = DedupConfig(exact=True, near=True)
    texts = [prose(1), prose(2), prose(1), prose(2).replace("model", "models", 1), prose(3)]
    checking, deciding, keying = Deduplicator(config), Deduplicator(config), Deduplicator(config)
    assert [checking.check(t) for t in texts] == [None, None, "exact", "near", None]
    assert [deciding.decide(keying.keys([t]))[0] for t in texts] == [None, None, "exact", "near", None]
    assert deciding.counts == checking.counts
    # One batch: each document is decided against the earlier ones of its own batch too.
    in_one_batch = Deduplicator(config)
    assert in_one_batch.decide(keying.keys(texts)) == [None, None, "exact", "near", None]
    assert in_one_batch.counts == checking.counts


def test_ordered_map_keeps_order_and_bounds_the_work_in_flight():
    consumed = []

    def items():
        for index in range(20):
            consumed.append(index)
            yield index, index

    with ThreadPoolExecutor(2) as pool:
        results = workers.ordered_map(lambda x: x * x, items(), pool, in_flight=3)
        first = next(results)
        assert first == (0, 0) and len(consumed) == 3, "only the window was read ahead"
        assert [first, *results] == [(i, i * i) for i in range(20)]


def test_identified_languages_are_counted_per_source_with_any_number_of_processes(tmp_path: Path):
    english = "The committee met on Tuesday and agreed that the new library should open in the spring. " * 3
    french = (
        "Le comité s'est réuni mardi et a convenu que la nouvelle bibliothèque ouvrirait au printemps. " * 3
    )
    write_jsonl_texts(tmp_path / "news.jsonl", [english, french, english.replace("Tuesday", "Friday")])
    options = dict(vocab_size=300, val_fraction=0, filters={"count_languages": True, "min_stop_words": None})
    for num_proc in (1, 2):
        manifest = prepare(
            [str(tmp_path / "news.jsonl")], tmp_path / f"out{num_proc}", num_proc=num_proc, **options
        )
        assert manifest["sources"]["news"]["language_counts"] == {"en": 2, "fr": 1}
        assert manifest["language_counts"] == {"en": 2, "fr": 1}


def test_files_an_input_holds_but_prepare_does_not_read_are_counted_by_extension(tmp_path: Path):
    tree = tmp_path / "project"
    (tree / "src" / "img").mkdir(parents=True)
    (tree / "README.md").write_text(prose(1))
    (tree / "src" / "main.py").write_text("def main():\n    return 1\n" * 5)
    for index in range(3):
        (tree / "src" / f"config{index}.yaml").write_text("key: value\n")
    (tree / "src" / "img" / "logo.PNG").write_bytes(b"\x89PNG")
    (tree / "Makefile").write_text("all:\n")
    write_jsonl_texts(tmp_path / "more.jsonl", [prose(2)])
    for num_proc in (1, 2):
        manifest = prepare(
            [str(tree), f"code:{tree / 'src'}:.py", str(tmp_path / "more.jsonl")],
            tmp_path / f"out{num_proc}",
            vocab_size=300,
            val_fraction=0,
            num_proc=num_proc,
        )
        # The directory input passes over the YAML files, the image and the Makefile; the code input
        # (only .py) passes over the YAML files and the image again.
        assert manifest["unread_files"] == {".yaml": 6, ".png": 2, "": 1}
    assert (
        "files not read (extension prepare does not read): .yaml 6, .png 2, (no extension) 1"
        in summary_lines(manifest)
    )
