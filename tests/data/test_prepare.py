"""`prepare`: real litdata shards read back by litdata, manifest, determinism and bad input."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from litdata import StreamingDataset
from litdata.streaming.item_loader import TokensLoader
from tokenizers import Tokenizer

from lit_pretrain.data.filters import FilterConfig
from lit_pretrain.data.prepare import prepare, read_documents, split_documents
from lit_pretrain.data.sources import ReadReport, python_stdlib_code, python_stdlib_prose, stdlib_python_files
from lit_pretrain.data.tokenizer import tokenizer_sha256
from tests.helpers.corpus import prose


def _tree_hashes(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _all_tokens(split_dir: Path) -> np.ndarray:
    """Every token of a split, in order, read back through litdata itself."""
    dataset = StreamingDataset(str(split_dir), item_loader=TokensLoader(block_size=1), shuffle=False)
    return np.array([int(dataset[i][0]) for i in range(len(dataset))])


def test_stdlib_sources_are_real_and_carry_provenance():
    files = stdlib_python_files()
    assert len(files) > 500 and all("site-packages" not in str(f) for f in files)
    code = next(python_stdlib_code(ReadReport()))
    assert code.source == "python-stdlib-code" and Path(code.origin).is_file() and code.text
    prose = list(python_stdlib_prose(ReadReport()))
    assert any(d.id.startswith("pydoc-topic:") for d in prose), "pydoc topic texts are part of the prose"
    assert all(d.source == "python-stdlib-prose" and d.origin for d in prose[:100])
    assert len({d.id for d in prose}) == len(prose)


def test_manifest_describes_the_shards(small_corpus: Path):
    manifest = json.loads((small_corpus / "manifest.json").read_text())
    tokenizer = Tokenizer.from_file(str(small_corpus / "tokenizer.json"))
    assert manifest["vocab_size"] == tokenizer.get_vocab_size() == 512
    assert manifest["dtype"] == "uint16"
    assert manifest["tokenizer_sha256"] == tokenizer_sha256(tokenizer)
    assert set(manifest["sources"]) == {"python-stdlib-code", "python-stdlib-prose"}
    for key in ("documents_in", "documents_kept", "exact_duplicates", "near_duplicates", "filtered"):
        assert key in manifest
    assert manifest["documents_in"] == 80
    dropped = manifest["exact_duplicates"] + manifest["near_duplicates"] + sum(manifest["filtered"].values())
    assert manifest["documents_kept"] == manifest["documents_in"] - dropped
    for split in ("train", "val"):
        assert manifest[f"tokens_{split}"] == manifest["splits"][split]["tokens"]
        for name, source in manifest["sources"].items():
            on_disk = len(_all_tokens(small_corpus / split / name)) if source[split]["tokens"] else 0
            assert source[split]["tokens"] == on_disk
    kept = manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"]
    assert kept == manifest["documents_kept"]


def test_token_stream_is_each_document_then_eos(small_corpus: Path, tmp_path: Path):
    unfiltered = tmp_path / "unfiltered"
    manifest = prepare(
        ["python-stdlib"],
        unfiltered,
        tokenizer=small_corpus / "tokenizer.json",
        val_fraction=0.1,
        max_documents_per_source=40,
        filters=FilterConfig.disabled(),
        dedup={"exact": False},
    )
    tokenizer = Tokenizer.from_file(str(small_corpus / "tokenizer.json"))
    documents = read_documents(["python-stdlib"], max_documents_per_source=40)
    train_docs = [
        d for d in split_documents(documents, val_fraction=0.1)["train"] if d.source == "python-stdlib-code"
    ]
    expected = []
    for document in train_docs:
        expected.extend(tokenizer.encode(document.text, add_special_tokens=False).ids)
        expected.append(manifest["eos_id"])
    tokens = _all_tokens(unfiltered / "train" / "python-stdlib-code")
    np.testing.assert_array_equal(tokens, np.array(expected))
    assert int((tokens == manifest["eos_id"]).sum()) == len(train_docs)
    # Byte-level BPE round-trips the text exactly.
    first = tokens[: int(np.argmax(tokens == manifest["eos_id"]))]
    assert tokenizer.decode(first.tolist()) == train_docs[0].text


def test_validation_split_is_by_id_hash_and_stable():
    documents = read_documents(["python-stdlib"], max_documents_per_source=40)
    first = split_documents(documents, 0.2)
    second = split_documents(list(reversed(documents)), 0.2)
    assert {d.id for d in first["val"]} == {d.id for d in second["val"]}
    assert 0 < len(first["val"]) < len(documents)


def test_two_runs_give_identical_files(tmp_path: Path, small_corpus: Path):
    again = tmp_path / "again"
    prepare(["python-stdlib"], again, vocab_size=512, val_fraction=0.1, max_documents_per_source=40)
    assert _tree_hashes(again) == _tree_hashes(small_corpus)


def test_existing_tokenizer_is_reused(tmp_path: Path, small_corpus: Path):
    text_dir = tmp_path / "texts"
    text_dir.mkdir()
    (text_dir / "a.txt").write_text(prose(seed=1))
    (text_dir / "b.md").write_text("# Notes\n\n" + prose(seed=2))
    output = tmp_path / "mine"
    manifest = prepare([str(text_dir)], output, tokenizer=small_corpus / "tokenizer.json", val_fraction=0.5)
    source_manifest = json.loads((small_corpus / "manifest.json").read_text())
    assert manifest["tokenizer_sha256"] == source_manifest["tokenizer_sha256"]
    assert (
        manifest["sources"]["texts"]["train"]["documents"] + manifest["sources"]["texts"]["val"]["documents"]
        == 2
    )
    assert (output / "tokenizer.json").read_bytes() == (small_corpus / "tokenizer.json").read_bytes()


def test_source_with_no_documents_is_a_clear_error(tmp_path: Path):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    (empty_dir / "blank.txt").write_text("   \n\n")
    with pytest.raises(ValueError, match=r"source 'empty' .* has no documents"):
        prepare([str(empty_dir)], tmp_path / "out", vocab_size=300)
    assert not (tmp_path / "out").exists(), "a failed prepare leaves no dataset behind"


def test_missing_input_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        prepare([str(tmp_path / "does-not-exist")], tmp_path / "out", vocab_size=300)


def test_existing_output_needs_overwrite(tmp_path: Path, small_corpus: Path):
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare(["python-stdlib"], small_corpus, vocab_size=512, max_documents_per_source=2)


def test_prepare_cli_reads_positional_inputs_and_config(tmp_path: Path, capsys):
    from lit_pretrain.cli import main

    text = tmp_path / "story.txt"
    text.write_text(prose(seed=3))
    main(
        [
            "prepare",
            str(text),
            "--output_dir",
            str(tmp_path / "out"),
            "--vocab_size",
            "300",
            "--val_fraction",
            "0",
        ]
    )
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["splits"]["train"]["documents"] == 1
    assert "total" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="already exists"):
        main(["prepare", str(text), "--output_dir", str(tmp_path / "out")])


@pytest.mark.slow
def test_full_builtin_corpus_is_deterministic(tmp_path: Path):
    """The whole python-stdlib corpus, prepared three times (in one process, in two, and as 4 tasks on
    datatrove's executor), gives byte-identical shards and manifest. The BPE is trained once: the other
    two runs are given it (training on the same texts in every mode is tested on smaller corpora), which
    keeps this test inside CI's budget."""
    first = prepare(["python-stdlib"], tmp_path / "a", vocab_size=8192)
    tokenizer = tmp_path / "a" / "tokenizer.json"
    prepare(["python-stdlib"], tmp_path / "b", tokenizer=tokenizer, num_proc=2)
    prepare(["python-stdlib"], tmp_path / "c", tokenizer=tokenizer, tasks=4, num_proc=2)
    assert first["splits"]["train"]["tokens"] > 5_000_000
    assert _tree_hashes(tmp_path / "a") == _tree_hashes(tmp_path / "b") == _tree_hashes(tmp_path / "c")


def test_prepare_cli_num_workers_sets_tokenizer_threads(tmp_path: Path, monkeypatch, capsys):
    from lit_pretrain.cli import main

    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    text = tmp_path / "story.txt"
    text.write_text(prose(seed=4))
    args = [
        "prepare",
        str(text),
        "--output_dir",
        str(tmp_path / "out"),
        "--vocab_size",
        "300",
        "--val_fraction",
        "0",
    ]
    main([*args, "--num_workers", "1"])
    assert os.environ["RAYON_NUM_THREADS"] == "1"
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--num_workers", "0", "--overwrite", "true"])
    assert exit_info.value.code != 0 and "--num_workers must be at least 1, got 0" in capsys.readouterr().err
