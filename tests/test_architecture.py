"""The package's shape: import layers (import-linter), a pure-PyTorch model, private names only in _compat/."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "lit_pretrain"
FENCED = ("lightning", "litdata")


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_compat" not in p.parts)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_import_layers_hold():
    """The import-linter contracts of pyproject.toml (what `make lint` and CI run)."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    completed = subprocess.run([str(lint_imports)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_the_model_imports_no_distributed_code():
    for path in sorted((PACKAGE / "model").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(
                    ("torch.distributed", "lightning", "litdata", "lit_pretrain.")
                ) or (name.startswith("lit_pretrain.model")), f"{path.relative_to(REPO_ROOT)} imports {name}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_here() -> set[str]:
    """Private names lit_pretrain defines itself (functions, classes, attributes it assigns)."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {n for n in names if _private(n)}


@functools.cache
def _fenced_private_names() -> frozenset[str]:
    """Private names lightning and litdata define: functions, classes, module globals, attributes."""
    pattern = re.compile(r"(?:def |class |self\.|^)(_[A-Za-z]\w*)\s*(?:\(|=|:)", re.M)
    names: set[str] = set()
    for package in FENCED:
        root = Path(importlib.import_module(package).__file__).parent
        for path in root.rglob("*.py"):
            names.update(n for n in pattern.findall(path.read_text(errors="replace")) if _private(n))
    return frozenset(names)


def _fenced_bases(cls: type) -> list[type]:
    return [base for base in cls.__mro__[1:] if base.__module__.split(".")[0] in FENCED]


def private_uses(path: Path) -> list[str]:
    """Every use of a private lightning/litdata name in one module, as `file:line: what`."""
    where = path.relative_to(REPO_ROOT)
    tree = ast.parse(path.read_text())
    defined = _defined_here()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FENCED:
            parts = (node.module or "").split(".")
            for alias in node.names:
                if _private(alias.name) or any(_private(p) for p in parts):
                    found.append(f"{where}:{node.lineno}: imports {node.module}.{alias.name}")
        elif (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and node.attr not in defined
            and node.attr in _fenced_private_names()
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.append(f"{where}:{node.lineno}: reads .{node.attr}")
    if path.name == "__main__.py":
        return found  # importing it would run the program
    # Private names a class shares with a Lightning/litdata base: overriding or reading their internals.
    module = importlib.import_module(module_name(path))
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ != module.__name__:
            continue
        bases = _fenced_bases(cls)
        if not bases:
            continue
        base_source = "\n".join(inspect.getsource(base) for base in bases)
        own = ast.parse(inspect.getsource(cls))
        for node in ast.walk(own):
            name = None
            if isinstance(node, ast.FunctionDef) and _private(node.name):
                name = node.name
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                name = node.attr
            if name and (any(hasattr(base, name) for base in bases) or f"self.{name}" in base_source):
                found.append(f"{where}: {cls.__name__} uses {bases[0].__name__}'s private {name}")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_lightning_or_litdata_name_outside_compat(path: Path):
    assert private_uses(path) == [], "move these into lit_pretrain/_compat/ (with a test in tests/_compat/)"


def test_the_check_catches_a_private_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The checker itself: a module reading Lightning's private state is reported."""
    probe = PACKAGE / "cli" / "_probe_private_use.py"
    probe.write_text(
        "from lightning.fabric.utilities.load import _load_distributed_checkpoint\n\n\n"
        "def should_log(trainer):\n    return trainer._logger_connector.should_update_logs\n"
    )
    try:
        uses = private_uses(probe)
    finally:
        probe.unlink()
        sys.modules.pop("lit_pretrain.cli._probe_private_use", None)
    assert any("_load_distributed_checkpoint" in use for use in uses)
    assert any("._logger_connector" in use for use in uses)
