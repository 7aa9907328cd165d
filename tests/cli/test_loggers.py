"""Other loggers through `--trainer.logger`: a run resumed with `--ckpt_path last` continues its logger's run
(CSV excepted: it takes the next version).

Each test runs 3 steps, then resumes to 6 in a second process, and reads what was written with the logger's
own files or client. Nothing here reaches the network: W&B runs offline, MLflow tracks into a local directory.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from tests.helpers.runs import fit_args, run_fit

STEPS, RESUMED_STEPS = 3, 6
# The logger's step is the count of optimizer steps before the logged one (see test_monitoring.py).
ALL_STEPS = list(range(RESUMED_STEPS))


def _logger(class_name: str, **init_args: object) -> str:
    """`--trainer.logger` as a user would pass it on the command line."""
    return json.dumps({"class_path": f"lightning.pytorch.loggers.{class_name}", "init_args": init_args})


def _fit_and_resume(
    corpus: Path, run_dir: Path, logger: str, env: dict[str, str] | None = None
) -> tuple[str, str]:
    """3 steps logged by `logger`, then the same command resumed from the last checkpoint to 6 steps."""
    args = fit_args(corpus, run_dir, "--trainer.logger", logger, "--trainer.max_steps", str(STEPS))
    first = run_fit(args, env)
    resumed = run_fit([*args, "--trainer.max_steps", str(RESUMED_STEPS), "--ckpt_path", "last"], env)
    return first, resumed


def _csv_steps(metrics_file: Path) -> list[int]:
    with open(metrics_file, newline="") as file:
        return [int(row["step"]) for row in csv.DictReader(file) if row.get("train/loss")]


def test_a_resumed_run_writes_the_next_csv_version_and_keeps_the_first(small_corpus: Path, tmp_path: Path):
    # Lightning's CSVLogger deletes the metrics.csv of an existing version it is given, so a resumed run
    # does not continue the version it resumes (RESUME_ARGUMENT in cli/fit.py) but takes the next one.
    logger = _logger("CSVLogger", save_dir=str(tmp_path), name="csv")
    first, resumed = _fit_and_resume(small_corpus, tmp_path, logger)
    versions = tmp_path / "csv"
    assert sorted(p.name for p in versions.iterdir()) == ["version_0", "version_1"]
    assert _csv_steps(versions / "version_0" / "metrics.csv") == ALL_STEPS[:STEPS]
    assert _csv_steps(versions / "version_1" / "metrics.csv") == ALL_STEPS[STEPS:]
    assert "CSVLogger continues run" not in resumed
    assert f"CSV: {versions / 'version_0' / 'metrics.csv'}" in first
    assert f"CSV: {versions / 'version_1' / 'metrics.csv'}" in resumed


@pytest.mark.slow  # make test stays under 10 min on 2 cores; runs in make test-slow
def test_a_resumed_run_continues_the_same_offline_wandb_run(small_corpus: Path, tmp_path: Path):
    pytest.importorskip("wandb")
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    logger = _logger("WandbLogger", offline=True, save_dir=str(tmp_path), project="lit-pretrain-test")
    first, resumed = _fit_and_resume(small_corpus, tmp_path, logger, env)
    pattern = r"W&B: run (\w+), offline \(to upload: wandb sync (\S+)\)"
    described = [re.findall(pattern, output) for output in (first, resumed)]
    assert len(described[0]) == len(described[1]) == 1, described
    (run_id, first_dir), (resumed_id, resumed_dir) = described[0][0], described[1][0]
    assert run_id == resumed_id
    assert f"WandbLogger continues run {run_id}" in resumed
    # Each process writes its own offline directory, both under the same run id.
    offline_runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2
    assert {p.name.rsplit("-", 1)[-1] for p in offline_runs} == {run_id}
    assert [str(p) for p in offline_runs] == [first_dir, resumed_dir]
    for directory in offline_runs:
        # The run's record log (binary, no reader outside wandb's Go core): both processes logged the loss.
        assert b"train/loss" in (directory / f"run-{run_id}.wandb").read_bytes()


@pytest.mark.slow  # make test stays under 10 min on 2 cores; runs in make test-slow
def test_a_resumed_run_continues_the_same_mlflow_run(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    # Recent MLflow (3.x) refuses its file store (a local directory, no server) unless asked for it.
    env = {"MLFLOW_ALLOW_FILE_STORE": "true"}
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracking_uri = f"file:{tmp_path / 'mlruns'}"
    logger = _logger("MLFlowLogger", experiment_name="lit-pretrain-test", tracking_uri=tracking_uri)
    first, resumed = _fit_and_resume(small_corpus, tmp_path, logger, env)
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("lit-pretrain-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run_id = runs[0].info.run_id
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(metric.step for metric in history) == ALL_STEPS
    # MLflow params cannot change: the run keeps those of the process that started it.
    assert runs[0].data.params["trainer/max_steps"] == str(STEPS)
    assert f"MLFlowLogger continues run {run_id}" in resumed
    for output in (first, resumed):
        assert f"MLflow: run {run_id} at {tracking_uri}" in output
