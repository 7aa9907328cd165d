"""Helpers for the resumption tests: a small two-source corpus and `lit-pretrain fit` in a new process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_pretrain.data.prepare import prepare, read_documents
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.paths import REPO_ROOT


def fit_args(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """`fit` arguments for a few steps of the test model on `data_dir`, logging every step."""
    return [
        "fit",
        "--config",
        "configs/tiny.yaml",
        "--model.model_overrides",
        json.dumps(TEST_MODEL_OVERRIDES),
        "--model.warmup_steps",
        "2",
        "--data.data_dir",
        str(data_dir),
        "--data.seq_len",
        "32",
        "--data.micro_batch_size",
        "4",
        "--data.val_batch_size",
        "4",
        "--data.num_workers",
        "0",
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.max_steps",
        "6",
        "--trainer.val_check_interval",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--checkpoint.every_n_train_steps",
        "3",
        *extra,
    ]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run's TensorBoard event files, read by tensorboard's own reader."""
    found: dict[str, list[tuple[int, float]]] = {}
    for event_file in sorted(run_dir.glob("tensorboard/**/events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return found


def make_two_source_corpus(directory: Path) -> Path:
    """Two small JSONL sources of stdlib docstrings, so an epoch lasts only a few steps."""
    prose = [d for d in read_documents(["python-stdlib"], None) if not d.is_code][:60]
    for name, documents in (("alpha", prose[:36]), ("beta", prose[36:])):
        with open(directory / f"{name}.jsonl", "w", encoding="utf-8") as file:
            for document in documents:
                file.write(json.dumps({"id": document.id, "text": document.text}) + "\n")
    output = directory / "prepared"
    inputs = [str(directory / "alpha.jsonl"), str(directory / "beta.jsonl")]
    prepare(inputs, output, vocab_size=512, val_fraction=0.1, id_field="id")
    return output


def resume_args(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """`fit` arguments for a run of the test model that logs the loss of, and checkpoints, every step."""
    overrides = dict(TEST_MODEL_OVERRIDES, dropout=0.1)  # dropout: the RNG must be restored too
    return fit_args(
        data_dir,
        run_dir,
        *("--model.model_overrides", json.dumps(overrides)),
        # Fixed, so a run stopped early by max_steps follows the same schedule as the full one.
        *("--model.lr_decay_steps", "40"),
        *("--trainer.val_check_interval", "4"),
        *("--checkpoint.every_n_train_steps", "1", "--checkpoint.keep_last", "100"),
        *extra,
    )


def fit_command(args: list[str]) -> list[str]:
    """The command line that runs `lit-pretrain` with `args` in a fresh Python process.

    It goes through tests/helpers/fault_injection.py, which injects nothing unless the environment asks.
    """
    return [sys.executable, "-m", "tests.helpers.fault_injection", *args]


def run_fit(args: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run `lit-pretrain fit` in a new process; returns its output, raises with it on failure."""
    completed = subprocess.run(
        fit_command(args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=_env(env)
    )
    output = completed.stdout + completed.stderr
    if completed.returncode != 0:
        raise AssertionError(f"fit exited with {completed.returncode}:\n{output[-4000:]}")
    return output


def start_fit(
    args: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen:
    """Start `lit-pretrain fit` in a new process (output to `log`), for tests that signal or kill it."""
    output = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - the process owns it
    return subprocess.Popen(
        fit_command(args), cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT, env=_env(env)
    )


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.update(extra or {})
    return env


def wait_for(condition, timeout: float, what: str) -> None:
    """Poll `condition()` every 20 ms until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def kill(process: subprocess.Popen, signum: int = signal.SIGKILL) -> None:
    """Send `signum` and wait for the process to end."""
    process.send_signal(signum)
    process.wait(timeout=120)


def uninterrupted_losses(args: list[str], run_dir: Path, steps: int) -> dict[int, float]:
    """Per-step losses of one `fit` run of `args` into `run_dir`, which must log every step below `steps`."""
    run_fit(args)
    (losses,) = step_losses(run_dir)
    assert sorted(losses) == list(range(steps))
    return losses


def first_step_wall_times(run_dir: Path) -> list[float]:
    """The wall time of the first logged loss of each process that trained the run, in order."""
    times = []
    for event_file in sorted(
        (run_dir / "tensorboard").glob("**/events.out.tfevents.*"), key=lambda p: int(p.name.split(".")[3])
    ):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        if "train/loss" in accumulator.Tags()["scalars"]:
            times.append(min(e.wall_time for e in accumulator.Scalars("train/loss")))
    return times


def step_losses(run_dir: Path) -> list[dict[int, float]]:
    """train/loss by step for each process that trained the run (each event file), in the order they ran.

    A resumed run writes a new event file into the same TensorBoard directory as the run it continues.
    """
    runs = []
    for event_file in sorted(
        (run_dir / "tensorboard").glob("**/events.out.tfevents.*"),
        key=lambda p: (int(p.name.split(".")[3]), p.name),
    ):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        if "train/loss" in accumulator.Tags()["scalars"]:
            runs.append({e.step: e.value for e in accumulator.Scalars("train/loss")})
    return runs


def epoch_by_step(run_dir: Path) -> dict[int, float]:
    """The epoch Lightning logged at each step of the first version of a run."""
    accumulator = EventAccumulator(str(next((run_dir / "tensorboard" / "version_0").glob("events.*"))))
    accumulator.Reload()
    return {e.step: e.value for e in accumulator.Scalars("epoch")}


def load(path: Path) -> dict:
    """A checkpoint as saved (weights, optimizer, loops, callbacks)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_training_state(expected: dict, actual: dict) -> None:
    """Weights and optimizer moments bitwise equal, and the same step and token count."""
    assert actual["global_step"] == expected["global_step"]
    assert actual["tokens_seen"] == expected["tokens_seen"]
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, actual["state_dict"][key]), f"weight {key} differs"
    for index, state in expected["optimizer_states"][0]["state"].items():
        for name, value in state.items():
            other = actual["optimizer_states"][0]["state"][index][name]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), f"optimizer {index}.{name}"
