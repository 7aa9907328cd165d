"""Graceful preemption: on SIGTERM or SIGINT, finish the optimizer step, save a checkpoint and stop."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import Any

import lightning as L


class Preemption(L.Callback):
    """Turns SIGTERM/SIGINT into "save a checkpoint at the end of this optimizer step, then exit cleanly".

    Schedulers (SLURM, Kubernetes) send SIGTERM some time before they kill a job; Ctrl-C sends SIGINT.
    A second SIGINT interrupts at once. With `requeue` and a SLURM job, the job is requeued after saving.
    """

    def __init__(self, requeue: bool = False) -> None:
        self.requeue = requeue
        self.received: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Install the handlers (Lightning installed its own just before; these replace them)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled on the main thread
        self._trainer = trainer
        self.received = None
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        first = self.received is None
        self.received = signum
        if first:
            name = signal.Signals(signum).name
            print(
                f"\n[preemption] received {name}: saving a checkpoint after this step, then stopping",
                flush=True,
            )
            launcher = getattr(self._trainer.strategy, "launcher", None) if self._trainer else None
            if launcher is not None and hasattr(launcher, "kill"):
                launcher.kill(signum)  # the processes this one started (DDP ranks) stop with it

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """At the end of an optimizer step, if a signal came (on any rank), save and stop."""
        if (batch_idx + 1) % trainer.accumulate_grad_batches != 0:
            return
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop or trainer.should_stop:
            return
        path = self._save(trainer)
        trainer.should_stop = True
        if trainer.is_global_zero:
            print(
                f"[preemption] saved {path} at step {trainer.global_step}; stopping. "
                "Resume with the same command and --ckpt_path last",
                flush=True,
            )
            if self.requeue and "SLURM_JOB_ID" in os.environ:
                job = os.environ["SLURM_JOB_ID"]
                result = subprocess.run(["scontrol", "requeue", job], check=False)
                print(f"[preemption] scontrol requeue {job}: exit code {result.returncode}", flush=True)

    @staticmethod
    def _save(trainer: L.Trainer) -> str:
        callback = trainer.checkpoint_callback
        if callback is None:
            raise RuntimeError("preempted but the run has no checkpoint callback to save with")
        if callback._last_global_step_saved != trainer.global_step:
            candidates = callback._monitor_candidates(trainer)
            callback._save_topk_checkpoint(trainer, candidates)
            callback._save_last_checkpoint(trainer, candidates)
        return callback._last_checkpoint_saved

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Put back the handlers this callback replaced (before Lightning restores its own originals)."""
        self._restore_handlers()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Put back the handlers on the way out of a failed run as well."""
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()
        self._trainer = None
