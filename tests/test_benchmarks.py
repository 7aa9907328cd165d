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
    assert result["mb_s_1_proc"] > 0 and result["mb_s_2_proc"] > 0 and result["process_speedup"] > 0
    assert result["mb_s_tasks"] > 0 and result["tasks_speedup"] > 0
    assert result["mb_s_1_core"] > 0 and result["core_speedup"] > 0
    assert "1 core -> 2 cores" in printed
    assert set(result["stage_mb_s_one_core"]) == {
        "read",
        "filter",
        "dedup_keys",
        "dedup_decide",
        "tokenize",
        "write",
    }
    assert "--num_proc 2" in printed
    assert "ratio" in printed
    assert list(result["phase_seconds_one_core"]) == [
        "screen",
        "dedup",
        "decide",
        "tokenize",
        "write",
        "merge",
    ]
    assert len(result["phase_seconds_one_core"]["dedup"]) == 4 and result["decide_us_per_document"] > 0
    assert "decide, per document" in printed


@pytest.mark.slow
def test_task_serial_phases_benchmark_writes_its_json(tmp_path: Path):
    result, printed = run_benchmark("task_serial_phases.py", tmp_path, "--documents", "300", "--tasks", "2")
    sizes = list(result["sizes"].values())
    assert [size["documents"] for size in sizes] == [300, 1200]
    assert all(0 < size["kept"] < size["documents"] for size in sizes), "duplicates were flagged"
    assert set(sizes[0]["seconds"]) == {"screen", "dedup", "decide", "tokenize", "write", "merge"}
    assert result["decide_us_per_document"] == pytest.approx(
        1e6 * (sizes[1]["seconds"]["decide"][0] - sizes[0]["seconds"]["decide"][0]) / 900
    )
    assert "decide, per extra document" in printed
    assert sizes[1]["chunks"] > 4 * sizes[0]["chunks"] / 2, "chunks of 2**12 tokens: their number grows"


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


def load_benchmark(script: str):
    """Import benchmarks/`script` as a module (benchmarks/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO_ROOT / "benchmarks" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_efficiency_finds_the_first_crossing_between_validations():
    bench = load_benchmark("recipe_efficiency.py")
    steps, losses = [20, 40, 60, 80], [7.0, 6.0, 5.0, 5.5]
    assert bench.first_crossing(steps, losses, 5.5) == pytest.approx(50.0)  # the first time, not step 80
    assert bench.first_crossing(steps, losses, 6.0) == 40
    assert bench.first_crossing(steps, losses, 7.5) == 20
    assert bench.first_crossing(steps, losses, 4.9) is None
    assert bench.interpolate(50, [0, 40, 60], [0.0, 10.0, 30.0]) == pytest.approx(20.0)


def test_recipe_efficiency_ratios_are_against_the_whole_baseline_run():
    bench = load_benchmark("recipe_efficiency.py")
    baseline = {"final_val_loss": 5.0, "tokens": 1000, "train_seconds": 100.0}
    curve = [
        {"step": 2, "val_loss": 6.0, "train_seconds": 20.0},
        {"step": 4, "val_loss": 4.0, "train_seconds": 60.0},
    ]
    speedrun = {"curve": curve, "tokens_per_step": 100}
    result = bench.compare(baseline, speedrun)
    assert result["crossing_step"] == pytest.approx(3.0)
    assert result["tokens_ratio"] == pytest.approx(0.3)
    assert result["wall_ratio"] == pytest.approx(0.4)
    assert bench.compare({**baseline, "final_val_loss": 3.0}, speedrun)["tokens_ratio"] is None


@pytest.mark.slow
def test_recipe_efficiency_benchmark_writes_its_json(tmp_path: Path, small_corpus: Path):
    result, printed = run_benchmark(
        "recipe_efficiency.py", tmp_path, "--quick", "--data_dir", str(small_corpus)
    )
    assert set(result["runs"]) == {"baseline", "speedrun"}
    for run in result["runs"].values():
        assert run["steps"] == 6 and run["tokens"] == 6 * 8 * 256
        assert [point["step"] for point in run["curve"]] == [3, 6]
        assert run["final_val_loss"] == run["curve"][-1]["val_loss"]
        assert 0 < run["curve"][0]["train_seconds"] < run["train_seconds"] and run["tokens_per_second"] > 0
        assert run["final_full_val_loss"] < run["untrained_full_val_loss"]
    assert result["comparison"]["target_val_loss"] == result["runs"]["baseline"]["final_val_loss"]
    assert "tokens ratio" in printed or "never reached" in printed
    assert (tmp_path / "result.png").stat().st_size > 10_000, "the curves are drawn beside the JSON"
