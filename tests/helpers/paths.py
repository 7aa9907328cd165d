"""Where the repository and its configs are, for tests that run commands from the root."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "configs"
