"""`lit-pretrain sweep SWEEP.yaml`: run every combination of a sweep file, each in its own directory.

Each run is `lit-pretrain fit --config RUN_DIR/config.yaml --ckpt_path last` in a new process, so a run
that was interrupted continues from its newest checkpoint and a finished one (its `result.json` says so) is
skipped. A run that fails is reported with the end of its log and does not stop the others; the exit
status is 1 if any failed. `--dry-run` lists the runs with their size, FLOPs and estimated time;
`--emit slurm` writes a job-array script instead of running anything. The sweep file's format is in
lit_pretrain/experiments/sweep.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser

from lit_pretrain.cli.estimate import estimate_from_config, parse
from lit_pretrain.experiments.report import format_count, format_duration
from lit_pretrain.experiments.sweep import (
    CONFIG_FILE,
    LOG_FILE,
    RUN_FILE,
    PlannedRun,
    SweepSpec,
    apply_overrides,
    expand,
    read_result,
    read_sweep,
    run_status,
    write_manifest,
)
from lit_pretrain.model import num_parameters
from lit_pretrain.training.module import resolve_model_config

# Options of `estimate` that `fit` does not have: left out of a run's config.yaml.
ESTIMATE_ONLY = ("config", "gpu", "mfu", "devices", "max_tokens")
SLURM_SCRIPT = "sweep.sbatch"
SLURM_RUN_LIST = "runs.txt"
LOG_TAIL_LINES = 15


def resolved_config(spec: SweepSpec, run: PlannedRun) -> dict[str, Any]:
    """The whole `fit` configuration of `run`: the base files, then the overrides, then its directory."""
    base_args = [arg for path in spec.base for arg in ("--config", path)]
    base = _parse(base_args, f"{spec.path}: the base config(s) {', '.join(spec.base)}").config.as_dict()
    for key in ESTIMATE_ONLY:
        base.pop(key, None)
    config = apply_overrides(json.loads(json.dumps(base, default=str)), run.overrides)
    config["trainer"]["default_root_dir"] = str(run.directory)
    config["checkpoint"]["dirpath"] = None  # <run dir>/checkpoints, filled by `fit`
    model = config["model"]
    try:
        # Parsing does not build the model: a bad model setting (a misspelt field, n_embd not divisible by
        # n_head) would otherwise fail only once its run starts.
        model_config = resolve_model_config(
            model["model_name"], model.get("model_overrides"), model.get("init_from")
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{spec.path}: run {run.name}: the model settings are not valid: {err}") from err
    if run.flops_budget is not None:
        # N is every parameter (Hoffmann et al.'s count), as `scaling fit` counts it by default.
        model["max_tokens"] = round(run.flops_budget / (6 * num_parameters(model_config)))
    return config


def _parse(args: list[str], what: str) -> Any:
    """`fit`'s parser on `args`; a bad key or value raises ValueError with jsonargparse's own message."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parse(args)
    except SystemExit as err:
        lines = [
            line
            for line in errors.getvalue().splitlines()
            if line.strip() and not line.startswith(("usage:", " "))
        ]
        message = "\n".join(lines) or errors.getvalue().strip() or f"exit status {err.code}"
        raise ValueError(f"{what} is not a valid `fit` configuration:\n{message}") from None


def prepare_run(spec: SweepSpec, run: PlannedRun) -> tuple[Path, str | None]:
    """`run`'s config.yaml (checked by `fit`'s parser), written unless the run has one from these same
    settings; its path, and a message when the run was started with other settings."""
    config = resolved_config(spec, run)
    text = yaml.safe_dump(config, sort_keys=False)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(text)
    try:
        _parse(["--config", handle.name], f"{spec.path}: run {run.name} ({run.varied})")
    finally:
        Path(handle.name).unlink()
    path, record = run.directory / CONFIG_FILE, run.directory / RUN_FILE
    settings = {"base": list(spec.base), "overrides": run.overrides, "flops_budget": run.flops_budget}
    settings = json.loads(json.dumps(settings))
    if path.is_file():
        # Settings, not the resolved file, are compared: a new option's default must not make every
        # existing run look changed. An unchanged run keeps its config.yaml exactly as it started.
        before = json.loads(record.read_text()) if record.is_file() else None
        if before != settings:
            return path, (
                f"{run.directory} was started with other settings than {spec.path} now gives it "
                f"(before: {before}, now: {settings}); delete the directory to run it again with the new ones"
            )
        return path, None
    run.directory.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    record.write_text(json.dumps(settings, indent=2) + "\n")
    return path, None


def fit_command(config_path: Path) -> list[str]:
    """The command that runs (or continues) one run."""
    return [
        sys.executable,
        "-m",
        "lit_pretrain.cli",
        "fit",
        "--config",
        str(config_path),
        "--ckpt_path",
        "last",
    ]


