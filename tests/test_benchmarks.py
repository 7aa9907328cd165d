"""The benchmark scripts run end to end on a small slice (their numbers are recorded in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT


def run_benchmark(script: str, tmp_path: Path, *args: str) -> tuple[dict, str]:
    """Run benchmarks/`script` with `args` and `--output`; returns its JSON and its printed table."""
    output = tmp_path / "result.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / script), "--output", str(output), *args]
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(output.read_text()), completed.stdout


@pytest.mark.slow
def test_prepare_throughput_benchmark_writes_its_json(tmp_path: Path):
    result, printed = run_benchmark(
        "prepare_throughput.py",
        tmp_path,
        *("--max_documents", "40", "--repeats", "1"),
        *("--seq_len", "64", "--batch_size", "4", "--loader_batches", "5"),
    )
    for key in (
        "pipeline_mb_s",
        "tokenizer_mb_s",
        "ratio",
        "near_dedup_mb_s",
        "loader_tokens_per_s_2_workers",
    ):
        assert result[key] > 0
    assert result["ratio"] == pytest.approx(result["pipeline_mb_s"] / result["tokenizer_mb_s"], rel=1e-6)
    assert "ratio" in printed


@pytest.mark.slow
def test_training_overhead_benchmark_writes_its_json(tmp_path: Path):
    result, printed = run_benchmark(
        "training_overhead.py",
        tmp_path,
        *("--rounds", "1", "--steps", "3", "--warmup_steps", "2", "--max_documents", "30"),
    )
    assert set(result["configurations"]) == {"tiny", "micro"}
    for name, row in result["configurations"].items():
        assert row["lightning_step_ms"] > 0 and row["raw_step_ms"] > 0 and row["timed_steps"] == 3
        assert row["ratio"] == pytest.approx(row["lightning_step_ms"] / row["raw_step_ms"])
        assert name in printed


def test_gpu_benchmark_dry_run_on_cpu(tmp_path: Path):
    result, _ = run_benchmark("gpu_throughput.py", tmp_path, "--dry-run")
    assert result["dry_run"] is True
    runs = {(r["model"], r["activation_checkpointing_every"]) for r in result["runs"]}
    assert runs == {("gpt2-debug", 0), ("gpt2-debug", 1), ("llama-debug", 0), ("llama-debug", 1)}
    assert all(r["tokens_per_second"] > 0 and r["tflops"] > 0 and r["mfu"] is None for r in result["runs"])


def test_gpu_benchmark_runs_a_chosen_subset(tmp_path: Path):
    result, _ = run_benchmark(
        "gpu_throughput.py",
        tmp_path,
        "--dry-run",
        "--models",
        "llama-debug",
        "--activation_checkpointing",
        "off",
    )
    assert [(r["model"], r["activation_checkpointing_every"]) for r in result["runs"]] == [("llama-debug", 0)]
