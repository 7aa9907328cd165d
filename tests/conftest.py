"""Shared fixtures: a small prepared slice of the built-in corpus, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.models import TEST_MODEL_OVERRIDES  # noqa: F401  (re-exported for fixtures)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 documents of each python-stdlib source, with a 512-token BPE."""
    from lit_pretrain.data.prepare import prepare

    output_dir = tmp_path_factory.mktemp("corpus") / "stdlib-small"
    prepare(["python-stdlib"], output_dir, vocab_size=512, val_fraction=0.1, max_documents_per_source=40)
    return output_dir
