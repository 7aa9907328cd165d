"""`--model.document_mask true` in a real `fit`: the EOS id comes from the data, checkpoints keep the mask."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.runs import fit_args, make_two_source_corpus, run_fit, step_losses


@pytest.fixture(scope="module")
def docstrings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Short documents (docstrings), so that windows of 64 tokens cross document boundaries."""
    return make_two_source_corpus(tmp_path_factory.mktemp("docstrings"))


def _fit(data_dir: Path, run_dir: Path, *extra: str) -> dict[int, float]:
    steps = ("--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--data.seq_len", "64")
    run_fit(fit_args(data_dir, run_dir, *steps, *extra))
    return step_losses(run_dir)[0]


@pytest.mark.slow  # make test stays under 10 min on 2 cores; runs in make test-slow
def test_document_masking_reads_the_eos_id_from_the_data_and_changes_attention(
    docstrings: Path, tmp_path: Path
):
    eos_id = json.loads((docstrings / "manifest.json").read_text())["eos_id"]
    masked = _fit(docstrings, tmp_path / "masked", "--model.document_mask", "true")
    plain = _fit(docstrings, tmp_path / "plain")
    # The windows hold document boundaries: attention that stops at them gives another first-step loss.
    assert masked[0] != pytest.approx(plain[0], abs=1e-6)
    checkpoint = torch.load(tmp_path / "masked" / "checkpoints" / "last.ckpt", weights_only=True)
    overrides = checkpoint["hyper_parameters"]["model_overrides"]
    assert overrides["document_mask"] is True and overrides["eos_token_id"] == eos_id
    assert overrides["document_positions"] is False


@pytest.mark.slow
def test_document_positions_without_the_mask_is_refused(docstrings: Path, tmp_path: Path):
    with pytest.raises(
        AssertionError, match="--model.document_positions .* needs --model.document_mask true"
    ):
        _fit(docstrings, tmp_path / "run", "--model.document_positions", "true")
