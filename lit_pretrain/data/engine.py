"""Prepare's task phases (tasks.py) run by datatrove's executors: which tasks ran, which failed, reruns.

datatrove runs each phase as an executor of `tasks` ranks, marks a rank complete only after it returned,
and skips completed ranks when the same job is launched again, so a failed or killed task is rerun alone.
Its local executor runs the ranks in a pool of `workers` processes on this machine; its Slurm executor
runs the same steps as job arrays (docs/data.md).
"""

from __future__ import annotations

import logging
import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lit_pretrain.data.manifest import read_manifest
from lit_pretrain.data.tasks import (
    DECIDE,
    MERGE,
    PLAN,
    SCREEN,
    TOKENIZE,
    TaskPlan,
    decide_task,
    load_plan,
    make_plan,
    merge_task,
    save_plan,
    screen_task,
    tokenize_task,
)

log = logging.getLogger(__name__)


class PhaseStep:
    """One phase as a datatrove pipeline step: called with (data, rank, world_size), runs task `rank`."""

    def __init__(self, phase: str, work: str, output_dir: str = "") -> None:
        self.phase, self.work, self.output_dir = phase, work, output_dir

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> None:
        """Run this phase's task `rank` on the work directory."""
        work = Path(self.work)
        if self.phase == SCREEN:
            screen_task(work, rank)
        elif self.phase == DECIDE:
            decide_task(work)
        elif self.phase == TOKENIZE:
            tokenize_task(work, rank)
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
) -> dict[str, Any]:
    """`prepare` as screen / decide / tokenize / merge phases of `tasks` tasks on datatrove's local executor.

    The work directory (default: OUTPUT.tasks) keeps each phase's outputs and which tasks completed:
    launching the same job again reruns only what did not complete. Returns the manifest.
    """
    from datatrove.executor import LocalPipelineExecutor

    if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
        raise ValueError(f"tasks must be a whole number, 1 or more, got {tasks!r}")
    output_dir = Path(output_dir)
    work = Path(work_dir) if work_dir is not None else output_dir.with_name(output_dir.name + ".tasks")
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists: pass --overwrite to replace it")
    plan = make_plan(inputs, val_inputs, options, tasks)
    _start_or_resume(work, plan)
    phases = ((SCREEN, tasks), (DECIDE, 1), (TOKENIZE, tasks), (MERGE, 1))
    for phase, ranks in phases:
        executor = LocalPipelineExecutor(
            pipeline=[PhaseStep(phase, str(work), str(output_dir))],
            tasks=ranks,
            workers=min(workers, ranks),
            logging_dir=str(work / "logs" / phase),
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
            else:
                described = f"the {phase} task"
            raise RuntimeError(
                f"phase {phase}: {len(incomplete)} task(s) did not complete ({described}): {failure}. Their "
                f"logs are in {work / 'logs' / phase / 'logs'}; run the same command again to rerun only them."
            ) from failure
    manifest = read_manifest(output_dir)
    shutil.rmtree(work)
    return manifest


def _start_or_resume(work: Path, plan: TaskPlan) -> None:
    """A new work directory for a new job; the same job's directory is resumed, another job's refused."""
    if (work / PLAN).exists():
        previous = load_plan(work)
        if pickle.dumps(previous) == pickle.dumps(plan):
            log.info("resuming the job in %s: completed tasks are skipped", work)
            return
        raise ValueError(
            f"{work} holds another prepare job (other inputs or options): remove it, or pass --work_dir"
        )
    shutil.rmtree(work, ignore_errors=True)
    save_plan(plan, work)
