"""The benchmark scripts run end to end on a small slice (their numbers are recorded in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_prepare_throughput_benchmark_writes_its_json(tmp_path: Path):
    output = tmp_path / "result.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "prepare_throughput.py"),
        "--output",
        str(output),
        "--max_documents",
        "40",
        "--repeats",
        "1",
        "--seq_len",
        "64",
        "--batch_size",
        "4",
        "--loader_batches",
        "5",
    ]
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(output.read_text())
    for key in (
        "pipeline_mb_s",
        "tokenizer_mb_s",
        "ratio",
        "near_dedup_mb_s",
        "loader_tokens_per_s_2_workers",
    ):
        assert result[key] > 0
    assert result["ratio"] == pytest.approx(result["pipeline_mb_s"] / result["tokenizer_mb_s"], rel=1e-6)
    assert "ratio" in completed.stdout
