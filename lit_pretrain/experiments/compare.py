"""Several runs side by side: a table of their headline numbers and their loss curves overlaid.

`lit-pretrain compare RUN_DIR... | SWEEP_DIR` (cli/compare.py) calls `write_comparison`. Each run's scalars
are read from its TensorBoard event files (experiments/report.py); its size and FLOPs per token from the
`result.json` that `fit` writes at the end, or else from its saved `config.yaml`. FLOPs are training FLOPs
(6 N D plus attention, model/flops.py) of the tokens seen.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lit_pretrain.experiments.report import (
    TOKENS_SEEN,
    TRAIN_LOSS,
    VAL_LOSS,
    Scalars,
    Summary,
    _log_y_if_wide,
    _style,
    format_count,
    read_scalars,
    smooth,
    summarize,
    tokens_at,
)
from lit_pretrain.experiments.sweep import (
    CONFIG_FILE,
    MANIFEST_FILE,
    RESULT_FILE,
    read_result,
    sweep_run_dirs,
)
from lit_pretrain.model import num_parameters, training_flops_per_token
from lit_pretrain.training.module import resolve_model_config

FIGURE = "compare.png"
TABLE = "compare.md"
DATA = "compare.json"
BITS_PER_BYTE_SUFFIX = "/bits_per_byte"


@dataclass(frozen=True)
class RunRecord:
    """What a comparison shows of one run."""

    name: str
    directory: Path
    parameters: int | None
    parameters_without_embedding: int | None
    flops_per_token: int | None
    summary: Summary
    bits_per_byte: float | None  # the last in-loop evaluation's, when one ran
    status: str | None  # result.json's: finished, stopped; None when fit did not write one
    tokens: int | None  # seen in training: result.json's count, else the last logged one

    @property
    def flops(self) -> float | None:
        """Training FLOPs of the tokens seen."""
        if self.flops_per_token is None or self.tokens is None:
            return None
        return float(self.flops_per_token) * self.tokens


def is_run_dir(path: Path) -> bool:
    """Whether `path` looks like a training run's directory (logs or a result of `fit`)."""
    return (path / "tensorboard").is_dir() or (path / RESULT_FILE).is_file()


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """The run directories named by `paths`: a run directory, a sweep's output directory (its runs, in the
    sweep's order) or any directory whose subdirectories are runs."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path} is not a directory: pass run directories or a sweep's output_dir"
            )
        if (path / MANIFEST_FILE).is_file():
            found += [run for run in sweep_run_dirs(path) if is_run_dir(run)]
        elif is_run_dir(path):
            found.append(path)
        else:
            children = sorted(child for child in path.iterdir() if child.is_dir() and is_run_dir(child))
            if not children:
                raise FileNotFoundError(
                    f"{path} holds no training run: a run directory has tensorboard/ or result.json"
                )
            found += children
    return found


def _config_of(run_dir: Path) -> dict[str, Any] | None:
    versions = sorted(
        run_dir.glob(f"tensorboard/version_*/{CONFIG_FILE}"), key=lambda p: int(p.parent.name.split("_")[-1])
    )
    candidates = [run_dir / CONFIG_FILE, *versions]
    for path in candidates:
        if path.is_file():
            config = yaml.safe_load(path.read_text())
            return config.get("fit", config) if isinstance(config, dict) else None
    return None


def model_size(run_dir: Path) -> tuple[int | None, int | None, int | None]:
    """(parameters, parameters without embedding, training FLOPs per token) of the run in `run_dir`."""
    result = read_result(run_dir) or {}
    if result.get("parameters"):
        return result["parameters"], result.get("parameters_without_embedding"), result.get("flops_per_token")
    config = _config_of(run_dir)
    if not config or "model" not in config:
        return None, None, None
    model = config["model"]
    model_config = resolve_model_config(
        model.get("model_name", "tiny"), model.get("model_overrides"), model.get("init_from")
    )
    seq_len = (config.get("data") or {}).get("seq_len") or model_config.block_size
    return (
        num_parameters(model_config),
        num_parameters(model_config, include_embedding=False),
        training_flops_per_token(model_config, seq_len),
    )


def run_label(run_dir: Path, all_dirs: Sequence[Path]) -> str:
    """A short name: the directory name, or parent/name where two runs share a name."""
    names = [d.name for d in all_dirs]
    return run_dir.name if names.count(run_dir.name) == 1 else f"{run_dir.parent.name}/{run_dir.name}"


def read_run(run_dir: Path, name: str | None = None) -> tuple[RunRecord, Scalars]:
    """A run's record and its scalars."""
    scalars = read_scalars(run_dir)
    parameters, without_embedding, flops_per_token = model_size(run_dir)
    bpb_tags = sorted(tag for tag in scalars if tag.endswith(BITS_PER_BYTE_SUFFIX))
    summary = summarize(scalars)
    result = read_result(run_dir)
    record = RunRecord(
        name=name or run_dir.name,
        directory=run_dir,
        parameters=parameters,
        parameters_without_embedding=without_embedding,
        flops_per_token=flops_per_token,
        summary=summary,
        bits_per_byte=scalars[bpb_tags[0]][-1].value if bpb_tags else None,
        status=None if result is None else result.get("status"),
        tokens=(result or {}).get("tokens_seen", summary.tokens),
    )
    return record, scalars