def execute(run: PlannedRun, config_path: Path, prefix: str) -> int:
    """Run `fit` for `run`, its output into RUN_DIR/train.log and, prefixed, to the terminal; its exit status."""
    log_path = run.directory / LOG_FILE
    with (
        log_path.open("a") as log,
        subprocess.Popen(
            fit_command(config_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as process,
    ):
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if line.startswith("[progress]") or "Error" in line:
                    print(f"{prefix} {line.rstrip()}", flush=True)
        except KeyboardInterrupt:
            # The run got the Ctrl-C too and is saving a checkpoint: keep its output flowing (a closed pipe
            # would break its save) until it exits, then stop the sweep.
            print(f"{prefix} interrupted: waiting for the run to save a checkpoint", flush=True)
            for line in process.stdout:
                log.write(line)
            process.wait()
            raise
        return process.wait()


def log_tail(run: PlannedRun, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a run's log, indented, for a failure report."""
    path = run.directory / LOG_FILE
    if not path.is_file():
        return "    (no log)"
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail)


def dry_run(spec: SweepSpec, runs: Sequence[PlannedRun], gpu: str, mfu: float) -> None:
    """Print each run with its parameters, tokens, FLOPs and estimated time on `gpu` at `mfu`."""
    print(f"sweep {spec.name}: {len(runs)} runs in {spec.output_dir} (estimates on {gpu} at {mfu:.0%} MFU)")
    header = f"{'run':<40} {'status':<10} {'params':>8} {'tokens':>8} {'FLOPs':>9} {'time':>9}  varied"
    print(header)
    print("-" * len(header))
    total_flops = total_seconds = 0.0
    for run in runs:
        config = resolved_config(spec, run)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
            yaml.safe_dump(config, handle)
            handle.flush()
            result = estimate_from_config(parse(["--config", handle.name, "--gpu", gpu, "--mfu", str(mfu)]))
        steps = config["trainer"].get("max_steps") or -1
        if result.steps_to_max_tokens is not None and (steps < 0 or result.steps_to_max_tokens < steps):
            steps = result.steps_to_max_tokens
        tokens = steps * result.tokens_per_step if steps > 0 else None
        flops = steps * result.flops_per_step if steps > 0 else None
        seconds = steps * result.seconds_per_step if steps > 0 else None
        total_flops += flops or 0
        total_seconds += seconds or 0
        print(
            f"{run.name:<40} {run_status(run.directory):<10} {format_count(result.parameters):>8} "
            f"{format_count(tokens) if tokens else '?':>8} {f'{flops:.2e}' if flops else '?':>9} "
            f"{format_duration(seconds) if seconds else '?':>9}  {_shorten(json.dumps(run.varied))}"
        )
    print(f"total: {total_flops:.3e} FLOPs, {format_duration(total_seconds)} on one {gpu} at {mfu:.0%} MFU")


def emit_slurm(spec: SweepSpec, runs: Sequence[PlannedRun], config_paths: Sequence[Path]) -> Path:
    """Write a SLURM job-array script (one task per run) and the list of run configs it reads."""
    run_list = spec.output_dir / SLURM_RUN_LIST
    run_list.write_text("".join(f"{path.resolve()}\n" for path in config_paths))
    options = {
        "job-name": spec.name,
        "array": f"0-{len(runs) - 1}",
        "output": str((spec.output_dir / "slurm-%A_%a.out").resolve()),
        # Relative paths in the configs (data_dir, output_dir) mean what they meant here.
        "chdir": str(Path.cwd()),
        # Preemption: SIGTERM two minutes before the end, so the run saves a checkpoint (callbacks/preemption.py).
        "signal": "SIGTERM@120",
        "requeue": None,
        **{key.replace("_", "-"): value for key, value in spec.slurm.items()},
    }
    lines = ["#!/bin/bash"]
    lines += [
        f"#SBATCH --{key}" if value is None else f"#SBATCH --{key}={value}" for key, value in options.items()
    ]
    fit = shlex.join(["lit-pretrain", "fit"])
    lines += [
        f"# Written by `lit-pretrain sweep {spec.path} --emit slurm`: task i runs line i+1 of {run_list.name}.",
        "set -euo pipefail",
        f'CONFIG=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(run_list.resolve()))})',
        'RUN_DIR=$(dirname "$CONFIG")',
        'if grep -qs \'"status": "finished"\' "$RUN_DIR/result.json"; then',
        '  echo "$RUN_DIR is finished"; exit 0',
        "fi",
        f'srun {fit} --config "$CONFIG" --ckpt_path last --preemption.requeue true >> "$RUN_DIR/{LOG_FILE}" 2>&1',
        "",
    ]
    path = spec.output_dir / SLURM_SCRIPT
    path.write_text("\n".join(lines))
    path.chmod(0o755)
    return path


def run_all(
    spec: SweepSpec, runs: Sequence[PlannedRun], config_paths: Sequence[Path | None], problems: dict[str, str]
) -> int:
    """Run every run that is not finished, one after the other; print a summary; return 1 if any failed."""
    outcomes: dict[str, str] = {}
    durations: dict[str, float] = {}
    for index, (run, config_path) in enumerate(zip(runs, config_paths, strict=True), start=1):
        prefix = f"[{index}/{len(runs)} {run.name}]"
        status = run_status(run.directory)
        if status == "finished":
            outcomes[run.name] = "skipped (finished)"
            note = f" (note: {problems.pop(run.name)})" if run.name in problems else ""
            print(f"{prefix} finished before: skipped{note}", flush=True)
            continue
        if run.name in problems:
            outcomes[run.name] = "failed"
            print(f"{prefix} not run: {problems[run.name]}", flush=True)
            continue
        verb = "continuing" if status == "unfinished" else "starting"
        print(f"{prefix} {verb} in {run.directory}", flush=True)
        started = time.monotonic()
        returncode = execute(run, config_path, prefix)
        durations[run.name] = time.monotonic() - started
        if returncode == 0 and run_status(run.directory) == "finished":
            outcomes[run.name] = "finished"
        elif returncode == 0:
            outcomes[run.name] = "interrupted"
            print(f"{prefix} stopped before its end (run the sweep again to continue it)", flush=True)
        else:
            outcomes[run.name] = "failed"
            problems[run.name] = f"exit status {returncode}; log {run.directory / LOG_FILE}"
            print(
                f"{prefix} FAILED with exit status {returncode}; end of its log:\n{log_tail(run)}", flush=True
            )
    print_summary(spec, runs, outcomes, durations, problems)
    return 1 if any(outcome == "failed" for outcome in outcomes.values()) else 0


def print_summary(
    spec: SweepSpec,
    runs: Sequence[PlannedRun],
    outcomes: dict[str, str],
    durations: dict[str, float],
    problems: dict[str, str],
) -> None:
    """One line per run: how it ended, its steps, tokens, losses and time."""
    print(f"\n== sweep {spec.name}: {len(runs)} runs in {spec.output_dir}")
    header = f"{'run':<40} {'outcome':<19} {'steps':>6} {'tokens':>8} {'train':>7} {'val':>7} {'time':>8}"
    print(header)
    for run in runs:
        result = read_result(run.directory) or {}
        tokens = result.get("tokens_seen")
        print(
            f"{run.name:<40} {outcomes.get(run.name, '?'):<19} {result.get('global_step', ''):>6} "
            f"{format_count(tokens) if tokens else '':>8} {_loss(result.get('train/loss')):>7} "
            f"{_loss(result.get('val/loss')):>7} "
            f"{format_duration(durations[run.name]) if run.name in durations else '':>8}"
        )
    for name, problem in problems.items():
        print(f"FAILED {name}: {problem}")
    failed = sum(outcome == "failed" for outcome in outcomes.values())
    print(
        f"{len(runs) - failed} of {len(runs)} runs ok; compare them: lit-pretrain compare {spec.output_dir}"
    )


def _shorten(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _loss(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def main(argv: list[str]) -> None:
    """Parse `argv` (`SWEEP.yaml [--dry-run] [--emit slurm] [--only NAME ...]`) and do it."""
    parser = ArgumentParser(prog="lit-pretrain sweep", description="Run every combination of a sweep file.")
    parser.add_argument("sweep_file", type=str, help="the sweep (YAML: base, fixed, grid, runs)")
    parser.add_argument(
        "--dry-run", "--dry_run", dest="dry_run", action="store_true", help="list the runs, run nothing"
    )
    parser.add_argument(
        "--emit", type=str | None, default=None, choices=["slurm", None], help="write a job script"
    )
    parser.add_argument("--only", type=str, nargs="+", default=None, help="run only these runs (by name)")
    parser.add_argument(
        "--output_dir", type=str | None, default=None, help="instead of the file's output_dir"
    )
    parser.add_argument("--gpu", type=str, default="h100-sxm", help="device for --dry-run's time estimates")
    parser.add_argument("--mfu", type=float, default=0.4, help="MFU for --dry-run's time estimates")
    options = parser.parse_args(argv)
    spec = read_sweep(options.sweep_file)
    if options.output_dir:
        spec = SweepSpec(**{**vars(spec), "output_dir": Path(options.output_dir)})
    runs = expand(spec)
    if options.only:
        unknown = sorted(set(options.only) - {run.name for run in runs})
        if unknown:
            raise ValueError(
                f"--only: no run named {', '.join(unknown)}; the runs: {', '.join(r.name for r in runs)}"
            )
        runs = [run for run in runs if run.name in options.only]
    if options.dry_run:
        dry_run(spec, runs, options.gpu, options.mfu)
        return
    write_manifest(spec, expand(spec))
    problems: dict[str, str] = {}
    config_paths: list[Path | None] = []
    for run in runs:
        path, changed = prepare_run(spec, run)
        config_paths.append(path)
        if changed:
            problems[run.name] = changed
    if options.emit == "slurm":
        if problems:
            raise ValueError("\n".join(problems.values()))
        script = emit_slurm(spec, runs, config_paths)
        print(f"wrote {script} ({len(runs)} array tasks); submit it with: sbatch {script}")
        return
    if run_all(spec, runs, config_paths, problems):
        sys.exit(1)
