"""Start `lit-pretrain fit` as several "nodes" on one machine: two torchrun agents, or srun-like tasks.

Both launchers start real processes that meet over gloo on localhost. Each process's (or agent's) output
goes to a log file under `log_dir`, so a failed rank's traceback is there to read; `failure_report`
gathers their tails for an assertion message. When one process fails, the others are stopped after a
short grace period rather than left to wait out gloo's 30-minute timeout in a collective.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist

from lit_pretrain.checkpoint.atomic import AtomicCheckpointIO
from tests.helpers.distributed import free_port
from tests.helpers.paths import REPO_ROOT

# What torchrun or a Slurm step sets: a launcher scrubs the other one's variables, so that Lightning
# detects the environment the test means (its SLURM detection comes before torchelastic's).
_TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK")
_TORCHRUN_VARIABLES += ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK")
# Lightning derives the port from the job id: 15000 + its last four digits.
_SLURM_PORT_BASE = 15000


def _bin(name: str) -> str:
    """A console script of the interpreter running the tests (the venv's `torchrun`, `lit-pretrain`)."""
    return str(Path(sys.executable).with_name(name))


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SLURM_", "TORCHELASTIC_")) and key not in _TORCHRUN_VARIABLES
    }
    # Four processes on two cores: one thread each, or they fight over the cores.
    env.update(PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def _wait_all(processes: list[subprocess.Popen], timeout: float, grace: float = 20.0) -> list[int]:
    """Exit codes once every process ended; stop the rest `grace` s after one fails, all at `timeout`."""
    deadline = time.monotonic() + timeout
    failed_at = None
    try:
        while None in [p.poll() for p in processes]:  # a list: every process is polled, not the first few
            now = time.monotonic()
            if failed_at is None and any(p.returncode not in (None, 0) for p in processes):
                failed_at = now
            if now > deadline or (failed_at is not None and now > failed_at + grace):
                break
            time.sleep(0.1)
    finally:  # also when the test itself is interrupted: no ranks left running
        for process in processes:
            if process.poll() is None:
                # Each was started in its own session: its group holds torchrun's workers too.
                os.killpg(process.pid, signal.SIGKILL)
        for process in processes:
            process.wait()
    return [p.returncode for p in processes]


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as output:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def torchrun_node_command(
    node_rank: int,
    port: int,
    fit_args: list[str],
    nodes: int = 2,
    per_node: int = 2,
    rendezvous: str = "c10d",
    module: str = "lit_pretrain.cli",
    max_restarts: int = 0,
) -> list[str]:
    """The `torchrun` command line of one node running `python -m module fit_args`: c10d rendezvous at
    127.0.0.1:`port`, or static; restarting its workers up to `max_restarts` times."""
    if rendezvous == "c10d":
        where = [
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            f"127.0.0.1:{port}",
            "--rdzv-id",
            "multinode-test",
        ]
    elif rendezvous == "static":
        where = ["--master-addr", "127.0.0.1", "--master-port", str(port)]
    else:
        raise ValueError(f"rendezvous must be c10d or static, got {rendezvous!r}")
    layout = ["--nnodes", str(nodes), "--node-rank", str(node_rank), "--nproc-per-node", str(per_node)]
    restarts = ["--max-restarts", str(max_restarts)]
    # --tee 3: each worker's stdout and stderr reach the agent's log, each line prefixed by its rank.
    return [_bin("torchrun"), *layout, *where, *restarts, "--tee", "3", "-m", module, *fit_args]


def run_torchrun_nodes(
    fit_args: list[str],
    log_dir: Path,
    nodes: int = 2,
    per_node: int = 2,
    rendezvous: str = "c10d",
    timeout: float = 600,
    module: str = "lit_pretrain.cli",
    max_restarts: int = 0,
    env: dict[str, str] | None = None,
) -> list[int]:
    """Run `python -m module fit_args` (`lit-pretrain fit` by default) as `nodes` torchrun agents of
    `per_node` workers, with `env` added to their environment; their exit codes.

    Agent n's output (its workers' lines prefixed `[defaultR]:`) is in `log_dir/node{n}.log`.
    """
    port = free_port()
    processes = [
        _start(
            torchrun_node_command(node, port, fit_args, nodes, per_node, rendezvous, module, max_restarts),
            _clean_env(env or {}),
            log_dir / f"node{node}.log",
        )
        for node in range(nodes)
    ]
    return _wait_all(processes, timeout)


def free_slurm_job_id() -> str:
    """A job id whose port by Lightning's rule (15000 + the id's last four digits) is free now."""
    for _ in range(200):
        offset = random.randrange(1, 10_000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", _SLURM_PORT_BASE + offset))
            except OSError:
                continue
        return f"7{offset:04d}"
    raise RuntimeError("no free port between 15001 and 24999")


def slurm_task_env(procid: int, job_id: str, nodes: int = 2, per_node: int = 2) -> dict[str, str]:
    """The SLURM_* variables `srun` gives task `procid` of a job on `nodes` nodes, `per_node` tasks each.

    The node list is written in Slurm's range notation over loopback addresses, so Lightning's parser
    of it (the first node is the main address) is exercised and the result resolves on any machine.
    """
    node = procid // per_node
    node_list = f"127.0.0.[1-{nodes}]"
    tasks = nodes * per_node
    return {
        "SLURM_JOB_ID": job_id,
        "SLURM_JOBID": job_id,
        "SLURM_JOB_NAME": "lit-pretrain",  # not "bash" or "interactive", which Lightning ignores
        "SLURM_JOB_NODELIST": node_list,
        "SLURM_NODELIST": node_list,
        "SLURM_STEP_NODELIST": node_list,
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_NNODES": str(nodes),
        "SLURM_STEP_NUM_NODES": str(nodes),
        "SLURM_NTASKS": str(tasks),
        "SLURM_NPROCS": str(tasks),
        "SLURM_STEP_NUM_TASKS": str(tasks),
        "SLURM_NTASKS_PER_NODE": str(per_node),
        "SLURM_TASKS_PER_NODE": f"{per_node}(x{nodes})",
        "SLURM_STEP_TASKS_PER_NODE": f"{per_node}(x{nodes})",
        "SLURM_STEP_ID": "0",
        "SLURM_STEPID": "0",
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(procid % per_node),
        "SLURM_NODEID": str(node),
        "SLURMD_NODENAME": f"127.0.0.{node + 1}",
        "SLURM_CPUS_PER_TASK": "1",
    }


def run_slurm_tasks(
    fit_args: list[str],
    log_dir: Path,
    nodes: int = 2,
    per_node: int = 2,
    job_id: str | None = None,
    timeout: float = 600,
) -> list[int]:
    """Run `lit-pretrain fit_args` as the `nodes x per_node` tasks of one srun step; their exit codes.

    No `srun` is involved: each task is started with the environment srun would give it, and
    Lightning's SLURMEnvironment takes ranks, world size, main address and port from it. Task i's
    output is in `log_dir/task{i}.log`. Without `job_id`, one whose port is free is chosen.
    """
    job_id = job_id or free_slurm_job_id()
    processes = [
        _start(
            [_bin("lit-pretrain"), *fit_args],
            _clean_env(slurm_task_env(procid, job_id, nodes, per_node)),
            log_dir / f"task{procid}.log",
        )
        for procid in range(nodes * per_node)
    ]
    return _wait_all(processes, timeout)


def failure_report(log_dir: Path, characters: int = 3000) -> str:
    """The tail of every log under `log_dir`, for an assertion message."""
    return "\n".join(
        f"--- {log.name} ---\n{log.read_text(errors='replace')[-characters:]}"
        for log in sorted(log_dir.glob("*.log"))
    )


class RecordLayout(L.Callback):
    """Writes what Lightning made of the launch environment, one JSON file per global rank, at setup."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Record the cluster environment's class, the ranks, world size and rendezvous address."""
        environment = trainer.strategy.cluster_environment
        record = {
            "environment": type(environment).__name__,
            "global_rank": trainer.global_rank,
            "local_rank": trainer.local_rank,
            "node_rank": trainer.node_rank,
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "main_address": environment.main_address,
            "main_port": environment.main_port,
            "process_group_size": dist.get_world_size(),
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def recorded_layout(output_dir: Path) -> list[dict[str, Any]]:
    """`RecordLayout`'s records, by global rank."""
    return [
        json.loads(p.read_text())
        for p in sorted(output_dir.glob("rank*.json"), key=lambda p: int(p.stem.removeprefix("rank")))
    ]


class RecordingCheckpointIO(AtomicCheckpointIO):
    """The run's checkpoint I/O, which also appends `global_rank path` to `log_path` for every file it writes.

    Several ranks saving the same checkpoint would write the same path, so the files alone cannot
    show it; this log can. The line is appended with O_APPEND, so writers on every rank may share it.
    """

    def __init__(self, log_path: str) -> None:
        super().__init__()
        self.log_path = log_path

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        """Log the write, then write as `AtomicCheckpointIO` does."""
        rank = dist.get_rank() if dist.is_initialized() else 0
        with open(self.log_path, "a") as log:
            log.write(f"{rank} {path}\n")
        super().save_checkpoint(checkpoint, path, storage_options)
