"""A rank of a 2-process `lit-pretrain fit` (DDP over gloo) dies, stops, hangs or dies mid-save: the survivors
stop within a bounded time and say which rank was lost, no checkpoint is corrupted, and `--ckpt_path last`
(by hand, or by torchrun's own restart) continues with the losses of an uninterrupted run.

Real processes throughout: Lightning's launcher or torchrun, gloo, the suite's CLI; the faults come from
tests/helpers/fault_injection.py (RANK_FAULT_ENV). Each test prints what it measured (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.fault_injection import FAULT_RECORD_ENV, RANK_FAULT_ENV
from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import (
    first_step_wall_times,
    fit_command,
    load,
    resume_args,
    run_fit,
    step_losses,
    uninterrupted_losses,
)

pytestmark = pytest.mark.slow

STEPS = 10
WATCHDOG = {
    "class_path": "lit_pretrain.callbacks.rank_watchdog.RankWatchdog",
    "init_args": {"timeout_s": 5, "interval_s": 0.5},
}


def ddp_args(corpus: Path, run_dir: Path, *extra: str, watchdog: dict = WATCHDOG) -> list[str]:
    """Two DDP processes over gloo, the watchdog on, a checkpoint and a logged loss every step, dropout on."""
    return resume_args(
        corpus,
        run_dir,
        *("--config", "configs/trainer/cpu-ddp.yaml", "--trainer.max_steps", str(STEPS)),
        *("--trainer.callbacks+", json.dumps(watchdog)),
        *extra,
    )


@pytest.fixture(scope="module")
def straight_run(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """The per-step losses of the same run without a fault."""
    run_dir = tmp_path_factory.mktemp("straight")
    return uninterrupted_losses(ddp_args(small_corpus, run_dir), run_dir, STEPS)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class FaultyRun:
    """A command run to its end with one rank fault; when each of its ranks' processes ended (wall time)."""

    def __init__(
        self, command: list[str], run_dir: Path, fault: str, extra_env: dict[str, str] | None = None
    ):
        self.record = run_dir / "faults.jsonl"
        self.log = run_dir / "log"
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", **(extra_env or {}))
        env.update({RANK_FAULT_ENV: fault, FAULT_RECORD_ENV: str(self.record)})
        self.ended: dict[int, float] = {}  # pid -> when it was first seen gone
        with open(self.log, "w") as log:
            process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                self._watch(process, deadline=time.monotonic() + 240)
            finally:
                for pid in self.pids():  # a stopped or hung rank that nothing ended: the test's own process
                    if running(pid):
                        os.kill(pid, signal.SIGKILL)
                if process.poll() is None:
                    process.kill()
                process.wait()
        self.returncode = process.returncode
        self.output = self.log.read_text()
        (self.fault,) = [r for r in records(self.record) if r["event"] == "fault"]

    def pids(self) -> dict[int, int]:
        """pid -> global rank, for every process that started training with the fault installed."""
        return {r["pid"]: r["rank"] for r in records(self.record) if r["event"] == "start"}

    def _watch(self, process: subprocess.Popen, deadline: float) -> None:
        while time.monotonic() < deadline:
            pids = self.pids()
            for pid in pids:
                if pid not in self.ended and not running(pid):
                    self.ended[pid] = time.time()
            if process.poll() is not None and len(pids) == 2 and len(self.ended) == 2:
                return
            time.sleep(0.02)
        raise AssertionError(f"the run did not end in time:\n{self.log.read_text()[-3000:]}")

    def seconds_to_exit(self, rank: int) -> float:
        """From the fault to the end of rank `rank`'s process."""
        (pid,) = [pid for pid, r in self.pids().items() if r == rank]
        return self.ended[pid] - self.fault["time"]

    def watchdog_errors(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("[rank_watchdog] error:")]


def assert_resumes_exactly(corpus: Path, run_dir: Path, straight: dict[int, float], from_step: int) -> str:
    """`--ckpt_path last` picks the checkpoint of `from_step`; every logged loss equals the straight run's."""
    output = run_fit(ddp_args(corpus, run_dir, "--ckpt_path", "last"))
    assert f"resuming from {run_dir / 'checkpoints' / f'step-{from_step:07d}.ckpt'}" in output
    first, resumed = step_losses(run_dir)
    assert min(resumed) == from_step and max(resumed) == STEPS - 1
    assert first == {step: straight[step] for step in first}, "the losses before the fault"
    assert resumed == {step: straight[step] for step in resumed}, "the losses after the resume"
    return output


def test_a_killed_rank_stops_the_survivor_at_once_which_names_it_and_the_resume_is_exact(
    small_corpus: Path, straight_run: dict[int, float], tmp_path: Path
):
    run = FaultyRun(fit_command(ddp_args(small_corpus, tmp_path)), tmp_path, "1:6:kill")
    seconds = run.seconds_to_exit(0)
    print(f"\nMEASURED rank 1 SIGKILLed at step 6 -> rank 0 exited after {seconds:.2f} s")
    assert run.returncode != 0
    assert seconds < 30, "bounded: the broken gloo connection, then the watchdog names the rank"
    (error,) = run.watchdog_errors()
    assert error.startswith("[rank_watchdog] error: rank 1 (host ") and "pid " in error
    assert "was lost: its process exited with code -9 (SIGKILL)" in error
    assert f"The newest checkpoint is {tmp_path / 'checkpoints' / 'step-0000006.ckpt'}" in error
    assert "resume with the same command and --ckpt_path last" in error
    assert_resumes_exactly(small_corpus, tmp_path, straight_run, from_step=6)


