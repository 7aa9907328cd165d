"""A stand-in for a Slurm cluster on one machine: `sbatch`, `srun` and `scontrol` on PATH, and a runner.

`sbatch` records each submitted script with its arguments and answers with a job id, as Slurm does;
`run_jobs` then runs every recorded job in submission order (dependencies are always submitted first),
each array index as its own process with the SLURM_* variables a real array task sees. `srun` runs its
command once; `scontrol show hostnames` names this machine. Everything above the scheduler (datatrove's
sbatch script, the pickled executor, ranks from SLURM_ARRAY_TASK_ID, completion markers) is the real code.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

_SBATCH = """#!/bin/bash
dir="$FAKE_SLURM_DIR/jobs"; mkdir -p "$dir"
n=$(( $(ls "$dir" | grep -c '\\.sh$') + 1 ))
cp "${@: -1}" "$dir/$n.sh"
printf '%s\\n' "${@:1:$#-1}" > "$dir/$n.args"
echo "Submitted batch job $n"
"""
_SRUN = """#!/bin/bash
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do
  case "$1" in -n|-N|--ntasks|--nodes) shift 2 ;; *) shift ;; esac
done
exec "$@"
"""
_SCONTROL = """#!/bin/bash
echo localhost
"""


def install(directory: Path) -> dict[str, str]:
    """Write the fake commands under `directory`; the environment that puts them first on PATH."""
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("sbatch", _SBATCH), ("srun", _SRUN), ("scontrol", _SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"FAKE_SLURM_DIR": str(directory), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def submitted(directory: Path) -> list[tuple[str, list[str]]]:
    """(script, sbatch arguments) of every submitted job, in submission order."""
    jobs = directory / "jobs"
    count = len(list(jobs.glob("*.sh"))) if jobs.exists() else 0
    return [
        ((jobs / f"{n}.sh").read_text(), (jobs / f"{n}.args").read_text().split("\n")[:-1])
        for n in range(1, count + 1)
    ]


def run_jobs(directory: Path, env: dict[str, str]) -> None:
    """Run every submitted job's array tasks in submission order; a failing task fails the run."""
    for job_id, (script, arguments) in enumerate(submitted(directory), start=1):
        array = re.search(r"^#SBATCH --array=(\d+)-(\d+)", script, re.MULTILINE)
        indices = range(int(array.group(1)), int(array.group(2)) + 1) if array else [None]
        exported = {}
        for argument in arguments:
            if argument.startswith("--export=ALL,"):
                exported.update(
                    pair.split("=", 1) for pair in argument.removeprefix("--export=ALL,").split(",")
                )
        for index in indices:
            task_env = {
                **os.environ,
                **env,
                **exported,
                "SLURM_JOB_ID": str(job_id),
                "SLURM_NODELIST": "localhost",
            }
            if index is not None:
                task_env["SLURM_ARRAY_TASK_ID"] = str(index)
            done = subprocess.run(["bash", "-c", script], env=task_env, capture_output=True, text=True)
            assert done.returncode == 0, (
                f"job {job_id} task {index}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
