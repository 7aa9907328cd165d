"""Step checkpoints kept by retention, the final step saved, `last` pointing at the newest."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_pretrain.cli import main
from tests.helpers.runs import fit_args


def test_retention_keeps_the_last_k_and_every_mth(small_corpus: Path, tmp_path: Path):
    main(
        fit_args(
            small_corpus,
            tmp_path,
            *("--trainer.max_steps", "9", "--trainer.val_check_interval", "100"),
            *("--checkpoint.every_n_train_steps", "1", "--checkpoint.keep_last", "2"),
            *("--checkpoint.keep_every", "4"),
        )
    )
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step-0000004.ckpt", "step-0000008.ckpt", "step-0000009.ckpt"]
    assert (tmp_path / "checkpoints" / "last.ckpt").resolve().name == "step-0000009.ckpt"


def test_keeping_fewer_than_two_checkpoints_is_refused(small_corpus: Path, tmp_path: Path):
    with pytest.raises(SystemExit, match="keep_last must be at least 2"):
        main(fit_args(small_corpus, tmp_path, "--checkpoint.keep_last", "1"))


def test_the_final_step_is_always_saved(small_corpus: Path, tmp_path: Path):
    main(fit_args(small_corpus, tmp_path, "--trainer.max_steps", "4", "--trainer.val_check_interval", "100"))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step-0000003.ckpt", "step-0000004.ckpt"]
    assert (tmp_path / "checkpoints" / "last.ckpt").resolve().name == "step-0000004.ckpt"
