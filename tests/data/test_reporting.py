"""What prepare reports: log records (not prints), progress lines, and the summary table's lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lit_pretrain.data.manifest import read_manifest, summary_lines
from lit_pretrain.data.prepare import prepare
from lit_pretrain.data.progress import Progress
from tests.helpers.corpus import prose, write_jsonl_texts


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog as the package logger's only handler: the CLI's logging setup (which an earlier test may
    have run) stops records propagating to caplog and prints them, which would hide a stray print."""
    logger = logging.getLogger("lit_pretrain")
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    logger.handlers, logger.propagate = [caplog.handler], False
    logger.setLevel(logging.INFO)
    yield caplog
    logger.handlers, logger.propagate = handlers, propagate
    logger.setLevel(level)


def test_prepare_logs_its_stages_and_prints_nothing(tmp_path: Path, records, capsys):
    write_jsonl_texts(tmp_path / "docs.jsonl", [prose(s) for s in range(5)])
    prepare([str(tmp_path / "docs.jsonl")], tmp_path / "out", vocab_size=300, val_fraction=0)
    assert capsys.readouterr().out == ""
    messages = [r.getMessage() for r in records.records if r.name == "lit_pretrain.data.prepare"]
    assert messages[0].startswith("read, filter, dedup: 5 docs")
    assert messages[1].startswith("trained a byte-level BPE tokenizer with 300 tokens in ")
    assert messages[2].startswith("tokenize: 5 docs") and "100%" in messages[2]
    assert messages[-1] == f"done: {tmp_path / 'out'} (manifest.json, tokenizer.json, train/, val/)"


def test_progress_logs_a_line_each_interval_and_at_the_end(records):
    logger = logging.getLogger("lit_pretrain.data.example")
    progress = Progress("stage", interval=0.0, total=4, logger=logger)
    progress.update(1, 1_000_000)
    progress.update(3, 1_000_000)
    progress.close()
    lines = [r.getMessage() for r in records.records if r.name == logger.name]
    assert len(lines) == 3 and all(r.levelno == logging.INFO for r in records.records)
    assert lines[0].startswith("stage: 1 docs, 1.0 MB (") and ", 25%, ETA " in lines[0]
    assert lines[-1].startswith("stage: 4 docs, 2.0 MB (") and ", 100%, ETA 0s" in lines[-1]


def test_progress_waits_for_the_interval(records):
    progress = Progress("slow", interval=3600.0)
    progress.update(10)
    assert not records.records
    progress.close()
    assert [r.getMessage().split(":")[0] for r in records.records] == ["slow"]
    assert records.records[0].name == "lit_pretrain.data.progress"


MANIFEST = {
    "sources": {
        "web": {
            "documents_in": 1200,
            "documents_kept": 1000,
            "exact_duplicates": 150,
            "near_duplicates": 20,
            "filtered": {"min_chars": 20, "blocklist": 10},
            "train": {"tokens": 1_234_567},
            "val": {"tokens": 8_900},
        },
        "code": {
            "documents_in": 5,
            "documents_kept": 5,
            "exact_duplicates": 0,
            "near_duplicates": 0,
            "filtered": {},
            "train": {"tokens": 700},
            "val": {"tokens": 0},
        },
    },
    "documents_in": 1207,
    "documents_kept": 1005,
    "exact_duplicates": 150,
    "near_duplicates": 20,
    "filtered": {"blocklist": 10, "min_chars": 20},
    "tokens_train": 1_235_267,
    "tokens_val": 8_900,
    "empty_documents": 2,
    "invalid_utf8_documents": 1,
    "malformed_records": {"count": 2, "first": ["a.jsonl:3: invalid JSON", "a.jsonl:9: no string"]},
}


def test_summary_lines_are_a_table_then_what_was_dropped():
    lines = summary_lines(MANIFEST)
    assert lines[0].split() == ["source", "docs", "in", "kept", "exact", "dup", "near", "dup", "filtered"] + [
        "train",
        "tokens",
        "val",
        "tokens",
    ]
    assert lines[1].split() == ["web", "1,200", "1,000", "150", "20", "30", "1,234,567", "8,900"]
    assert lines[2].split() == ["code", "5", "5", "0", "0", "0", "700", "0"]
    assert lines[3].split() == ["total", "1,207", "1,005", "150", "20", "30", "1,235,267", "8,900"]
    assert len({len(line) for line in lines[:4]}) == 1, "the table's columns line up"
    assert lines[4] == "filtered: blocklist 10, min_chars 20"
    assert lines[5] == "empty documents: 2   invalid UTF-8 (replaced): 1   malformed records: 2"
    assert lines[6:] == ["  malformed: a.jsonl:3: invalid JSON", "  malformed: a.jsonl:9: no string"]


def test_summary_lines_of_a_prepared_dataset(small_corpus: Path):
    lines = summary_lines(read_manifest(small_corpus))
    assert [line.split()[0] for line in lines[1:4]] == ["python-stdlib-code", "python-stdlib-prose", "total"]
    assert lines[-1].startswith("empty documents: ")
