"""prepare end to end: planted duplicates, filters in the manifest, BOS/EOS, huge documents, interruption,
val inputs, inspection, and training on a mixture with per-source logging."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from litdata import StreamingDataset
from litdata.streaming.item_loader import TokensLoader
from tokenizers import Tokenizer

from lit_pretrain.cli import main
from lit_pretrain.data.prepare import prepare
from tests.helpers.corpus import prose, write_jsonl_texts
from tests.helpers.paths import REPO_ROOT


def split_tokens(data_dir: Path, split: str, source: str) -> np.ndarray:
    dataset = StreamingDataset(str(data_dir / split / source), item_loader=TokensLoader(block_size=1))
    return np.array([int(dataset[i][0]) for i in range(len(dataset))])


def test_planted_duplicates_across_sources_are_counted(tmp_path: Path):
    originals = [prose(seed) for seed in range(20)]
    near = originals[3].replace("model", "models", 1)  # one word changed in ~400
    write_jsonl_texts(tmp_path / "a.jsonl", originals)
    write_jsonl_texts(tmp_path / "b.jsonl", [originals[0], originals[1].upper(), near, prose(100)])
    manifest = prepare(
        [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
        tmp_path / "out",
        vocab_size=300,
        dedup={"exact": True, "near": True},
    )
    assert manifest["exact_duplicates"] == 2 and manifest["near_duplicates"] == 1
    assert (
        manifest["sources"]["b"]["exact_duplicates"] == 2 and manifest["sources"]["b"]["near_duplicates"] == 1
    )
    assert (
        manifest["sources"]["a"]["documents_kept"] == 20 and manifest["sources"]["b"]["documents_kept"] == 1
    )
    assert manifest["documents_kept"] == 21


def test_filters_are_counted_per_filter_and_source(tmp_path: Path):
    texts = [prose(1), "too short", "line again\n" * 40, prose(2) + " casino bonus", "%$#@!" * 100]
    write_jsonl_texts(tmp_path / "mixed.jsonl", texts)
    manifest = prepare(
        [str(tmp_path / "mixed.jsonl")],
        tmp_path / "out",
        vocab_size=300,
        val_fraction=0,
        filters={"blocklist": ["CASINO"]},
    )
    assert manifest["filtered"] == {
        "blocklist": 1,
        "duplicate_lines": 1,
        "min_chars": 1,
        "non_alnum_fraction": 1,
    }
    assert manifest["sources"]["mixed"]["filtered"] == manifest["filtered"]
    assert manifest["documents_kept"] == 1


def test_nothing_left_after_filtering_is_an_error_and_writes_nothing(tmp_path: Path):
    write_jsonl_texts(tmp_path / "spam.jsonl", [prose(s) + " casino" for s in range(3)])
    with pytest.raises(ValueError, match=r"no documents left .* dropped by: blocklist 3"):
        prepare(
            [str(tmp_path / "spam.jsonl")],
            tmp_path / "out",
            vocab_size=300,
            filters={"blocklist": ["casino"]},
        )
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_bos_and_eos_frame_every_document(tmp_path: Path):
    texts = [prose(s) for s in range(6)]
    write_jsonl_texts(tmp_path / "docs.jsonl", texts)
    first = prepare([str(tmp_path / "docs.jsonl")], tmp_path / "a", vocab_size=300, val_fraction=0)
    tokenizer_path = tmp_path / "a" / "tokenizer.json"
    # Reuse the tokenizer and mark its EOS as BOS too: every document is then EOS-framed on both sides.
    manifest = prepare(
        [str(tmp_path / "docs.jsonl")],
        tmp_path / "b",
        tokenizer=tokenizer_path,
        bos_token="<|endoftext|>",
        val_fraction=0,
    )
    tokens = split_tokens(tmp_path / "b", "train", "docs")
    assert manifest["bos_id"] == manifest["eos_id"] == 0
    assert len(tokens) == first["tokens_train"] + len(texts)
    assert tokens[0] == 0 and tokens[-1] == 0 and int((tokens == 0).sum()) == 2 * len(texts)


def test_enormous_document_is_encoded_in_pieces_and_round_trips(tmp_path: Path):
    huge = "".join(prose(s, words=60) for s in range(3_500))  # ~1.15M characters in one document
    assert len(huge) > 1_000_000
    write_jsonl_texts(tmp_path / "huge.jsonl", [huge, prose(7)])
    # The synthetic text (a 15-word vocabulary) is far too long and repetitive for the prose filters.
    filters = {"max_words": None, "max_duplicate_ngram_fraction": None}
    prepare([str(tmp_path / "huge.jsonl")], tmp_path / "out", vocab_size=300, val_fraction=0, filters=filters)
    tokenizer = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    tokens = split_tokens(tmp_path / "out", "train", "huge").tolist()
    first_document = tokens[: tokens.index(0)]
    assert tokenizer.decode(first_document) == huge


def test_val_inputs_are_validation_only_sources(tmp_path: Path):
    write_jsonl_texts(tmp_path / "train-text.jsonl", [prose(s) for s in range(10)])
    write_jsonl_texts(tmp_path / "heldout.jsonl", [prose(s) for s in range(50, 53)])
    manifest = prepare(
        [str(tmp_path / "train-text.jsonl")],
        tmp_path / "out",
        vocab_size=300,
        val_fraction=0,
        val_inputs=[str(tmp_path / "heldout.jsonl")],
    )
    assert manifest["sources"]["heldout"]["train"]["documents"] == 0
    assert manifest["sources"]["heldout"]["val"]["documents"] == 3
    assert manifest["sources"]["train-text"]["val"]["documents"] == 0


def test_interrupted_prepare_leaves_nothing_training_accepts_and_reruns_cleanly(tmp_path: Path):
    inputs = [str(write_jsonl_texts(tmp_path / "big.jsonl", [prose(s, words=2000) for s in range(400)]))]
    output = tmp_path / "out"
    code = (
        "from lit_pretrain.data.prepare import prepare; "
        f"prepare({inputs!r}, {str(output)!r}, vocab_size=4000)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT)
    partial = tmp_path / "out.partial"

    def bytes_written() -> int:
        return sum(f.stat().st_size for f in partial.rglob("*") if f.is_file()) if partial.exists() else 0

    # Kill it once it has written part of its output (stage 1 spools kept documents into out.partial/).
    deadline = time.time() + 60
    while bytes_written() == 0 and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "prepare finished before it could be killed: make the corpus bigger"
    assert bytes_written() > 0, "prepare wrote nothing within 60 s"
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "prepare must die from the kill, not finish on its own"
    # The kill really was mid-run: the half-written directory is still there, the final one never appeared.
    assert bytes_written() > 0 and not (partial / "manifest.json").exists()
    assert not output.exists(), "a killed prepare must not leave the final directory"
    from lit_pretrain.data.manifest import read_manifest

    with pytest.raises(FileNotFoundError):
        read_manifest(output)
    manifest = prepare(inputs, output, vocab_size=300)
    assert manifest["documents_kept"] == 400 and not partial.exists()


def test_data_inspect_prints_statistics_and_decoded_text(small_corpus: Path, capsys):
    main(["data", "inspect", str(small_corpus), "--num_sequences", "1", "--seq_len", "16"])
    out = capsys.readouterr().out
    assert (
        "vocab 512 (uint16)" in out and "python-stdlib-code" in out and "--- train/python-stdlib-prose" in out
    )
    with pytest.raises(SystemExit, match="does not exist"):
        main(["data", "inspect", str(small_corpus.parent / "missing")])


def test_training_on_a_mixture_logs_tokens_per_source_and_val_per_source(tmp_path: Path):
    from tests.helpers.runs import fit_args, scalars

    write_jsonl_texts(tmp_path / "news.jsonl", [prose(s) for s in range(30)])
    write_jsonl_texts(tmp_path / "books.jsonl", [prose(s) for s in range(100, 130)])
    prepare(
        [str(tmp_path / "news.jsonl"), str(tmp_path / "books.jsonl")],
        tmp_path / "data",
        vocab_size=512,
        val_fraction=0.2,
    )
    run = tmp_path / "run"
    main(fit_args(tmp_path / "data", run, "--data.weights", '{"news": 0.75, "books": 0.25}'))
    logged = scalars(run)
    assert {"val/news/loss", "val/books/loss", "val/loss", "data/tokens/news", "data/tokens/books"} <= set(
        logged
    )
    news, books = logged["data/tokens/news"][-1][1], logged["data/tokens/books"][-1][1]
    assert news + books == 6 * 4 * 32 and news > books


def test_resuming_on_data_with_another_tokenizer_is_refused(small_corpus: Path, tmp_path: Path):
    from tests.helpers.runs import fit_args

    run = tmp_path / "run"
    main(fit_args(small_corpus, run, "--trainer.max_steps", "2"))
    write_jsonl_texts(tmp_path / "other.jsonl", [prose(s) for s in range(20)])
    prepare([str(tmp_path / "other.jsonl")], tmp_path / "other", vocab_size=400)
    with pytest.raises(
        SystemExit,
        match=r"cannot resume[\s\S]*data\.tokenizer_sha256: checkpoint '[0-9a-f]+', now '[0-9a-f]+'",
    ):
        main(fit_args(tmp_path / "other", run, "--trainer.max_steps", "4", "--ckpt_path", "last"))


@pytest.mark.parametrize("reuse_tokenizer", [False, True])
def test_small_corpus_still_gets_one_validation_document(
    tmp_path: Path, small_corpus: Path, reuse_tokenizer: bool
):
    from lit_pretrain.data.ledger import id_fraction as _id_fraction

    write_jsonl_texts(tmp_path / "tiny.jsonl", [prose(s) for s in range(3)])
    tokenizer = small_corpus / "tokenizer.json" if reuse_tokenizer else None
    manifest = prepare(
        [str(tmp_path / "tiny.jsonl")],
        tmp_path / "out",
        tokenizer=tokenizer,
        vocab_size=300,
        val_fraction=1e-9,
    )
    assert manifest["splits"]["train"]["documents"] == 2 and manifest["splits"]["val"]["documents"] == 1
    ids = [f"tiny:tiny.jsonl:{line}" for line in (1, 2, 3)]
    lowest = min(range(3), key=lambda i: _id_fraction(ids[i]))
    bpe = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    expected = bpe.encode(prose(lowest), add_special_tokens=False).ids + [manifest["eos_id"]]
    assert split_tokens(tmp_path / "out", "val", "tiny").tolist() == expected


def test_vocabularies_over_65536_are_stored_as_int32(tmp_path: Path, small_corpus: Path):
    big = Tokenizer.from_file(str(small_corpus / "tokenizer.json"))
    big.add_tokens([f"<extra_{i}>" for i in range(70_000)])
    big.save(str(tmp_path / "big.json"))
    text = prose(5) + " <extra_69999> " + prose(6)
    write_jsonl_texts(tmp_path / "docs.jsonl", [text])
    manifest = prepare(
        [str(tmp_path / "docs.jsonl")], tmp_path / "out", tokenizer=tmp_path / "big.json", val_fraction=0
    )
    assert manifest["dtype"] == "int32" and manifest["vocab_size"] > 65_536
    tokens = split_tokens(tmp_path / "out", "train", "docs").tolist()
    assert tokens == big.encode(text, add_special_tokens=False).ids + [manifest["eos_id"]]
    assert max(tokens) > 65_535


@pytest.mark.slow
def test_prepare_memory_does_not_grow_with_corpus_size(tmp_path: Path):
    """Peak memory of prepare on a 4x larger corpus stays about the same: documents and tokens stream."""

    def peak_rss_mb(documents: int) -> float:
        corpus = write_jsonl_texts(
            tmp_path / f"c{documents}" / "docs.jsonl", [prose(s, words=1500) for s in range(documents)]
        )
        code = (
            "import resource; from lit_pretrain.data.prepare import prepare; "
            f"prepare([{str(corpus)!r}], {str(tmp_path / f'out{documents}')!r}, vocab_size=1000); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return int(completed.stdout.strip().splitlines()[-1]) / 1024

    small, large = peak_rss_mb(2_000), peak_rss_mb(8_000)  # ~18 MB and ~72 MB of text
    assert large < small * 1.25 + 50, f"peak RSS grew from {small:.0f} MB to {large:.0f} MB"