def _cell(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format_count(value) if fmt == "count" else format(value, fmt)


def format_table(records: Sequence[RunRecord]) -> str:
    """A Markdown table: parameters, tokens, FLOPs, final train and val loss, bits per byte, tokens/s, MFU."""
    header = "| run | status | params | tokens | FLOPs | train loss | val loss | best val | bits/byte | tokens/s | MFU |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in records:
        s = r.summary
        mfu = None if s.mean_mfu is None else 100 * s.mean_mfu
        lines.append(
            f"| {r.name} | {r.status or '-'} | {_cell(r.parameters, 'count')} | {_cell(r.tokens, 'count')} | "
            f"{_cell(r.flops, '.3g')} | {_cell(s.final_train_loss, '.4f')} | {_cell(s.final_val_loss, '.4f')} | "
            f"{_cell(s.best_val_loss, '.4f')} | {_cell(r.bits_per_byte, '.4f')} | "
            f"{_cell(s.mean_tokens_per_sec, 'count')} | {_cell(mfu, '.1f')}{'%' if mfu is not None else ''} |"
        )
    return "\n".join(lines)


def draw_comparison(runs: Sequence[tuple[RunRecord, Scalars]], path: Path) -> Path:
    """Train (smoothed) and validation loss of every run against steps, tokens and FLOPs, in one PNG."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"axes.titlesize": "medium"}):
        fig = Figure(figsize=(15, 8), dpi=110, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, 3, sharey="row")
        x_axes = (("step", None), ("tokens seen", "tokens"), ("training FLOPs", "flops"))
        # Ten runs or fewer: the default cycle; more: twenty distinct colours rather than repeats.
        colors = (
            [f"C{i}" for i in range(10)] if len(runs) <= 10 else list(matplotlib.colormaps["tab20"].colors)
        )
        for row, (tag, title) in enumerate(((TRAIN_LOSS, "train loss"), (VAL_LOSS, "validation loss"))):
            values_in_row: list[float] = []
            for column, (xlabel, kind) in enumerate(x_axes):
                ax = axes[row][column]
                for index, (record, scalars) in enumerate(runs):
                    points = scalars.get(tag)
                    if not points:
                        continue
                    steps = np.array([p.step for p in points], dtype=float)
                    values = np.array([p.value for p in points], dtype=float)
                    if tag == TRAIN_LOSS and len(values) > 20:
                        values = smooth(values, 0.8)
                    x = _x_values(steps, scalars, kind, record)
                    if x is None:
                        continue
                    marker = "o" if tag == VAL_LOSS else None
                    ax.plot(
                        x,
                        values,
                        color=colors[index % len(colors)],
                        marker=marker,
                        markersize=3,
                        label=record.name,
                    )
                    values_in_row += list(values)
                _style(ax, xlabel, title if column == 0 else "", f"{title} by {xlabel}")
                if kind == "flops":
                    ax.set_xscale("log")
                    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator())
                    ax.xaxis.set_major_formatter(matplotlib.ticker.LogFormatterSciNotation())
                    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            _log_y_if_wide(axes[row][0], np.array(values_in_row, dtype=float))
        # One legend for all panels: every run's colour is the same in each.
        handles, labels = axes[0][0].get_legend_handles_labels()
        if not handles:
            handles, labels = axes[1][0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside right center", fontsize="small")
        fig.suptitle(f"{len(runs)} runs")
        fig.savefig(path)
    return path


def _x_values(steps: np.ndarray, scalars: Scalars, kind: str | None, record: RunRecord) -> np.ndarray | None:
    if kind is None:
        return steps
    tokens = tokens_at(steps, scalars) if scalars.get(TOKENS_SEEN) else None
    if tokens is None:
        return None
    if kind == "tokens":
        return tokens
    if record.flops_per_token is None:
        return None
    return np.maximum(tokens * record.flops_per_token, 1.0)  # log axis: no zero


def write_comparison(paths: Sequence[str | Path], output_dir: str | Path) -> tuple[str, list[Path]]:
    """Compare the runs named by `paths`: the table (also returned), its JSON and the overlaid curves."""
    run_dirs = find_runs(paths)
    if not run_dirs:
        raise FileNotFoundError(f"no finished or started runs under {', '.join(map(str, paths))}")
    runs = [read_run(run_dir, run_label(run_dir, run_dirs)) for run_dir in run_dirs]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    table = format_table([record for record, _ in runs])
    (output_dir / TABLE).write_text(
        f"# Comparison of {len(runs)} runs\n\n{table}\n\n![loss curves]({FIGURE})\n"
    )
    data = [
        {
            **asdict(record.summary),  # first: the record's own tokens (result.json's exact count) win
            **{k: v for k, v in asdict(record).items() if k not in ("summary", "directory")},
            "directory": str(record.directory),
            "flops": record.flops,
        }
        for record, _ in runs
    ]
    (output_dir / DATA).write_text(json.dumps(data, indent=2) + "\n")
    figure = draw_comparison(runs, output_dir / FIGURE)
    return table, [output_dir / TABLE, output_dir / DATA, figure]
