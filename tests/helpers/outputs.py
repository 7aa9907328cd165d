"""Comparing two prepared datasets file by file."""

from __future__ import annotations

import filecmp
from pathlib import Path


def tree(root: Path) -> list[Path]:
    """Every path under `root`, relative to it, sorted."""
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def assert_same_output(one: Path, other: Path) -> None:
    """The same files with the same bytes."""
    assert tree(one) == tree(other)
    for relative in tree(one):
        if (one / relative).is_file():
            assert filecmp.cmp(one / relative, other / relative, shallow=False), relative
