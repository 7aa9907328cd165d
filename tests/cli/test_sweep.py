"""`lit-pretrain sweep`, `compare` and `scaling fit SWEEP_DIR` on real tiny runs (`fit` in new processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.paths import REPO_ROOT

TINY_CONFIG = str(REPO_ROOT / "configs" / "tiny.yaml")


def _fixed(data_dir: Path) -> dict:
    return {
        "model.model_overrides": dict(TEST_MODEL_OVERRIDES),
        "model.warmup_steps": 2,
        "data.data_dir": str(data_dir),
        "data.seq_len": 32,
        "data.micro_batch_size": 4,
        "data.val_batch_size": 4,
        "data.num_workers": 0,
        "trainer.limit_val_batches": 2,
        "trainer.log_every_n_steps": 1,
        "checkpoint.every_n_train_steps": 2,
    }


def sweep(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """`lit-pretrain sweep ...` in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "lit_pretrain.cli", "sweep", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )


@pytest.fixture(scope="module")
def isoflop_sweep(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Three model widths x two FLOPs budgets (3 to 8 steps each), run once for this module's tests."""
    directory = tmp_path_factory.mktemp("isoflop")
    spec = {
        "name": "isoflop",
        "output_dir": str(directory / "out"),
        "base": [TINY_CONFIG],
        "fixed": {
            **_fixed(small_corpus),
            "trainer.max_steps": -1,
            "trainer.val_check_interval": 1_000_000,  # validated once, when the token budget stops the run
        },
        "grid": {"model.model_overrides.n_embd": [32, 48, 64]},
        "flops_budgets": [2.5e8, 5.0e8],
    }
    path = directory / "isoflop.yaml"
    path.write_text(yaml.safe_dump(spec))
    completed = sweep(str(path))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return directory / "out", completed.stdout


def test_every_run_has_its_directory_resolved_config_and_result(isoflop_sweep):
    out, stdout = isoflop_sweep
    names = [f"n_embd-{width}_C-{budget}" for width in (32, 48, 64) for budget in ("2.5e8", "5e8")]
    assert [entry["name"] for entry in json.loads((out / "sweep.json").read_text())["runs"]] == names
    for name in names:
        config = yaml.safe_load((out / name / "config.yaml").read_text())
        width = int(name.split("_")[1].split("-")[1])
        assert config["model"]["model_overrides"] == {**TEST_MODEL_OVERRIDES, "n_embd": width}
        assert config["trainer"]["default_root_dir"] == str(out / name)
        result = json.loads((out / name / "result.json").read_text())
        assert result["status"] == "finished"
        budget = float(name.split("C-")[1])
        # The token budget C / (6 N), rounded up to whole steps of 4 x 32 tokens.
        assert result["tokens_seen"] == pytest.approx(budget / (6 * result["parameters"]), abs=128)
        assert result["val/loss"] > 0
        assert (out / name / "train.log").is_file()
    assert "6 of 6 runs ok" in stdout
    assert "[1/6 n_embd-32_C-2.5e8] starting" in stdout


@pytest.mark.slow
def test_running_a_finished_sweep_again_skips_every_run(isoflop_sweep):
    out, _ = isoflop_sweep
    before = {path: path.stat().st_mtime for path in out.glob("*/result.json")}
    completed = sweep(str(out.parent / "isoflop.yaml"))
    assert completed.returncode == 0, completed.stdout[-2000:]
    assert completed.stdout.count("finished before: skipped") == 6
    assert {path: path.stat().st_mtime for path in out.glob("*/result.json")} == before


def test_dry_run_lists_runs_with_parameters_flops_and_time(isoflop_sweep):
    out, _ = isoflop_sweep
    only = ("--only", "n_embd-32_C-2.5e8", "n_embd-48_C-5e8")
    completed = sweep(str(out.parent / "isoflop.yaml"), "--dry-run", "--gpu", "a100-sxm", *only)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = [line for line in completed.stdout.splitlines() if line.startswith("n_embd-")]
    assert [line.split()[0] for line in lines] == ["n_embd-32_C-2.5e8", "n_embd-48_C-5e8"]
    assert all(" finished " in line for line in lines)
    assert "FLOPs" in completed.stdout and "a100-sxm" in completed.stdout
    assert "e+08" in lines[0]  # FLOPs of the 2.5e8 budget


def test_compare_writes_a_table_json_and_an_overlaid_plot(isoflop_sweep, tmp_path):
    from lit_pretrain.cli import main

    out, _ = isoflop_sweep
    main(["compare", str(out), "--output_dir", str(tmp_path)])
    table = (tmp_path / "compare.md").read_text()
    assert table.count("| n_embd-") == 6
    assert "| status | params | tokens | FLOPs | train loss | val loss |" in table
    assert table.count("| finished |") == 6
    rows = json.loads((tmp_path / "compare.json").read_text())
    for row in rows:
        result = json.loads((Path(row["directory"]) / "result.json").read_text())
        assert row["parameters"] == result["parameters"]
        assert row["final_val_loss"] == pytest.approx(result["val/loss"], rel=1e-6)
        assert row["tokens"] == result["tokens_seen"]
        assert row["flops"] == result["flops_per_token"] * result["tokens_seen"]
    image = matplotlib.image.imread(tmp_path / "compare.png")
    assert image.shape[0] > 400 and image.shape[1] > 1000


def test_compare_takes_run_directories_too(isoflop_sweep, tmp_path, capsys):
    from lit_pretrain.cli import main

    out, _ = isoflop_sweep
    main(
        [
            "compare",
            str(out / "n_embd-32_C-2.5e8"),
            str(out / "n_embd-64_C-5e8"),
            "--output_dir",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    assert "n_embd-32_C-2.5e8" in printed and "n_embd-64_C-5e8" in printed and "n_embd-48" not in printed


def test_scaling_fit_reads_a_sweep_directory(isoflop_sweep, tmp_path, capsys):
    from lit_pretrain.cli import main

    out, _ = isoflop_sweep
    output = tmp_path / "fit.json"
    plot = tmp_path / "scaling.png"
    main(
        [
            "scaling",
            "fit",
            str(out),
            *("--grid", "small", "--bootstrap", "5", "--budget", "1e9"),
            *("--holdout", "n_embd-64_C-5e8", "--output", str(output), "--plot", str(plot)),
        ]
    )
    printed = capsys.readouterr().out
    assert "fitted to 5 points" in printed
    assert "held out n_embd-64_C-5e8" in printed
    fit = json.loads(output.read_text())
    assert {"E", "A", "B", "alpha", "beta", "optimal_params", "optimal_tokens", "predicted_loss"} <= set(fit)
    assert fit["held_out"][0]["name"] == "n_embd-64_C-5e8"
    assert matplotlib.image.imread(plot).shape[1] > 1000


@pytest.mark.slow
def test_a_failing_run_is_reported_and_the_others_run_and_resume(small_corpus, tmp_path):
    spec = {
        "output_dir": str(tmp_path / "out"),
        "base": [TINY_CONFIG],
        "fixed": {**_fixed(small_corpus), "trainer.max_steps": 4, "trainer.val_check_interval": 4},
        # A block_size of 16 is shorter than seq_len (32): that run fails in setup, after parsing.
        "runs": [{"name": "broken", "model.model_overrides.block_size": 16}, {"name": "good"}],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    first = sweep(str(path))
    assert first.returncode == 1
    assert "[1/2 broken] FAILED with exit status 1" in first.stdout
    assert "is longer than model" in first.stdout  # the end of its log, shown
    assert "FAILED broken: exit status 1" in first.stdout
    assert "1 of 2 runs ok" in first.stdout
    good = tmp_path / "out" / "good"
    assert json.loads((good / "result.json").read_text())["status"] == "finished"

    # The good run as if killed after its step-2 checkpoint: the next sweep continues it from there.
    (good / "result.json").unlink()
    for checkpoint in (good / "checkpoints").iterdir():
        if checkpoint.name != "step-0000002.ckpt":
            checkpoint.unlink()
    second = sweep(str(path))
    assert second.returncode == 1
    assert "[2/2 good] continuing" in second.stdout
    assert "resuming from" in (good / "train.log").read_text()
    result = json.loads((good / "result.json").read_text())
    assert result["status"] == "finished" and result["global_step"] == 4


@pytest.mark.slow
def test_a_changed_setting_is_refused_for_an_unfinished_run_and_noted_for_a_finished_one(
    small_corpus, tmp_path
):
    spec = {
        "output_dir": str(tmp_path / "out"),
        "base": [TINY_CONFIG],
        "fixed": {**_fixed(small_corpus), "trainer.max_steps": 2, "trainer.val_check_interval": 2},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert sweep(str(path)).returncode == 0
    config = (tmp_path / "out" / "run" / "config.yaml").read_text()
    spec["fixed"]["model.learning_rate"] = 0.1
    path.write_text(yaml.safe_dump(spec))
    finished = sweep(str(path))
    assert finished.returncode == 0
    assert "finished before: skipped (note:" in finished.stdout and "other settings" in finished.stdout
    (tmp_path / "out" / "run" / "result.json").unlink()
    unfinished = sweep(str(path))
    assert unfinished.returncode == 1
    assert "not run:" in unfinished.stdout and "delete the directory" in unfinished.stdout
    assert (tmp_path / "out" / "run" / "config.yaml").read_text() == config  # left as the run started


@pytest.mark.slow
def test_an_invalid_setting_is_refused_before_anything_runs(small_corpus, tmp_path):
    spec = {"output_dir": str(tmp_path / "out"), "base": [TINY_CONFIG], "fixed": {"trainer.max_stepz": 3}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    completed = sweep(str(path))
    assert completed.returncode == 1
    assert "not a valid `fit` configuration" in completed.stderr
    assert "max_stepz" in completed.stderr
    assert not (tmp_path / "out" / "run" / "train.log").exists()


def _emit_slurm(data_dir: Path, tmp_path: Path) -> Path:
    spec = {
        "name": "onslurm",
        "output_dir": str(tmp_path / "out"),
        "base": [TINY_CONFIG],
        "fixed": {**_fixed(data_dir), "trainer.max_steps": 2, "trainer.val_check_interval": 2},
        "grid": {"model.learning_rate": [0.001, 0.002]},
        "slurm": {"partition": "gpu", "gpus_per_node": 1, "time": "01:00:00"},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    completed = sweep(str(path), "--emit", "slurm")
    assert completed.returncode == 0, completed.stderr[-2000:]
    return tmp_path / "out" / "sweep.sbatch"


def test_emit_slurm_writes_an_array_script_and_runs_nothing(small_corpus, tmp_path):
    script = _emit_slurm(small_corpus, tmp_path)
    text = script.read_text()
    for line in (
        "#SBATCH --array=0-1",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --time=01:00:00",
        "#SBATCH --signal=SIGTERM@120",
        "#SBATCH --requeue",
        f"#SBATCH --chdir={REPO_ROOT}",
    ):
        assert line in text
    runs = (tmp_path / "out" / "runs.txt").read_text().split()
    assert [Path(run).parent.name for run in runs] == ["learning_rate-0.001", "learning_rate-0.002"]
    assert all(Path(run).is_file() for run in runs)  # each run's config.yaml, written
    assert not (tmp_path / "out" / "learning_rate-0.001" / "train.log").exists()  # nothing ran
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


@pytest.mark.slow
def test_an_emitted_slurm_task_runs_its_run_and_skips_it_once_finished(small_corpus, tmp_path):
    script = _emit_slurm(small_corpus, tmp_path)
    # Array task 1 on a machine without SLURM: `srun` runs the command it is given.
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (shims / "srun").chmod(0o755)
    env = dict(
        os.environ,
        SLURM_ARRAY_TASK_ID="1",
        PATH=f"{shims}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        PYTHONPATH=str(REPO_ROOT),
    )
    task = subprocess.run(
        ["bash", str(script)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert task.returncode == 0, task.stdout + task.stderr
    result = json.loads((tmp_path / "out" / "learning_rate-0.002" / "result.json").read_text())
    assert result["status"] == "finished" and result["global_step"] == 2
    assert not (tmp_path / "out" / "learning_rate-0.001" / "result.json").exists()
    again = subprocess.run(["bash", str(script)], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert "is finished" in again.stdout
