"""Exact resumption: a run stopped after k steps and resumed in a new process continues bit for bit.

Each run is a real `lit-pretrain fit` in its own process; losses are read back from TensorBoard, weights
and optimizer moments from the checkpoints. The model has dropout on, so the RNG matters too.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.fault_injection import PAUSE_MID_SAVE_ENV
from tests.helpers.runs import (
    assert_same_training_state,
    epoch_by_step,
    kill,
    load,
    make_two_source_corpus,
    resume_args,
    run_fit,
    start_fit,
    step_losses,
    wait_for,
)

STEPS = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_two_source_corpus(tmp_path_factory.mktemp("resume-corpus"))


@pytest.fixture(scope="module")
def straight_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight")
    run_fit(resume_args(corpus, run_dir, "--trainer.max_steps", str(STEPS)))
    return run_dir


def checkpoint(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:07d}.ckpt"


def assert_continues_exactly(straight: Path, resumed_losses: dict[int, float], resumed_dir: Path, step: int):
    expected = {s: v for s, v in step_losses(straight)[0].items() if s >= min(resumed_losses)}
    assert resumed_losses == expected, "per-step training losses after the resume differ"
    assert_same_training_state(load(checkpoint(straight, step)), load(checkpoint(resumed_dir, step)))


@pytest.mark.parametrize(
    "every", ["1", "2"], ids=["saved-by-the-step-trigger", "saved-when-training-stopped"]
)
def test_resume_mid_epoch_is_bitwise_exact(corpus: Path, straight_run: Path, tmp_path: Path, every: str):
    run_fit(
        resume_args(corpus, tmp_path, "--trainer.max_steps", "3", "--checkpoint.every_n_train_steps", every)
    )
    output = run_fit(resume_args(corpus, tmp_path, "--trainer.max_steps", str(STEPS), "--ckpt_path", "last"))
    assert "[fit] resuming from" in output and "step-0000003.ckpt" in output
    first, resumed = step_losses(tmp_path)
    assert sorted(first) == [0, 1, 2] and sorted(resumed) == list(range(3, STEPS))
    assert_continues_exactly(straight_run, resumed, tmp_path, STEPS)


def test_resume_without_the_data_position_differs(corpus: Path, straight_run: Path, tmp_path: Path):
    """Negative control: the exactness test above would notice a lost data position."""
    run_fit(resume_args(corpus, tmp_path, "--trainer.max_steps", "3"))
    saved = load(checkpoint(tmp_path, 3))
    del saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    torch.save(saved, checkpoint(tmp_path, 3))
    run_fit(resume_args(corpus, tmp_path, "--trainer.max_steps", str(STEPS), "--ckpt_path", "last"))
    resumed = step_losses(tmp_path)[1]
    expected = step_losses(straight_run)[0]
    assert all(resumed[s] != expected[s] for s in range(4, STEPS)), (
        "without the data state the run repeats data"
    )


def test_ckpt_path_last_without_checkpoints_starts_fresh(corpus: Path, straight_run: Path, tmp_path: Path):
    output = run_fit(resume_args(corpus, tmp_path, "--trainer.max_steps", "2", "--ckpt_path", "last"))
    assert f"[fit] no complete checkpoint in {tmp_path / 'checkpoints'}: starting a fresh run" in output
    assert step_losses(tmp_path)[0] == {s: v for s, v in step_losses(straight_run)[0].items() if s < 2}


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(corpus: Path, straight_run: Path, tmp_path: Path):
    log = tmp_path / "log.txt"
    process = start_fit(resume_args(corpus, tmp_path, "--trainer.max_steps", "200"), log=log)
    wait_for(lambda: checkpoint(tmp_path, 2).exists(), 120, "step 2")
    kill(process, signal.SIGTERM)
    assert process.returncode == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert (
        "[preemption] received SIGTERM" in text
        and "Resume with the same command and --ckpt_path last" in text
    )
    saved = load(tmp_path / "checkpoints" / "last.ckpt")
    assert 2 <= saved["global_step"] < 200
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "stopped"  # sweeps continue it
    step = saved["global_step"]
    run_fit(resume_args(corpus, tmp_path, "--trainer.max_steps", str(step + 2), "--ckpt_path", "last"))
    assert sorted(step_losses(tmp_path)[1]) == [step, step + 1], "the resumed run continues at the saved step"
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize(
    "data",
    [
        ("--data.num_workers", "2", "--data.weights", '{"alpha": 1, "beta": 0}'),
        ("--data.num_workers", "1"),
        # Each worker draws its sources at random: WorkerCountResumingDataset resumes each one exactly.
        ("--data.num_workers", "2"),
    ],
    ids=["one-source-2-workers", "mixture-1-worker", "mixture-2-workers"],
)
def test_resume_across_an_epoch_boundary_with_accumulation(
    corpus: Path, tmp_path: Path, data: tuple[str, ...]
):
    extra = (*data, "--trainer.accumulate_grad_batches", "2")
    straight = tmp_path / "straight"
    run_fit(resume_args(corpus, straight, "--trainer.max_steps", "24", *extra))
    epochs = epoch_by_step(straight)
    boundary = min(step for step, epoch in epochs.items() if epoch > 0)  # first step of the second epoch
    assert 4 <= boundary <= 20, f"the corpus should give short epochs, got one of {boundary} steps"
    total = boundary + 4
    # Stopped before the boundary (the resumed run crosses it), and stopped just after it.
    for stop_at in (boundary - 2, boundary + 1):
        split = tmp_path / f"split-{stop_at}"
        run_fit(resume_args(corpus, split, "--trainer.max_steps", str(stop_at), *extra))
        run_fit(resume_args(corpus, split, "--trainer.max_steps", str(total), "--ckpt_path", "last", *extra))
        resumed = step_losses(split)[1]
        assert min(resumed) == stop_at
        assert resumed == {s: v for s, v in step_losses(straight)[0].items() if stop_at <= s < total}
        assert_same_training_state(load(checkpoint(straight, total)), load(checkpoint(split, total)))


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_exact(corpus: Path, straight_run: Path, tmp_path: Path):
    target = random.Random(time.time_ns()).randint(2, STEPS - 2)
    process = start_fit(
        resume_args(corpus, tmp_path, "--trainer.max_steps", str(STEPS)), log=tmp_path / "log"
    )
    wait_for(lambda: checkpoint(tmp_path, target).exists(), 120, f"step {target}")
    kill(process)
    run_fit(resume_args(corpus, tmp_path, "--trainer.max_steps", str(STEPS), "--ckpt_path", "last"))
    resumed = step_losses(tmp_path)[-1]
    assert min(resumed) >= target, f"resumed from step {min(resumed)}, before the kill at step {target}"
    assert_continues_exactly(straight_run, resumed, tmp_path, STEPS)


@pytest.mark.slow
def test_sigkill_during_a_save_keeps_the_previous_checkpoint(
    corpus: Path, straight_run: Path, tmp_path: Path
):
    # The fault-injection variable makes every save pause halfway; the kill lands in the third save.
    process = start_fit(
        resume_args(corpus, tmp_path, "--trainer.max_steps", str(STEPS)),
        env={PAUSE_MID_SAVE_ENV: "3"},
        log=tmp_path / "log",
    )
    directory = tmp_path / "checkpoints"
    wait_for(lambda: checkpoint(tmp_path, 2).exists(), 120, "step 2")
    wait_for(
        lambda: any(p.name.startswith(".step-0000003") for p in directory.iterdir()), 60, "the third save"
    )
    kill(process)
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith(".")]
    assert leftovers and not checkpoint(tmp_path, 3).exists()
    assert load(directory / "last.ckpt")["global_step"] == 2, "last.ckpt still names the last complete save"
    output = run_fit(resume_args(corpus, tmp_path, "--trainer.max_steps", str(STEPS), "--ckpt_path", "last"))
    assert "step-0000002.ckpt" in output and f"removed {leftovers[0]}" in output
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]
    assert_continues_exactly(straight_run, step_losses(tmp_path)[-1], tmp_path, STEPS)


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)], ids=["SIGTERM", "SIGINT"]
)
def test_preempted_epoch_based_run_resumes_exactly(corpus: Path, tmp_path: Path, signum: int):
    """A run bounded by max_epochs, not max_steps (Lightning issue 20550 is about such runs)."""
    epoch_run = ("--trainer.max_steps", "-1", "--trainer.max_epochs", "1")
    straight = tmp_path / "straight"
    run_fit(resume_args(corpus, straight, *epoch_run))
    expected = step_losses(straight)[0]
    assert len(expected) >= 8, "the epoch should be long enough to interrupt"
    preempted = tmp_path / "preempted"
    process = start_fit(resume_args(corpus, preempted, *epoch_run), log=tmp_path / "log")
    wait_for(lambda: checkpoint(preempted, 2).exists(), 120, "step 2")
    kill(process, signum)
    assert process.returncode == 0, (tmp_path / "log").read_text()[-3000:]
    stopped_at = load(preempted / "checkpoints" / "last.ckpt")["global_step"]
    assert stopped_at < len(expected), "the run was stopped before the end of the epoch"
    run_fit(resume_args(corpus, preempted, *epoch_run, "--ckpt_path", "last"))
    resumed = step_losses(preempted)[1]
    assert resumed == {s: v for s, v in expected.items() if s >= stopped_at}
    assert json.loads((preempted / "result.json").read_text())["status"] == "finished"  # its epoch is done
    final = len(expected)
    assert_same_training_state(load(checkpoint(straight, final)), load(checkpoint(preempted, final)))


def test_a_run_without_a_schedule_length_is_a_clear_error(corpus: Path, tmp_path: Path):
    args = resume_args(corpus, tmp_path, "--trainer.max_steps", "-1", "--trainer.max_epochs", "1")
    with pytest.raises(AssertionError, match="the learning-rate schedule needs a length"):
        run_fit([*args, "--model.lr_decay_steps", "null"])
