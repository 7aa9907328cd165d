"""`RankWatchdog`: which rank is lost and when, what the survivors say, and heartbeats through a real store.

The runs that kill, stop or hang a rank of `lit-pretrain fit` are slow tests in tests/parallel/test_rank_failure.py.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from lit_pretrain.callbacks.rank_watchdog import (
    ALIVE,
    DONE,
    EXITED,
    FAILED,
    SILENT,
    STOPPING,
    Heartbeat,
    HeartbeatTracker,
    RankWatchdog,
    blame,
    describe_rank,
    exit_description,
    heartbeat_store,
    restart_advice,
)
from tests.helpers.distributed import spawn_on_gloo


def beat(rank: int, count: int, step: int = 0, state: str = "running", message: str = "") -> Heartbeat:
    return Heartbeat(rank, count, step, "node-1", 100 + rank, state, message)


def test_a_heartbeat_survives_the_store():
    heartbeat = beat(3, 7, step=12, state=FAILED, message="RuntimeError: boom")
    assert Heartbeat.decode(heartbeat.encode().encode()) == heartbeat


def test_a_rank_is_silent_when_its_heartbeat_has_not_changed_for_longer_than_the_timeout():
    tracker = HeartbeatTracker([1, 2], now=0.0)
    tracker.observe({1: beat(1, 1), 2: beat(2, 1)}, now=1.0)
    tracker.observe({1: beat(1, 2), 2: beat(2, 1)}, now=4.0)  # rank 2 sent the same heartbeat again
    assert tracker.silent(now=5.5, longer_than=4.0) == [2], "rank 2 last changed at 1.0, rank 1 at 4.0"
    assert tracker.silent(now=8.5, longer_than=4.0) == [1, 2]
    assert tracker.silent(now=4.5, longer_than=4.0) == []


def test_a_rank_that_never_published_is_silent_from_when_watching_began():
    tracker = HeartbeatTracker([1], now=10.0)
    assert tracker.silent(now=13.0, longer_than=5.0) == []
    assert tracker.silent(now=15.5, longer_than=5.0) == [1]


def test_a_finished_rank_is_never_silent():
    tracker = HeartbeatTracker([1], now=0.0)
    tracker.observe({1: beat(1, 9, state=DONE)}, now=1.0)
    assert tracker.silent(now=100.0, longer_than=5.0) == []


def test_a_rank_that_stops_the_run_is_found():
    tracker = HeartbeatTracker([0], now=0.0)
    tracker.observe({0: beat(0, 1)}, now=1.0)
    assert tracker.stopping() is None
    tracker.observe({0: beat(0, 2, state=STOPPING, message="rank 1 was lost")}, now=2.0)
    assert tracker.stopping().message == "rank 1 was lost"


def test_after_an_exception_each_rank_is_exited_failed_alive_or_silent():
    tracker = HeartbeatTracker([1, 2, 3, 4, 5], now=0.0)
    before = {1: beat(1, 1), 2: beat(2, 1), 3: beat(3, 1), 4: beat(4, 1), 5: beat(5, 1)}
    tracker.observe(before, now=1.0)
    tracker.observe({2: beat(2, 2, state=FAILED, message="ValueError: x"), 3: beat(3, 2)}, now=2.0)
    reasons = tracker.classify(before, exited=[1], now=2.5, grace=1.0)
    assert reasons == {1: EXITED, 2: FAILED, 3: ALIVE, 4: SILENT, 5: SILENT}
    tracker.observe({5: beat(5, 2)}, now=2.6)
    assert tracker.classify(before, exited=[], now=2.7, grace=5.0) == {2: FAILED, 3: ALIVE, 5: ALIVE}, (
        "rank 4 is not known yet: silent for 1.7 s of a 5 s grace"
    )


def test_the_lost_ranks_are_blamed_before_those_that_failed_because_of_them():
    # Four ranks: rank 3 killed; ranks 1 and 2 fail at once in the broken collective.
    assert blame({1: FAILED, 2: FAILED, 3: SILENT}) == {3: SILENT}
    assert blame({1: ALIVE, 2: EXITED, 3: FAILED}) == {2: EXITED}
    assert blame({1: FAILED, 2: ALIVE}) == {1: FAILED}
    assert blame({1: ALIVE}) == {}


def test_the_messages_name_the_rank_its_host_pid_and_step_and_how_to_come_back():
    assert exit_description(-9) == "exited with code -9 (SIGKILL)"
    assert exit_description(1) == "exited with code 1"
    assert describe_rank(1, beat(1, 3, step=5), "was lost") == (
        "rank 1 (host node-1, pid 101, last reported step 5) was lost"
    )
    assert describe_rank(0, None, "was lost") == "rank 0 (no heartbeat of it was read) was lost"
    assert restart_advice({}) == "resume with the same command and --ckpt_path last"
    torchrun = {"TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": "2"}
    assert restart_advice(torchrun).startswith("torchrun restarts the workers by itself (restart 1 of 2)")
    used_up = {"TORCHELASTIC_RESTART_COUNT": "2", "TORCHELASTIC_MAX_RESTARTS": "2"}
    assert restart_advice(used_up).startswith("torchrun has no restarts left (2 allowed)")
    assert restart_advice({}, requeued_job="77").startswith("SLURM job 77 was requeued")


@pytest.mark.parametrize(("timeout_s", "interval_s"), [(5.0, 0.0), (5.0, 3.0)])
def test_a_timeout_shorter_than_two_intervals_is_refused(timeout_s: float, interval_s: float):
    with pytest.raises(ValueError, match="RankWatchdog"):
        RankWatchdog(timeout_s=timeout_s, interval_s=interval_s)


def _share_heartbeats(rank: int, world_size: int) -> None:
    store = heartbeat_store("launch-a", timedelta(seconds=5))
    store.set(str(rank), beat(rank, 1, step=rank * 10).encode())
    dist.barrier()
    other = 1 - rank
    assert Heartbeat.decode(bytes(store.multi_get([str(other)])[0])).step == other * 10
    assert not heartbeat_store("launch-b", timedelta(seconds=5)).check([str(other)]), (
        "another launch's names are apart"
    )
    dist.barrier()


def test_heartbeats_cross_processes_through_the_process_groups_store():
    spawn_on_gloo(_share_heartbeats, 2, preload=[__name__])


class _Regression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        time.sleep(0.1)
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit_with_watchdog(rank: int, world_size: int, run_dir: Path) -> None:
    os.environ["LOCAL_RANK"] = str(rank)  # as torchrun would: Lightning joins the group instead of launching
    watchdog = RankWatchdog(timeout_s=2.0, interval_s=0.2)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 4, generator=generator), torch.randn(64, 1, generator=generator))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=world_size,
        strategy=DDPStrategy(process_group_backend="gloo"),
        max_steps=20,
        logger=False,
        callbacks=[watchdog],
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Regression(), DataLoader(data, batch_size=4))
    (run_dir / f"rank{rank}.json").write_text(json.dumps({"beats": watchdog._beat, "step": watchdog._step}))


def test_a_healthy_two_process_run_beats_throughout_and_ends_without_an_alarm(tmp_path: Path):
    """20 steps of 0.1 s: about 10 heartbeats each, and the ranks' ends (at different moments) trip nothing."""
    spawn_on_gloo(_fit_with_watchdog, 2, tmp_path, preload=[__name__])
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert seen["step"] == 20 and seen["beats"] >= 5, seen


