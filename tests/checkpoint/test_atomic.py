"""Atomic checkpoint files: a crash or a failed save never leaves a half-written final file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from lit_pretrain.checkpoint.atomic import atomic_torch_save, remove_leftovers, temporary_path
from lit_pretrain.checkpoint.naming import find_last_checkpoint


def test_atomic_save_leaves_only_the_final_file(tmp_path: Path):
    target = tmp_path / "step-0000001.ckpt"
    atomic_torch_save({"x": torch.arange(3)}, target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert torch.equal(torch.load(target)["x"], torch.arange(3))


def test_failed_save_leaves_the_previous_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "step-0000001.ckpt"
    atomic_torch_save({"x": 1}, target)
    with pytest.raises((pickle.PicklingError, AttributeError), match="lambda"):
        atomic_torch_save({"x": lambda: None}, target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert torch.load(target)["x"] == 1


def test_leftovers_are_removed_and_never_chosen_as_last(tmp_path: Path):
    for step in (3, 7):
        atomic_torch_save({"step": step}, tmp_path / f"step-{step:07d}.ckpt")
    leftover = temporary_path(tmp_path / "step-0000011.ckpt")
    leftover.write_bytes(b"half a checkpoint")
    assert find_last_checkpoint(tmp_path) == tmp_path / "step-0000007.ckpt"
    assert remove_leftovers(tmp_path) == [leftover]
    assert find_last_checkpoint(tmp_path / "missing") is None
