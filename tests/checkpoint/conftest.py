"""A three-step run shared by the checkpoint tests (made once per module that asks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_pretrain.cli import main
from tests.helpers.runs import fit_args


@pytest.fixture(scope="session")
def three_step_run(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("three-steps")
    main(fit_args(small_corpus, run_dir, "--trainer.max_steps", "3", "--trainer.val_check_interval", "100"))
    return run_dir
