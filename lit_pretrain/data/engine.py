"""Prepare's task phases (tasks.py) run by datatrove's executors: which tasks ran, which failed, reruns.

datatrove runs each phase as an executor of `tasks` ranks, marks a rank complete only after it returned,
and skips completed ranks when the same job is launched again, so a failed or killed task is rerun alone.
Its local executor runs the ranks in a pool of `workers` processes on this machine; its Slurm executor
runs the same steps as job arrays (docs/data.md).
"""

from __future__ import annotations

import logging
import pickle
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lit_pretrain.data.manifest import read_manifest
from lit_pretrain.data.tasks import (
    DECIDE,
    DEDUP,
    MERGE,
    PLAN,
    SCREEN,
    TOKENIZE,
    WRITE,
    TaskPlan,
    decide_task,
    dedup_task,
    load_plan,
    make_plan,
    merge_task,
    save_plan,
    screen_task,
    tokenize_task,
    write_task,
)
from lit_pretrain.data.workdir import WorkDir

log = logging.getLogger(__name__)


class PhaseStep:
    """One phase as a datatrove pipeline step: called with (data, rank, world_size), runs task `rank`."""

    def __init__(self, phase: str, work: str, output_dir: str = "") -> None:
        self.phase, self.work, self.output_dir = phase, work, output_dir

    def __repr__(self) -> str:
        """How datatrove's task logs name the step."""
        return f"lit-pretrain prepare, {self.phase} phase (work directory {self.work})"

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> None:
        """Run this phase's task `rank` on the work directory."""
        work = WorkDir(self.work)
        try:
            self._run(work, rank)
        finally:
            work.cleanup()

    def _run(self, work: WorkDir, rank: int) -> None:
        if self.phase == SCREEN:
            screen_task(work, rank)
        elif self.phase == DEDUP:
            dedup_task(work, rank)
        elif self.phase == DECIDE:
            decide_task(work)
        elif self.phase == TOKENIZE:
            tokenize_task(work, rank)
        elif self.phase == WRITE:
            write_task(work, rank)
        else:
            merge_task(work, Path(self.output_dir))


