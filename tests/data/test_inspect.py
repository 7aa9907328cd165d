"""`decoded_sequences`: the first windows of each source, decoded back to text."""

from __future__ import annotations

from pathlib import Path

from lit_pretrain.data.inspect import decoded_sequences


def test_windows_of_each_source_decode_to_text(small_corpus: Path):
    sequences = decoded_sequences(small_corpus, num_sequences=2, seq_len=16)
    assert [name for name, _ in sequences] == ["python-stdlib-code"] * 2 + ["python-stdlib-prose"] * 2
    assert all(isinstance(text, str) and text for _, text in sequences)
    assert sequences[0][1] != sequences[1][1], "consecutive windows, not the same one twice"


def test_a_source_with_fewer_tokens_than_a_window_is_skipped(small_corpus: Path):
    assert decoded_sequences(small_corpus, num_sequences=1, seq_len=10**9, split="val") == []
