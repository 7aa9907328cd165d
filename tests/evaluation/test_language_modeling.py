"""Loss, perplexity and bits per byte: hand-checkable with uniform logits, malformed JSONL lines counted with
file:line, validation shards scored as training scores them (or decoded for another tokenizer)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from litdata import StreamingDataset
from litdata.streaming.item_loader import TokensLoader
from tokenizers import Tokenizer

from lit_pretrain.data.sources import Document, ReadReport
from lit_pretrain.data.tokenizer import train_bpe_tokenizer
from lit_pretrain.evaluation.language_modeling import (
    read_jsonl_texts,
    read_text_files,
    shard_metrics,
    text_metrics,
)
from lit_pretrain.evaluation.models import GPTLanguageModel, checkpoint_model, huggingface_model
from tests.evaluation.conftest import tiny_model

TEXTS = ["def f(x):\n    return x + 1\n" * 16, "naïve café, 東京 — the tokenizer reads bytes.\n"]


def test_uniform_logits_give_log2_vocab_bits_per_token(uniform_checkpoint: Path, tmp_path: Path):
    """With p = 1/512 for every token: loss = ln 512, perplexity = 512, bpb = log2(512) * tokens / bytes."""
    paths = []
    for index, text in enumerate(TEXTS):
        paths.append(tmp_path / f"{index}.txt")
        paths[-1].write_text(text, encoding="utf-8")
    model = checkpoint_model(uniform_checkpoint)
    report = ReadReport()
    result = text_metrics(model, read_text_files([str(p) for p in paths], report), "text", batch_size=2)

    tokens = sum(len(model.tokenizer.encode(text, add_special_tokens=False).ids) for text in TEXTS)
    num_bytes = sum(len(text.encode("utf-8")) for text in TEXTS)
    assert num_bytes > sum(map(len, TEXTS)), "multi-byte characters count as their UTF-8 bytes"
    assert tokens > 2 * model.max_length, "long enough for several windows"
    assert (result.tokens, result.bytes, result.documents) == (tokens, num_bytes, 2)
    assert result.loss == pytest.approx(math.log(512), rel=1e-6)
    assert result.perplexity == pytest.approx(512, rel=1e-5)
    assert result.bits_per_byte == pytest.approx(9 * tokens / num_bytes, rel=1e-6)


def test_a_directory_of_text_files_is_one_document_per_file(tmp_path: Path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("alpha")
    (tmp_path / "docs" / "b.md").write_text("beta")
    (tmp_path / "docs" / "skip.bin").write_bytes(b"\x00")
    documents = read_text_files([str(tmp_path / "docs")], ReadReport())
    assert [d.text for d in documents] == ["alpha", "beta"]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_text_files([str(tmp_path / "missing.txt")], ReadReport())


def test_malformed_jsonl_lines_are_counted_with_file_and_line(random_checkpoint: Path, tmp_path: Path):
    path = tmp_path / "held.jsonl"
    lines = [
        json.dumps({"meta": {"body": TEXTS[0]}}),
        "{not json",
        json.dumps({"meta": {"title": "no body"}}),
        json.dumps({"meta": {"body": 42}}),
        "",
        json.dumps({"meta": {"body": TEXTS[1]}}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = checkpoint_model(random_checkpoint)
    report = ReadReport()
    result = text_metrics(model, read_jsonl_texts([str(path)], "meta.body", report), "jsonl", report=report)

    assert result.documents == 2
    assert result.skipped["count"] == 3
    assert [location.split(": ")[0] for location in result.skipped["first"]] == [
        f"{path}:2",
        f"{path}:3",
        f"{path}:4",
    ]
    assert "invalid JSON" in result.skipped["first"][0] and "meta.body" in result.skipped["first"][1]
    clean = text_metrics(model, [Document(str(i), "t", "t", t) for i, t in enumerate(TEXTS)], "clean")
    assert result.nats == pytest.approx(clean.nats, rel=1e-9) and result.bytes == clean.bytes


def test_validation_shards_are_scored_as_training_scores_them(random_checkpoint: Path, small_corpus: Path):
    model = checkpoint_model(random_checkpoint)
    results = {r.name: r for r in shard_metrics(model, small_corpus, batch_size=4, limit=5)}
    manifest = json.loads((small_corpus / "manifest.json").read_text())
    assert set(results) == {f"val/{source}" for source in manifest["sources"]}

    tokenizer = Tokenizer.from_file(str(small_corpus / "tokenizer.json"))
    for source in manifest["sources"]:
        dataset = StreamingDataset(
            str(small_corpus / "val" / source), item_loader=TokensLoader(block_size=model.max_length + 1)
        )
        windows = torch.stack([dataset[i].long() for i in range(min(5, len(dataset)))])
        with torch.no_grad():
            logits = model.module(windows[:, :-1])
        nats = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="sum").item()
        num_bytes = sum(
            len(tokenizer.decode(w[1:].tolist(), skip_special_tokens=True).encode()) for w in windows
        )
        result = results[f"val/{source}"]
        assert result.nats == pytest.approx(nats, rel=1e-5)
        assert (result.tokens, result.bytes, result.documents) == (
            windows[:, 1:].numel(),
            num_bytes,
            len(windows),
        )
        assert result.unit == "windows" and "of" in result.notes[0]


def test_another_tokenizer_reads_the_shards_as_decoded_text(small_corpus: Path):
    other = train_bpe_tokenizer(iter(["def f(x):\n    return x\n", "The model reads text.", *TEXTS]), 300)
    model = GPTLanguageModel(
        tiny_model(), other, eos_id=0, bos_id=None, max_length=64, device=torch.device("cpu")
    )
    results = shard_metrics(model, small_corpus, limit=3)
    for result in results:
        assert any("decoded and re-encoded" in note for note in result.notes)
        assert result.unit == "documents" and result.tokens > 0 and result.bytes > 0
        assert 0 < result.bits_per_byte < 20


def test_a_hugging_face_tokenizer_that_encodes_alike_reads_the_shards_by_id(
    hf_dir: Path, random_checkpoint: Path, small_corpus: Path
):
    hf, ours = huggingface_model(hf_dir), checkpoint_model(random_checkpoint)
    assert hf.encoding_sha256 == ours.encoding_sha256, "transformers' no-op post-processor is ignored"
    for result in shard_metrics(hf, small_corpus, limit=3):
        assert result.unit == "windows" and not any("decoded" in note for note in result.notes)


def test_no_text_at_all_is_a_clear_error(random_checkpoint: Path):
    model = checkpoint_model(random_checkpoint)
    with pytest.raises(ValueError, match="no document with any text"):
        text_metrics(model, [Document("a", "t", "t", "")], "empty")


def test_scoring_in_chunks_changes_nothing(
    random_checkpoint: Path, hf_dir: Path, small_corpus: Path, monkeypatch
):
    import lit_pretrain.evaluation.language_modeling as language_modeling

    documents = [Document(str(i), "t", "t", text) for i, text in enumerate(TEXTS * 3)]
    for model in (checkpoint_model(random_checkpoint), huggingface_model(hf_dir)):
        whole = [text_metrics(model, documents, "t"), *shard_metrics(model, small_corpus, limit=5)]
        monkeypatch.setattr(language_modeling, "CHUNK", 2)
        chunked = [text_metrics(model, documents, "t"), *shard_metrics(model, small_corpus, limit=5)]
        monkeypatch.undo()
        for a, b in zip(whole, chunked, strict=True):
            assert (a.tokens, a.bytes, a.documents) == (b.tokens, b.bytes, b.documents)
            assert a.nats == pytest.approx(b.nats, rel=1e-6)