def prepare_in_tasks(
    inputs: Sequence[str],
    output_dir: str | Path,
    options: Any,
    tasks: int,
    workers: int = 1,
    work_dir: str | Path | None = None,
    val_inputs: Sequence[str] = (),
    overwrite: bool = False,
    slurm: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """`prepare` as screen / dedup / decide / tokenize / write / merge phases of `tasks` tasks on
    datatrove's executors.

    The work directory (default: OUTPUT.tasks) keeps each phase's outputs and which tasks completed:
    launching the same job again reruns only what did not complete. Locally (`slurm` None) the phases
    run here, `workers` tasks at a time, and the manifest is returned. With `slurm` (the keyword
    arguments of datatrove's SlurmPipelineExecutor: partition, time, cpus_per_task, ...) the phases are
    submitted as six dependent job arrays and None is returned: the dataset appears at `output_dir` when
    the merge job ends.
    """
    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
        raise ValueError(f"tasks must be a whole number, 1 or more, got {tasks!r}")
    output_dir = Path(output_dir)
    work = WorkDir(work_dir if work_dir is not None else output_dir.with_name(output_dir.name + ".tasks"))
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists: pass --overwrite to replace it")
    plan = make_plan(inputs, val_inputs, options, tasks)
    _start_or_resume(work, plan)
    if slurm is not None:
        submit_to_slurm(work, output_dir, plan, slurm)
        return None
    return _run_locally(work, output_dir, plan, workers)


PHASES = (SCREEN, DEDUP, DECIDE, TOKENIZE, WRITE, MERGE)
_PARALLEL_PHASES = (SCREEN, DEDUP, TOKENIZE, WRITE)


def _ranks(phase: str, plan: TaskPlan) -> int:
    return plan.tasks if phase in _PARALLEL_PHASES else 1


def _run_locally(work: WorkDir, output_dir: Path, plan: TaskPlan, workers: int) -> dict[str, Any]:
    """Run the phases one after another on this machine; the work directory goes once all succeeded."""
    from datatrove.executor import LocalPipelineExecutor

    for phase in PHASES:
        ranks = _ranks(phase, plan)
        executor = LocalPipelineExecutor(
            pipeline=[PhaseStep(phase, work.location, str(output_dir))],
            tasks=ranks,
            workers=min(workers, ranks),
            logging_dir=work.url(f"logs/{phase}"),
            start_method="spawn",
        )
        log.info("phase %s: %d task(s), %d at a time", phase, ranks, min(workers, ranks))
        try:
            executor.run()
            failure = None
        except Exception as err:  # a task raised: name every incomplete task, then stop
            failure = err
        incomplete = executor.get_incomplete_ranks()
        if failure is not None or incomplete:
            if phase in (SCREEN, TOKENIZE):
                described = "; ".join(f"task {t}: {plan.describe(t)}" for t in incomplete[:5])
            elif phase in (DEDUP, WRITE):
                what = "key slice" if phase == DEDUP else "run of chunks"
                described = "; ".join(f"task {t}: {what} {t}" for t in incomplete[:5])
            else:
                described = f"the {phase} task"
            raise RuntimeError(
                f"phase {phase}: {len(incomplete)} task(s) did not complete ({described}): {failure}. Their "
                f"logs are in {work.url(f'logs/{phase}/logs')}; run the same command again to rerun only them."
            ) from failure
    manifest = read_manifest(output_dir)
    work.remove()
    return manifest


def submit_to_slurm(work: WorkDir, output_dir: Path, plan: TaskPlan, slurm: Mapping[str, Any]) -> None:
    """Submit the phases as job arrays, each after the previous one succeeded (datatrove's `depends`).

    Tasks already complete are not submitted again, so the same command after a failure resubmits only
    what is missing. The jobs activate this Python environment unless `env_command` says otherwise.
    """
    from datatrove.executor import SlurmPipelineExecutor

    settings = {"time": "24:00:00", "job_name": "lit-pretrain-prepare", "cpus_per_task": 1, **slurm}
    if "partition" not in settings:
        raise ValueError("--slurm needs a partition: --slurm '{partition: NAME, time: \"4:00:00\"}'")
    if "env_command" not in settings and "condaenv" not in settings and "venv_path" not in settings:
        settings["env_command"] = f"source {shlex.quote(str(Path(sys.prefix) / 'bin' / 'activate'))}"
    # sbatch writes its logs to a local (shared) directory, even when the work directory is a bucket.
    slurm_logs = (
        output_dir.resolve().with_name(output_dir.name + ".slurm-logs")
        if work.remote
        else Path(work.url("logs")) / "slurm"
    )
    previous = None
    for phase in PHASES:
        previous = SlurmPipelineExecutor(
            pipeline=[PhaseStep(phase, work.url(), str(output_dir.resolve()))],
            tasks=_ranks(phase, plan),
            logging_dir=work.url(f"logs/{phase}"),
            slurm_logs_folder=str(slurm_logs / phase),
            depends=previous,
            **{**settings, "job_name": f"{settings['job_name']}-{phase}"},
        )
    previous.run()  # launches its dependencies first
    log.info(
        "submitted the %s phases to Slurm; %s appears when the merge job ends. Logs: %s. After a failure, "
        "the same command resubmits only the tasks that did not complete.",
        "/".join(PHASES),
        output_dir,
        work.url("logs"),
    )


def _start_or_resume(work: WorkDir, plan: TaskPlan) -> None:
    """A new work directory for a new job; the same job's directory is resumed, another job's refused."""
    if work.exists(PLAN):
        previous = load_plan(work)
        if pickle.dumps(previous) == pickle.dumps(plan):
            log.info("resuming the job in %s: completed tasks are skipped", work)
            return
        raise ValueError(
            f"{work} holds another prepare job (other inputs or options): remove it, or pass --work_dir"
        )
    work.remove()
    save_plan(plan, work)
