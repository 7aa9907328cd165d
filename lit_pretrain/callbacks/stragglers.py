"""`Stragglers`: the spread of the ranks' own step times (slowest / median), and a warning naming a slow rank."""

from __future__ import annotations

import logging
import socket
import statistics
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.hooks import RemovableHandle

from lit_pretrain._compat.lightning import should_log_this_step
from lit_pretrain.optim.accumulation import ends_optimizer_step

log = logging.getLogger(__name__)


class Stragglers(L.Callback):
    """Logs `perf/step_time_spread` (slowest rank's time over the median) and `perf/step_time_slowest_rank`.

    Each rank times its *own* share of the steps since the last logged step: its training forward passes
    (on CUDA the device's time, from events; elsewhere the host's) plus the time it waited for batches (the
    project's loader's `wait_seconds`; other loaders add nothing). Not the steps' whole wall time: in
    synchronous training every rank waits for the slowest inside each step (Lightning's broadcast before
    every batch, DDP's buffer broadcast and gradient all-reduce, the loss guard's all-reduce), so a step
    takes as long on every rank, and the time between two hooks is longest on the ranks that *waited*: it
    would name a fast rank, or none. Under DDP the forward pass and the data wait hold none of those
    collectives, so they differ by how fast each rank is; a slow device is slow in its forward pass too.

    Not seen: host work elsewhere in the step (another callback, logging, a pause of Python), whose wait
    the other ranks spend in a collective too. Under FSDP2 the forward pass all-gathers each block's
    weights, so a rank slow in the middle of it makes the others wait there; under tensor parallelism the
    ranks of a group wait for each other in every layer. There, only slowness in the data wait and at the
    end of the forward pass (the output head) shows.

    The times are gathered on logged steps only, in one all-gather of two numbers per rank (no collective on
    the other steps). A rank whose time is above `factor` x the median for `patience` logged intervals in a
    row is named in one warning (with its host and both times); it is named again only after it has caught
    up and fallen behind again. With two ranks the median is their mean, so the spread stays below 2. With
    one process there is nothing to compare: nothing is timed or logged.
    """

    def __init__(self, factor: float = 1.2, patience: int = 3) -> None:
        if factor <= 1:
            raise ValueError(f"Stragglers.factor must be above 1 (a multiple of the median), got {factor}")
        if patience < 1:
            raise ValueError(f"Stragglers.patience must be at least 1 logged interval, got {patience}")
        self.factor = factor
        self.patience = patience
        # Nothing here is checkpointed: the counts describe this run's processes and hosts, and a resumed
        # run may run elsewhere, and starts with warm-up intervals that are not comparable anyway.
        self.slow_intervals: dict[int, int] = {}
        self.hosts: list[str] = []
        self._clock: _ForwardClock | None = None
        self._handles: list[RemovableHandle] = []
        self._in_forward_window = False
        self._depth = 0  # nested forward calls of the module's children are timed once
        self._wait_start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """With several processes, learn the ranks' hosts and start timing the forward passes."""
        if trainer.world_size == 1:
            return
        self.slow_intervals.clear()
        self.hosts = [""] * trainer.world_size
        dist.all_gather_object(self.hosts, socket.gethostname())  # once: names hosts in warnings
        self._clock = _ForwardClock(trainer.strategy.root_device)
        # Children with parameters: the network, not metric objects (whose forward may synchronise).
        for child in pl_module.children():
            if next(child.parameters(), None) is not None:
                self._handles.append(child.register_forward_pre_hook(self._forward_starts))
                self._handles.append(child.register_forward_hook(self._forward_ends))
        self._wait_start = _loader_wait_seconds(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Remove the forward hooks (also after a failed run)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._clock = None

    def _forward_starts(self, module: torch.nn.Module, args: Any) -> None:
        if self._in_forward_window and self._clock is not None:
            if self._depth == 0:
                self._clock.start()
            self._depth += 1

    def _forward_ends(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self._in_forward_window and self._clock is not None and self._depth > 0:
            self._depth -= 1
            if self._depth == 0:
                self._clock.stop()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Time the forward passes of this micro-batch's training step (not validation's or callbacks')."""
        self._in_forward_window, self._depth = True, 0

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        """The training step's forward passes are over (activation recomputation is not timed)."""
        self._in_forward_window = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """On logged optimizer steps, gather every rank's times, log their spread, warn about stragglers."""
        self._in_forward_window = False  # also when the step returned no loss, so ran no backward
        if self._clock is None or not ends_optimizer_step(batch_idx, trainer.accumulate_grad_batches):
            return
        if not should_log_this_step(trainer):
            return
        waited = _loader_wait_seconds(trainer)
        own = torch.tensor(
            [self._clock.total(), waited - self._wait_start],
            dtype=torch.float64,
            device=trainer.strategy.root_device,
        )
        self._wait_start = waited
        forward, data = zip(*trainer.strategy.all_gather(own).reshape(-1, 2).tolist(), strict=True)
        times = [f + d for f, d in zip(forward, data, strict=True)]
        if statistics.median(times) <= 0:  # nothing measured: a module without children, no known loader
            return
        ratio, slowest = spread(times)
        pl_module.log_dict(
            {"perf/step_time_spread": ratio, "perf/step_time_slowest_rank": float(slowest)},
            on_step=True,
            on_epoch=False,
        )
        slow, recovered = self.observe(times)
        if not trainer.is_global_zero:  # every rank keeps the same counts; one of them speaks
            return
        for rank in slow:
            log.warning("%s", self.describe(rank, forward, data))
        for rank in recovered:
            log.info(
                "rank %d%s has caught up (%.2fx the median)",
                rank,
                self._host(rank),
                _over_median(times, rank),
            )

    def observe(self, times: Sequence[float]) -> tuple[list[int], list[int]]:
        """Count each rank's logged intervals in a row above `factor` x the median of `times`.

        Returns the ranks that have just reached `patience` such intervals, and those that were that slow
        and no longer are.
        """
        median = statistics.median(times)
        slow, recovered = [], []
        for rank, seconds in enumerate(times):
            if seconds > self.factor * median:
                self.slow_intervals[rank] = self.slow_intervals.get(rank, 0) + 1
                if self.slow_intervals[rank] == self.patience:
                    slow.append(rank)
            elif self.slow_intervals.pop(rank, 0) >= self.patience:
                recovered.append(rank)
        return slow, recovered

    def describe(self, rank: int, forward: Sequence[float], data: Sequence[float]) -> str:
        """The warning about a straggling rank: by how much, and in which of the two parts."""
        times = [f + d for f, d in zip(forward, data, strict=True)]
        return (
            f"rank {rank}{self._host(rank)} is a straggler: above {self.factor:g}x the median time of the "
            f"ranks for {self.patience} logged intervals in a row, {_over_median(times, rank):.2f}x in the "
            f"last (forward passes {forward[rank]:.3f} s, median {statistics.median(forward):.3f} s; "
            f"waiting for data {data[rank]:.3f} s, median {statistics.median(data):.3f} s). Every rank "
            "waits for it in every step: check that host's device (clock speed, temperature) and its data reads"
        )

    def _host(self, rank: int) -> str:
        return f" ({self.hosts[rank]})" if rank < len(self.hosts) and self.hosts[rank] else ""


def spread(times: Sequence[float]) -> tuple[float, int]:
    """The slowest of the ranks' times over their median (a positive one), and the slowest rank (the lowest)."""
    slowest = max(range(len(times)), key=times.__getitem__)  # the first of equal maxima
    return times[slowest] / statistics.median(times), slowest


def _over_median(times: Sequence[float], rank: int) -> float:
    return times[rank] / statistics.median(times)


def _loader_wait_seconds(trainer: L.Trainer) -> float:
    return float(getattr(trainer.train_dataloader, "wait_seconds", 0.0))


class _ForwardClock:
    """Seconds inside forward passes: the host's time, or on CUDA the device's own time between two events.

    On CUDA the host only queues the kernels and runs ahead of them, so its time would be the launches'.
    The events are read on logged steps only, when the device has long finished them.
    """

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        self._seconds = 0.0
        self._started = 0.0
        self._start_event: torch.cuda.Event | None = None
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def start(self) -> None:
        """A forward pass begins."""
        if self._cuda:
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record()
        else:
            self._started = time.perf_counter()

    def stop(self) -> None:
        """The forward pass begun last ends."""
        if self._cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            if self._start_event is not None:
                self._events.append((self._start_event, end))
            self._start_event = None
        else:
            self._seconds += time.perf_counter() - self._started

    def total(self) -> float:
        """Seconds since the last call (the events read then dropped)."""
        if self._events:
            self._events[-1][1].synchronize()
            self._seconds += sum(start.elapsed_time(end) for start, end in self._events) / 1000
            self._events.clear()
        seconds, self._seconds = self._seconds, 0.0
        return seconds