def test_one_process_starts_nothing(tmp_path: Path):
    watchdog = RankWatchdog()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    watchdog.setup(trainer, _Regression(), "fit")
    assert watchdog._thread is None and watchdog._store is None


@pytest.fixture
def fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `scontrol` on PATH that records its arguments; SLURM_JOB_ID set."""
    calls = tmp_path / "calls"
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    return calls


@pytest.mark.parametrize(
    ("rank", "lost", "requeues"),
    [(0, [1], True), (1, [0], True), (1, [2], False), (2, [0], False)],
    ids=["rank-0", "rank-1-when-0-is-lost", "rank-1-when-0-lives", "rank-2"],
)
def test_one_rank_requeues_the_slurm_job(fake_scontrol: Path, rank: int, lost: list[int], requeues: bool):
    watchdog = RankWatchdog(requeue=True)
    watchdog.rank = rank
    assert watchdog._requeue(lost) == ("77" if requeues else None)
    assert (fake_scontrol.read_text() if fake_scontrol.exists() else "") == (
        "requeue 77\n" if requeues else ""
    )


def test_no_requeue_unless_asked_or_past_max_requeues(
    fake_scontrol: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    assert RankWatchdog()._requeue([1]) is None, "requeue is off by default"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    watchdog = RankWatchdog(requeue=True, max_requeues=3)
    watchdog.rank = 1
    assert watchdog._requeue([0]) is None
    assert not fake_scontrol.exists()
    assert "not requeueing SLURM job 77: it was requeued 3 times" in capsys.readouterr().err
