"""The shipped task files are what make_tasks.py makes from this interpreter's standard library."""

from __future__ import annotations

import json
import sys

import pytest

from lit_pretrain.evaluation.tasks import make_tasks

INDEX = json.loads(make_tasks.INDEX.read_text())


@pytest.mark.slow
@pytest.mark.skipif(
    sys.version.split()[0] != INDEX["python"] or sys.implementation.name != INDEX["implementation"],
    reason=f"the tasks were made from the standard library of {INDEX['implementation']} {INDEX['python']}",
)
def test_make_tasks_regenerates_the_shipped_files(tmp_path, capsys):
    assert make_tasks.main(["--check"]) == 0, capsys.readouterr().out
