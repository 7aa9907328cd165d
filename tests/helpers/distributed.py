"""Run a test function on several CPU processes over gloo, with a teardown that does not abort.

Gloo aborts a process ("terminate called without an active exception", SIGABRT) when its process
groups are torn down while a peer still has collectives in flight, and that abort hides the real
failure. So each rank prints its own traceback first, and ranks that succeeded meet at a barrier
before any of them destroys its groups.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_rank(rank: int, port: int, world_size: int, function: Callable[..., None], args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        function(rank, world_size, *args)
    except BaseException:
        # Printed before anything else can abort the process; the group is left to process exit.
        print(f"rank {rank} failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        raise
    dist.barrier()
    dist.destroy_process_group()


def spawn_on_gloo(
    function: Callable[..., None], world_size: int, *args: Any, preload: Sequence[str] = ()
) -> None:
    """Run `function(rank, world_size, *args)` in `world_size` processes sharing a gloo group.

    With `preload` (module names), the processes are forked from a server process that imported those
    modules once, instead of each importing them anew: Lightning alone takes seconds. The server is
    started once per test session, so a later call's `preload` is not imported again (only slower).
    """
    if preload:
        multiprocessing.get_context("forkserver").set_forkserver_preload(list(preload))
    mp.start_processes(
        _run_rank,
        args=(free_port(), world_size, function, args),
        nprocs=world_size,
        join=True,
        start_method="forkserver" if preload else "spawn",
    )
