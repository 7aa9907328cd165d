"""Graceful preemption: on SIGTERM or SIGINT, finish the optimizer step, save a checkpoint and stop."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from typing import Any

import lightning as L

from lit_pretrain.checkpoint.retention import RetainingCheckpoint
from lit_pretrain.optim.accumulation import ends_optimizer_step

log = logging.getLogger(__name__)


class Preemption(L.Callback):
    """Turns SIGTERM/SIGINT into "save a checkpoint at the end of this optimizer step, then exit cleanly".

    Schedulers (SLURM, Kubernetes) send SIGTERM some time before they kill a job; Ctrl-C sends SIGINT.
    A second SIGINT interrupts at once. With `requeue` and a SLURM job, the job is requeued after saving.
    """

    def __init__(self, requeue: bool = False) -> None:
        self.requeue = requeue
        self.received: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._running_trainer: L.Trainer | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Install the handlers (Lightning installed its own just before; these replace them)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled on the main thread
        self._running_trainer = trainer
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
            log.info("received %s: saving a checkpoint after this step, then stopping", name)
            launcher = (
                getattr(self._running_trainer.strategy, "launcher", None) if self._running_trainer else None
            )
            if launcher is not None and hasattr(launcher, "kill"):
                launcher.kill(signum)  # the processes this one started (DDP ranks) stop with it

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """At the end of an optimizer step, if a signal came (on any rank), save and stop."""
        if not ends_optimizer_step(batch_idx, trainer.accumulate_grad_batches):
            return
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop or trainer.should_stop:
            return
        path = self._save(trainer)
        trainer.should_stop = True
        if trainer.is_global_zero:
            log.info(
                "saved %s at step %d; stopping. Resume with the same command and --ckpt_path last",
                path,
                trainer.global_step,
            )
            if self.requeue and "SLURM_JOB_ID" in os.environ:
                job = os.environ["SLURM_JOB_ID"]
                result = subprocess.run(["scontrol", "requeue", job], check=False)
                log.info("scontrol requeue %s: exit code %d", job, result.returncode)

    @staticmethod
    def _save(trainer: L.Trainer) -> str:
        callback = trainer.checkpoint_callback
        if not isinstance(callback, RetainingCheckpoint):
            raise RuntimeError(
                "preempted but the run has no RetainingCheckpoint callback to save with "
                f"(its checkpoint callback is {type(callback).__name__})"
            )
        return callback.save_now(trainer)

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
        self._running_trainer = None
