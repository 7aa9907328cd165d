"""One convention for user errors at the command line: `lit-pretrain VERB: error: ...`, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lit_pretrain.cli import DEBUG_ENV, main
from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import fit_args


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["generate", "--checkpoint", "{tmp}/missing.ckpt"],
            "lit-pretrain generate: error: no checkpoint at",
        ),
        (["data", "inspect", "{tmp}/nowhere"], "lit-pretrain data: error: .*nowhere"),
        (["prepare", "{tmp}/missing.txt", "--output_dir", "{tmp}/out"], "lit-pretrain prepare: error: "),
    ],
    ids=["generate", "data", "prepare"],
)
def test_a_user_error_is_one_line_naming_the_verb(tmp_path: Path, argv: list[str], message: str):
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit, match=message) as exit_info:
        main(argv)
    assert "\n" not in str(exit_info.value).split("error: ", 1)[1].splitlines()[0]


def test_fit_on_an_unprepared_directory_is_a_user_error(tmp_path: Path):
    with pytest.raises(SystemExit, match=r"lit-pretrain fit: error: .*does not exist: prepare one with"):
        main(fit_args(tmp_path / "nowhere", tmp_path / "run"))


def test_the_command_line_prints_no_traceback_unless_asked(tmp_path: Path):
    command = [sys.executable, "-m", "lit_pretrain.cli", "generate", "--checkpoint", str(tmp_path / "x.ckpt")]
    plain = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0
    assert "lit-pretrain generate: error: no checkpoint at" in plain.stderr
    assert "Traceback" not in plain.stderr
    debug = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env={**_env(), DEBUG_ENV: "1"}
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
