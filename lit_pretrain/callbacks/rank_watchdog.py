"""`RankWatchdog`: a heartbeat per rank in the process group's store; a lost rank stops the run, named."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist

from lit_pretrain._compat.torch_distributed import default_store
from lit_pretrain.checkpoint.naming import step_checkpoints

log = logging.getLogger(__name__)

RUNNING, DONE, FAILED, STOPPING = "running", "done", "failed", "stopping"  # a heartbeat's states
EXITED, SILENT, ALIVE = "exited", "silent", "alive"  # what a watcher concludes about a rank
EXIT_CODE = 1  # what a survivor exits with when a lost rank stops it (torchrun and SLURM see a failure)
KEY_PREFIX = "lit_pretrain/rank_watchdog"


@dataclass(frozen=True)
class Heartbeat:
    """What a rank publishes every interval: a counter that moves while its process runs, and its whereabouts."""

    rank: int
    beat: int
    step: int
    host: str
    pid: int
    state: str = RUNNING  # running, done (the run ended), failed (an exception), stopping (it stops the run)
    message: str = ""  # failed: the exception; stopping: why the run stops

    def encode(self) -> str:
        """JSON, for the store."""
        return json.dumps(asdict(self))

    @staticmethod
    def decode(raw: bytes | str) -> Heartbeat:
        """A heartbeat read back from the store."""
        return Heartbeat(**json.loads(raw))


class HeartbeatTracker:
    """When each watched rank's heartbeat last changed, by this process's clock (the hosts' clocks differ)."""

    def __init__(self, ranks: Iterable[int], now: float) -> None:
        self.latest: dict[int, Heartbeat | None] = dict.fromkeys(ranks)
        self.changed_at: dict[int, float] = dict.fromkeys(self.latest, now)

    def observe(self, heartbeats: Mapping[int, Heartbeat], now: float) -> None:
        """Record what was read at `now`; a rank whose heartbeat did not change keeps its old time."""
        for rank, heartbeat in heartbeats.items():
            if rank in self.latest and heartbeat != self.latest[rank]:
                self.latest[rank] = heartbeat
                self.changed_at[rank] = now

    def silent(self, now: float, longer_than: float) -> list[int]:
        """Ranks whose heartbeat has not changed for more than `longer_than` seconds, unless they finished."""
        return [
            rank
            for rank, heartbeat in self.latest.items()
            if (heartbeat is None or heartbeat.state != DONE) and now - self.changed_at[rank] > longer_than
        ]

    def classify(
        self, before: Mapping[int, Heartbeat | None], exited: Iterable[int], now: float, grace: float
    ) -> dict[int, str]:
        """After an exception: each watched rank that is known to be `exited` (its process ended), `failed` (it
        says so, or stops the run), `alive` (its heartbeat changed since `before`, or it finished) or `silent`
        (no change for more than `grace` seconds). Ranks not known yet are left out."""
        reasons = dict.fromkeys(exited, EXITED)
        for rank, heartbeat in self.latest.items():
            if rank in reasons:
                continue
            if heartbeat is not None and heartbeat.state in (FAILED, STOPPING):
                reasons[rank] = FAILED
            elif heartbeat != before.get(rank) or (heartbeat is not None and heartbeat.state == DONE):
                reasons[rank] = ALIVE
            elif now - self.changed_at[rank] > grace:
                reasons[rank] = SILENT
        return reasons

    def stopping(self) -> Heartbeat | None:
        """A watched rank's heartbeat that says it stops the run, if there is one."""
        return next((h for h in self.latest.values() if h is not None and h.state == STOPPING), None)


def blame(reasons: Mapping[int, str]) -> dict[int, str]:
    """The ranks to name after an exception: the lost ones (exited or silent) if there are any, since the
    ranks that failed then were most likely cut off from them; else those that failed."""
    lost = {rank: why for rank, why in reasons.items() if why in (EXITED, SILENT)}
    return lost or {rank: why for rank, why in reasons.items() if why == FAILED}


def exit_description(returncode: int) -> str:
    """`exited with code -9 (SIGKILL)`: a process's exit status in words."""
    if returncode < 0:
        try:
            return f"exited with code {returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            pass
    return f"exited with code {returncode}"


def describe_rank(rank: int, heartbeat: Heartbeat | None, what: str) -> str:
    """`rank 1 (host h, pid 7, last reported step 5) <what>`."""
    if heartbeat is None:
        return f"rank {rank} (no heartbeat of it was read) {what}"
    return f"rank {rank} (host {heartbeat.host}, pid {heartbeat.pid}, last reported step {heartbeat.step}) {what}"


def restart_advice(environ: Mapping[str, str], requeued_job: str | None = None) -> str:
    """How the run comes back: torchrun's restarts, a SLURM requeue, or by hand with --ckpt_path last."""
    if "TORCHELASTIC_RESTART_COUNT" in environ:
        done = int(environ["TORCHELASTIC_RESTART_COUNT"])
        allowed = int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
        if done < allowed:
            return (
                f"torchrun restarts the workers by itself (restart {done + 1} of {allowed}); with --ckpt_path "
                "last in the command they resume from the newest complete checkpoint"
            )
        return f"torchrun has no restarts left ({allowed} allowed): resume with the same command and --ckpt_path last"
    if requeued_job:
        return f"SLURM job {requeued_job} was requeued: it resumes from the newest complete checkpoint with --ckpt_path last"
    return "resume with the same command and --ckpt_path last"


class RankWatchdog(L.Callback):
    """Stops every surviving rank within a bounded time when one rank dies or stops, and says which.

    Each rank publishes a heartbeat (a counter, its host, pid and last optimizer step) every `interval_s`
    from a background thread into the key-value store its process group was built on (its own connection,
    so a blocked training thread never holds it). Rank 0 watches every other rank; the others watch rank 0.
    A watched rank whose heartbeat has not changed for `timeout_s` (by the watcher's clock) is lost: its
    process died, is stopped, hangs with the interpreter blocked, or its host is gone. The watcher then
    logs one error naming it (rank, host, pid, last step), the newest checkpoint and how the run comes
    back, publishes that it stops the run (the other ranks exit with the same message), and ends its
    process with exit code 1, even when its training thread is stuck inside a collective. A child process
    that this process started (Lightning's own launcher) and that exited is lost at once.

    When a rank's training raises instead (a peer's death breaks a gloo collective within a second, a
    collective timeout fires), the exception path names the cause too: it waits at most
    `min(timeout_s, 3 * interval_s)` for every watched rank to show life, names the ones that do not (or
    that failed, with their error), then lets the exception end the process.

    A rank that is alive but stuck (a deadlock in a collective, a hung device) keeps its heartbeat: the
    collective timeout of the strategy (`timeout` in configs/trainer/) catches it. Nothing is collective
    per step, and nothing is checkpointed. With one process nothing runs. With `requeue` and a SLURM job,
    rank 0 (rank 1 when rank 0 is the lost one) runs `scontrol requeue $SLURM_JOB_ID` before exiting,
    unless the job was already requeued `max_requeues` times (SLURM_RESTART_COUNT): a rank that fails on
    every start must not requeue the job forever.
    """

    def __init__(
        self, timeout_s: float = 60.0, interval_s: float = 5.0, requeue: bool = False, max_requeues: int = 3
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"RankWatchdog.interval_s must be positive, got {interval_s}")
        if timeout_s < 2 * interval_s:
            raise ValueError(
                f"RankWatchdog.timeout_s ({timeout_s}) must be at least twice interval_s ({interval_s}): "
                "one late heartbeat must not look like a lost rank"
            )
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.requeue = requeue
        self.max_requeues = max_requeues
        self.rank = 0
        self._trainer: L.Trainer | None = None
        self._store: dist.Store | None = None
        self._store_lock = threading.Lock()  # one request at a time on the connection
        self._store_error = ""
        self._tracker: HeartbeatTracker | None = None
        self._all_published = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ending_lock = threading.Lock()
        # The run is being stopped (by the watcher or an exception): judge and report once.
        self._ending = False
        self._beat = 0
        self._step = 0
        self._state = RUNNING
        self._message = ""
        self._host = socket.gethostname()

    # -- Lightning hooks ------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """With several processes, connect to the store, publish the first heartbeat and start watching."""
        if trainer.world_size == 1 or self._thread is not None:
            return
        # One name per launch: torchrun's restarts may reuse a store that still holds the last attempt's keys.
        launch = trainer.strategy.broadcast(uuid.uuid4().hex if trainer.is_global_zero else None, src=0)
        try:
            self._store = heartbeat_store(launch, timedelta(seconds=max(2.0, 2 * self.interval_s)))
        except (RuntimeError, ValueError) as error:
            log.warning("rank watchdog off: no store to publish heartbeats in (%s)", error)
            return
        self._trainer = trainer
        self.rank = trainer.global_rank
        self._stop.clear()
        self._ending = False
        self._state, self._message = RUNNING, ""
        self._publish()
        watched = range(1, trainer.world_size) if self.rank == 0 else [0]
        self._tracker = HeartbeatTracker(watched, time.monotonic())
        self._all_published = False
        self._thread = threading.Thread(target=self._watch, name="rank-watchdog", daemon=True)
        self._thread.start()
        log.info(
            "rank watchdog on: heartbeats every %g s, a rank silent for %g s stops the run",
            self.interval_s,
            self.timeout_s,
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Remember the step for the next heartbeat (an attribute write: nothing is sent here)."""
        self._step = trainer.global_step

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """The run ended normally: stop watching and say so, so the others do not wait for this rank."""
        if self._thread is None or self._ending:
            return
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)
        self._thread = None
        self._state = DONE
        self._publish()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Name the ranks behind a failure (lost, or failed first), so the traceback is not the only story."""
        if self._tracker is None or not self._begin_ending():
            return
        self._state, self._message = FAILED, first_line(exception)
        self._publish()
        if isinstance(exception, KeyboardInterrupt | SystemExit):
            return  # Ctrl-C or a deliberate exit: nothing to look for, and no time to spend
        culprits, lost = self._find_culprits()
        if culprits:
            self._stop_run("; ".join(culprits), lost)
        elif self.rank == 0 and "timed out" in str(exception).lower():
            steps = [f"rank 0: {self._step}"]
            steps += [f"rank {r}: {h.step}" for r, h in self._tracker.latest.items() if h is not None]
            self._stop_run(
                "a collective timed out while every rank still sends heartbeats: one of them hangs (or is far "
                f"slower) inside a step (last reported steps: {', '.join(steps)})",
                [],
            )

    def state_dict(self) -> dict[str, Any]:
        """Nothing to checkpoint: heartbeats describe this launch's processes only."""
        return {}

    # -- the watcher thread ---------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._publish()
            if self._ending:
                continue  # the exception path judges now; keep showing that this process lives
            tracker = self._tracker
            now = time.monotonic()
            tracker.observe(self._read(), now)
            stopping = tracker.stopping()
            if stopping is not None:
                self._end_process(f"{stopping.message} (found by rank {stopping.rank})", [])
                continue  # (only when the exception path is already reporting)
            culprits = dict.fromkeys(self._exited_children(), EXITED)
            culprits.update(dict.fromkeys(tracker.silent(now, self.timeout_s), SILENT))
            if culprits:
                self._end_process("; ".join(self._describe(culprits, now)), sorted(culprits))

    def _end_process(self, culprits: str, lost: list[int]) -> None:
        if not self._begin_ending():
            return
        self._stop_run(culprits, lost)
        sys.stdout.flush()
        sys.stderr.flush()
        # The training thread may be blocked inside a collective for as long as its timeout: leave now.
        os._exit(EXIT_CODE)

    def _stop_run(self, culprits: str, lost: list[int]) -> None:
        """Publish why the run stops (the watching ranks exit on it), say it with advice, requeue if asked."""
        self._state, self._message = STOPPING, culprits
        self._publish()
        requeued = self._requeue(lost)
        self._report(
            f"{culprits}. Rank {self.rank} stops. {self._newest_checkpoint()}; "
            f"{restart_advice(os.environ, requeued)}."
        )
        self._kill_lost_children(lost)

    def _begin_ending(self) -> bool:
        with self._ending_lock:
            if self._ending:
                return False
            self._ending = True
            return True

    # -- judging --------------------------------------------------------------------------------------

    def _find_culprits(self) -> tuple[list[str], list[int]]:
        """After an exception: watched ranks that exited, stayed silent or failed, within a short grace."""
        tracker = self._tracker
        grace = min(self.timeout_s, 3 * self.interval_s)
        start = time.monotonic()
        tracker.observe(self._read(), start)
        before = dict(tracker.latest)  # read now: a heartbeat first seen later must be a newer one
        while True:
            now = time.monotonic()
            tracker.observe(self._read(), now)
            reasons = tracker.classify(before, self._exited_children(), now, grace)
            if len(reasons) == len(tracker.latest) or now - start > grace:
                break
            time.sleep(min(0.25, self.interval_s / 2))
        culprits = blame(reasons)
        if self.rank != 0 and culprits == {0: FAILED} and tracker.latest[0].state == FAILED:
            # Rank 0 failed too, most likely cut off from a lost rank: it watches every rank, so its
            # verdict, published when it stops the run, names the one that was lost.
            deadline = time.monotonic() + grace + 2 * self.interval_s
            while tracker.latest[0].state != STOPPING and time.monotonic() < deadline:
                time.sleep(min(0.25, self.interval_s / 2))
                tracker.observe(self._read(), time.monotonic())
        lost = sorted(rank for rank, why in culprits.items() if why != FAILED)
        return self._describe(culprits, time.monotonic()), lost

    def _describe(self, culprits: Mapping[int, str], now: float) -> list[str]:
        tracker = self._tracker
        described = []
        for rank in sorted(culprits):
            heartbeat = tracker.latest.get(rank)
            why = culprits[rank]
            if why == EXITED:
                what = f"was lost: its process {exit_description(self._child_returncode(rank))}"
            elif why == FAILED and heartbeat.state == STOPPING:
                what = f"stopped the run: {heartbeat.message}"
            elif why == FAILED or heartbeat is not None and heartbeat.state == FAILED:
                what = f"failed: {heartbeat.message}"
            else:
                silence = now - tracker.changed_at[rank]
                what = (
                    f"was lost: no heartbeat for {silence:.1f} s (its process died, is stopped or blocked, or "
                    "its host is unreachable"
                    + (f"; the store answered {self._store_error}" if self._store_error else "")
                    + ")"
                )
            described.append(describe_rank(rank, heartbeat, what))
        return described

    def _newest_checkpoint(self) -> str:
        callback = self._trainer.checkpoint_callback if self._trainer else None
        directory = getattr(callback, "dirpath", None)
        found = step_checkpoints(Path(directory)) if directory else []
        if not found:
            return "No checkpoint was written yet (a restart starts from step 0)"
        return f"The newest checkpoint is {found[-1][1]}"

    # -- processes this one started (Lightning's launcher) --------------------------------------------

    def _children(self) -> list[subprocess.Popen]:
        launcher = self._trainer.strategy.launcher if self._trainer else None
        return list(getattr(launcher, "procs", None) or [])

    def _rank_of_pid(self, pid: int) -> int | None:
        return next((r for r, h in self._tracker.latest.items() if h is not None and h.pid == pid), None)

    def _exited_children(self) -> list[int]:
        """Ranks of this process's children that ended with a failure (known from their heartbeats)."""
        ranks = []
        for process in self._children():
            if process.poll() not in (None, 0):
                rank = self._rank_of_pid(process.pid)
                if rank is not None:
                    ranks.append(rank)
        return ranks

    def _child_returncode(self, rank: int) -> int:
        heartbeat = self._tracker.latest.get(rank)
        codes = [p.returncode for p in self._children() if heartbeat and p.pid == heartbeat.pid]
        return codes[0] if codes and codes[0] is not None else 1

    def _kill_lost_children(self, lost: list[int]) -> None:
        """A stopped child would outlive the run: kill the lost ranks this process started."""
        pids = {h.pid for r, h in self._tracker.latest.items() if r in lost and h is not None}
        for process in self._children():
            if process.pid in pids and process.poll() is None:
                process.kill()

    # -- store and output -----------------------------------------------------------------------------

    def _publish(self) -> None:
        if self._store is None:
            return
        try:
            with self._store_lock:  # (both threads publish: the counter moves under the lock too)
                self._beat += 1
                heartbeat = Heartbeat(
                    self.rank, self._beat, self._step, self._host, os.getpid(), self._state, self._message
                )
                self._store.set(str(self.rank), heartbeat.encode())
        except Exception as error:  # the store's host may be the lost one: silence is the signal, not this
            self._store_error = first_line(error)

    def _read(self) -> dict[int, Heartbeat]:
        ranks = list(self._tracker.latest)
        try:
            with self._store_lock:
                if not self._all_published:
                    # multi_get would wait for a key that a slow rank has not written yet.
                    ranks = [r for r in ranks if self._store.check([str(r)])]
                    self._all_published = len(ranks) == len(self._tracker.latest)
                values = self._store.multi_get([str(r) for r in ranks]) if ranks else []
        except Exception as error:  # unreachable store: no news, so the silence grows
            self._store_error = first_line(error)
            return {}
        self._store_error = ""
        return {rank: Heartbeat.decode(bytes(value)) for rank, value in zip(ranks, values, strict=True)}

    def _report(self, message: str) -> None:
        if self.rank == 0:
            log.error(message)
        else:
            # The suite's log lines come from rank 0 only; this rank may be the only one left to speak.
            print(f"[rank_watchdog] error: {message}", file=sys.stderr, flush=True)

    def _requeue(self, lost: list[int]) -> str | None:
        """`scontrol requeue` this SLURM job, once per run (rank 0, or rank 1 when rank 0 is lost)."""
        job = os.environ.get("SLURM_JOB_ID")
        reporter = 1 if 0 in lost else 0
        if not (self.requeue and job and self.rank == reporter):
            return None
        requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if requeued >= self.max_requeues:
            self._report(f"not requeueing SLURM job {job}: it was requeued {requeued} times (max_requeues)")
            return None
        result = subprocess.run(["scontrol", "requeue", job], check=False, capture_output=True, text=True)
        if result.returncode != 0:
            self._report(f"scontrol requeue {job} failed ({result.returncode}): {result.stderr.strip()}")
            return None
        return job


def heartbeat_store(launch: str, timeout: timedelta) -> dist.Store:
    """A connection of its own to the default process group's store, with keys under this launch's name."""
    store = default_store()
    while isinstance(store, dist.PrefixStore):
        store = store.underlying_store
    if isinstance(store, dist.TCPStore):
        store = dist.TCPStore(
            store.host, store.port, is_master=False, timeout=timeout, wait_for_workers=False
        )
    return dist.PrefixStore(f"{KEY_PREFIX}/{launch}/", store)


def first_line(error: BaseException) -> str:
    """`Type: first line of the message`."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