def test_a_stopped_rank_is_caught_by_its_missing_heartbeat(small_corpus: Path, tmp_path: Path):
    """SIGSTOP freezes every thread of rank 1: gloo sees an open connection, only the heartbeat stops."""
    run = FaultyRun(fit_command(ddp_args(small_corpus, tmp_path)), tmp_path, "1:6:stop")
    seconds = run.seconds_to_exit(0)
    print(f"\nMEASURED rank 1 SIGSTOPped at step 6 -> rank 0 exited after {seconds:.2f} s (timeout_s 5)")
    assert run.returncode != 0
    assert 5 <= seconds < 30
    (error,) = run.watchdog_errors()
    assert error.startswith("[rank_watchdog] error: rank 1 (host ") and "was lost: no heartbeat for " in error
    assert run.seconds_to_exit(1) < 30, (
        "rank 0 killed the stopped rank it had started: nothing is left behind"
    )


def test_a_hung_training_thread_is_caught_by_the_collective_timeout(small_corpus: Path, tmp_path: Path):
    """Rank 1's training thread blocks while its heartbeat goes on: the strategy's collective timeout fires."""
    args = ddp_args(small_corpus, tmp_path, "--trainer.strategy.init_args.timeout", "0:00:20")
    run = FaultyRun(fit_command(args), tmp_path, "1:6:hang")
    seconds, hung = run.seconds_to_exit(0), run.seconds_to_exit(1)
    print(
        f"\nMEASURED rank 1 hung at step 6 -> rank 0 exited after {seconds:.2f} s, rank 1 after {hung:.2f} s"
    )
    assert run.returncode != 0
    assert 20 <= seconds < 50, "the 20 s collective timeout, not torch's 30 minutes"
    assert hung < seconds + 20, "the hung rank's own watchdog ends it once rank 0 is gone"
    errors = run.watchdog_errors()
    assert any("a collective timed out while every rank still sends heartbeats" in e for e in errors), errors


def test_a_rank_killed_while_writing_a_checkpoint_leaves_the_previous_one_whole(
    small_corpus: Path, straight_run: dict[int, float], tmp_path: Path
):
    """Rank 0 (the writer under DDP, and the launcher of rank 1) dies halfway through step 4's file.

    With `requeue` in a SLURM job (a stand-in `scontrol` records its arguments), rank 1 requeues the job.
    """
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.calls"}\n')
    scontrol.chmod(0o755)
    slurm = {"SLURM_JOB_ID": "4242", "PATH": f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}"}
    requeuing = {**WATCHDOG, "init_args": {**WATCHDOG["init_args"], "requeue": True}}
    args = ddp_args(small_corpus, tmp_path, watchdog=requeuing)
    run = FaultyRun(fit_command(args), tmp_path, "0:4:kill-mid-save", slurm)
    seconds = run.seconds_to_exit(1)
    print(f"\nMEASURED rank 0 SIGKILLed mid-save -> rank 1 exited after {seconds:.2f} s")
    assert run.returncode == -signal.SIGKILL and seconds < 30
    (error,) = run.watchdog_errors()
    assert (
        error.startswith("[rank_watchdog] error: rank 0 (")
        and "was lost" in error
        and "Rank 1 stops" in error
    )
    assert "SLURM job 4242 was requeued" in error
    assert (tmp_path / "scontrol.calls").read_text() == "requeue 4242\n", "once, by rank 1"
    directory = tmp_path / "checkpoints"
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".step-0000004.ckpt.tmp-")
    assert not (directory / "step-0000004.ckpt").exists()
    assert load(directory / "last.ckpt")["global_step"] == 3, "last.ckpt still names the last complete save"
    output = assert_resumes_exactly(small_corpus, tmp_path, straight_run, from_step=3)
    assert f"removed {leftovers[0]}" in output
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]


def test_torchrun_restarts_the_job_after_a_rank_dies_and_it_resumes_exactly(
    small_corpus: Path, straight_run: dict[int, float], tmp_path: Path
):
    """`torchrun --max-restarts 1` with `--ckpt_path last`: the first attempt starts fresh, rank 1 dies at step 6
    (first attempt only), torchrun stops rank 0 and starts both again, and they resume from step 6."""
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"),
        *("--max-restarts", "1", "-m", "tests.helpers.fault_injection"),
        *ddp_args(small_corpus, tmp_path, "--ckpt_path", "last"),
    ]
    # torchrun's shared store would hand the restarted ranks the dead attempt's addresses (cli/fit.py).
    run = FaultyRun(command, tmp_path, "1:6:kill", {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})
    first_attempt, restarted = first_step_wall_times(tmp_path)
    survivor, back = run.seconds_to_exit(0), restarted - run.fault["time"]
    print(
        f"\nMEASURED torchrun: rank 1 SIGKILLed at step 6 -> rank 0 exited after {survivor:.2f} s, "
        f"the restarted job's first step logged {back:.2f} s after the kill"
    )
    assert run.returncode == 0, run.output[-3000:]
    assert run.output.count("no complete checkpoint in") == 1, "the first attempt starts fresh"
    assert run.output.count(f"resuming from {tmp_path / 'checkpoints' / 'step-0000006.ckpt'}") == 1
    (error,) = run.watchdog_errors()
    assert "rank 1 (host " in error and "torchrun restarts the workers by itself (restart 1 of 1)" in error
    assert survivor < 30 and back < 90
    first, resumed = step_losses(tmp_path)
    assert sorted(first) == list(range(6)) and sorted(resumed) == list(range(6, STEPS))
    assert {**first, **resumed} == straight_run, "the losses of the uninterrupted run, step for step"
