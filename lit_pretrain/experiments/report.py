"""A training run's report: PNG plots of its TensorBoard scalars and a Markdown summary, `RUN_DIR/report/`.

`lit-pretrain report RUN_DIR` (lit_pretrain/cli/report.py) calls `write_report`. The scalars are read with
TensorBoard's own reader from every `events.out.tfevents.*` file of the run: a resumed run adds event files
(in the same `version_*` directory or a new one), so all are merged and, where two files hold the same tag
and step, the point written last (by wall time) wins. Nothing here needs a GPU, the model or the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EVENT_FILE_GLOB = "events.out.tfevents.*"
README = "README.md"
DPI = 120
# Tags the logged run writes (training/module.py, callbacks/throughput.py, the memory and timing callbacks).
TRAIN_LOSS, VAL_LOSS, VAL_PPL = "train/loss", "val/loss", "val/ppl"
TOKENS_SEEN, LR, GRAD_NORM, SKIPPED_STEPS = (
    "train/tokens_seen",
    "train/lr",
    "train/grad_norm",
    "train/skipped_steps",
)
TOKENS_PER_SEC, MFU = "perf/tokens_per_sec", "perf/mfu"
STEP_TIME, DATALOADER_WAIT = "perf/step_time_ms", "perf/dataloader_wait_ms"
MEMORY_TAGS = {
    "memory/rss_gb": "host RSS",
    "memory/max_allocated_gb": "device max allocated",
    "memory/max_reserved_gb": "device max reserved",
}
# A loss or gradient-norm axis whose values span more than this ratio is drawn on a log scale; a
# narrower one reads better on a linear axis (a log axis within one decade has one or two labels).
LOG_SCALE_RATIO = 3.0
# Above this many points the raw training loss is drawn faintly under an exponential moving average.
SMOOTH_ABOVE = 50


@dataclass(frozen=True)
class Point:
    """One logged value of a scalar."""

    step: int
    value: float
    wall_time: float


Scalars = dict[str, list[Point]]


def find_event_files(run_dir: str | Path) -> list[Path]:
    """The TensorBoard event files of the run in `run_dir`, sorted by path.

    Only `run_dir/tensorboard/` is searched when it exists: the run directory may hold other runs below it
    (`make pretrain` puts the untrained baseline's validation in `RUN_DIR/untrained/`).
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir} is not a directory: pass a run's --trainer.default_root_dir")
    tensorboard_dir = run_dir / "tensorboard"
    root = tensorboard_dir if tensorboard_dir.is_dir() else run_dir
    files = sorted(path for path in root.rglob(EVENT_FILE_GLOB) if path.is_file())
    if not files:
        raise FileNotFoundError(
            f"no TensorBoard event files ({EVENT_FILE_GLOB}) under {root}: is {run_dir} a training run's "
            "--trainer.default_root_dir?"
        )
    return files


def read_event_file(path: str | Path) -> Scalars:
    """Every scalar point of one event file, by tag, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    # One file at a time and no purging: merging (and deciding which of two points wins) is ours to do,
    # across files and version directories alike. size_guidance 0 keeps every point, not a sample.
    accumulator = EventAccumulator(str(path), size_guidance={SCALARS: 0}, purge_orphaned_data=False)
    accumulator.Reload()
    return {
        tag: [Point(int(e.step), float(e.value), float(e.wall_time)) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()[SCALARS]
    }


def merge_scalars(parts: Sequence[Scalars]) -> Scalars:
    """The union of `parts` by tag, in step order; of two points at one step the later wall time wins."""
    by_step: dict[str, dict[int, Point]] = {}
    for part in parts:
        for tag, points in part.items():
            steps = by_step.setdefault(tag, {})
            for point in points:
                kept = steps.get(point.step)
                if kept is None or point.wall_time >= kept.wall_time:
                    steps[point.step] = point
    return {tag: [steps[step] for step in sorted(steps)] for tag, steps in sorted(by_step.items())}


def read_scalars(run_dir: str | Path) -> Scalars:
    """Every scalar of the run in `run_dir`, merged over its event files (see `merge_scalars`)."""
    files = find_event_files(run_dir)
    scalars = merge_scalars([read_event_file(path) for path in files])
    if not scalars:
        raise ValueError(f"the event files under {run_dir} hold no scalars ({len(files)} file(s) read)")
    return scalars


def source_loss_tags(scalars: Scalars) -> list[str]:
    """The per-source validation losses, `val/<source>/loss`, sorted by source."""
    return sorted(
        tag for tag in scalars if tag.startswith("val/") and tag.endswith("/loss") and tag.count("/") == 2
    )


def tokens_at(steps: Sequence[float], scalars: Scalars) -> np.ndarray | None:
    """`train/tokens_seen` at `steps`, interpolated linearly by step; None when it was not logged.

    Validation and training log at different steps; beyond the logged range the mean tokens per step
    continues the line rather than holding the last value.
    """
    points = scalars.get(TOKENS_SEEN)
    if not points:
        return None
    known_steps = np.array([p.step for p in points], dtype=float)
    known_tokens = np.array([p.value for p in points], dtype=float)
    steps_array = np.asarray(steps, dtype=float)
    tokens = np.interp(steps_array, known_steps, known_tokens)
    if len(points) > 1 and known_steps[-1] > known_steps[0]:
        rate = (known_tokens[-1] - known_tokens[0]) / (known_steps[-1] - known_steps[0])
        before, after = steps_array < known_steps[0], steps_array > known_steps[-1]
        tokens[before] = known_tokens[0] - (known_steps[0] - steps_array[before]) * rate
        tokens[after] = known_tokens[-1] + (steps_array[after] - known_steps[-1]) * rate
    return np.maximum(tokens, 0.0)


@dataclass(frozen=True)
class Summary:
    """The run's headline numbers; None where the tags behind a number were not logged."""

    last_step: int  # of any tag
    tokens: int | None
    wall_time_s: float
    final_train_loss: float | None
    final_val_loss: float | None
    final_val_ppl: float | None
    best_val_loss: float | None
    best_val_step: int | None
    mean_tokens_per_sec: float | None
    mean_mfu: float | None  # a fraction, not %
    skipped_steps: int
    val_loss_by_source: dict[str, float]  # source -> final val loss


def _last(scalars: Scalars, tag: str) -> float | None:
    points = scalars.get(tag)
    return points[-1].value if points else None


def _mean_after_warmup(scalars: Scalars, tag: str) -> float | None:
    points = scalars.get(tag)
    if not points:
        return None
    # The first window includes compilation, allocator warm-up and the first batches' loading.
    values = [p.value for p in (points[1:] if len(points) > 1 else points)]
    return float(np.mean(values))


def summarize(scalars: Scalars) -> Summary:
    """The headline numbers of merged scalars: last step and tokens, losses, throughput, skipped steps."""
    all_points = [point for points in scalars.values() for point in points]
    wall_times = [p.wall_time for p in all_points]
    val = scalars.get(VAL_LOSS, [])
    finite_val = [p for p in val if math.isfinite(p.value)]
    best = min(finite_val, key=lambda p: p.value) if finite_val else None
    final_val = val[-1] if val else None
    final_ppl = None
    if final_val is not None:
        ppl_points = {p.step: p.value for p in scalars.get(VAL_PPL, [])}
        final_ppl = ppl_points.get(final_val.step, math.exp(min(final_val.value, 700.0)))
    tokens = _last(scalars, TOKENS_SEEN)
    skipped = _last(scalars, SKIPPED_STEPS)
    return Summary(
        last_step=max(p.step for p in all_points),
        tokens=None if tokens is None else round(tokens),
        wall_time_s=max(wall_times) - min(wall_times),
        final_train_loss=_last(scalars, TRAIN_LOSS),
        final_val_loss=None if final_val is None else final_val.value,
        final_val_ppl=final_ppl,
        best_val_loss=None if best is None else best.value,
        best_val_step=None if best is None else best.step,
        mean_tokens_per_sec=_mean_after_warmup(scalars, TOKENS_PER_SEC),
        mean_mfu=_mean_after_warmup(scalars, MFU),
        skipped_steps=0 if skipped is None else round(skipped),
        val_loss_by_source={tag.split("/")[1]: scalars[tag][-1].value for tag in source_loss_tags(scalars)},
    )


def format_duration(seconds: float) -> str:
    """`seconds` as e.g. '2d 03h 04m', '1h 02m 03s', '4m 05s' or '12.3s'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


COUNT_SUFFIXES = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def format_count(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits with k, M, B or T, e.g. 1.23M, 45.6k, 300B, 789.

    B, not SI's G: token counts are written so (a 300B-token run).
    """
    value = float(f"{value:.{digits}g}")  # first, so that 999,999 becomes 1M and not 1e+03k
    for threshold, suffix in COUNT_SUFFIXES:
        if abs(value) >= threshold:
            return f"{value / threshold:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def _count_tick(value: float, _position: Any = None) -> str:
    return format_count(value, digits=4)


# One figure per theme: (file stem, title, the tags any of which makes the figure worth drawing).
FIGURES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("loss", "Loss", (TRAIN_LOSS, VAL_LOSS)),
    ("lr", "Learning rate", (LR,)),
    ("throughput", "Throughput", (TOKENS_PER_SEC, MFU)),
    ("time", "Step time", (STEP_TIME, DATALOADER_WAIT)),
    ("memory", "Memory", tuple(MEMORY_TAGS)),
    ("grad_norm", "Gradient norm", (GRAD_NORM,)),
)


def figures_to_draw(scalars: Scalars) -> list[str]:
    """The stems of `FIGURES` that have at least one of their tags in `scalars` (a source's val loss counts
    for the loss figure)."""
    present = set(scalars) | ({VAL_LOSS} if source_loss_tags(scalars) else set())
    return [stem for stem, _, tags in FIGURES if present.intersection(tags)]


def write_report_files(run_dir: str | Path, output_dir: str | Path | None = None) -> list[Path]:
    """Read the run in `run_dir`, write its plots and README.md into `output_dir` (default RUN_DIR/report);
    the files written, README.md first."""
    run_dir = Path(run_dir)
    scalars = read_scalars(run_dir)
    output_dir = Path(output_dir) if output_dir is not None else run_dir / "report"
    output_dir.mkdir(parents=True, exist_ok=True)
    images = draw_figures(scalars, output_dir)
    drawn = {path.stem for path in images}
    for stem, _, _ in FIGURES:
        # A figure of an earlier report whose tags are gone now would contradict this README.
        if stem not in drawn:
            (output_dir / f"{stem}.png").unlink(missing_ok=True)
    readme = output_dir / README
    readme.write_text(format_readme(summarize(scalars), images, run_dir))
    return [readme, *images]


def write_report(run_dir: str | Path, output_dir: str | Path | None = None) -> Path:
    """Write the report of the run in `run_dir` (see `write_report_files`); the path of its README.md."""
    return write_report_files(run_dir, output_dir)[0]


def format_readme(summary: Summary, images: Sequence[Path], run_dir: Path) -> str:
    """The Markdown report: a table of the headline numbers, per-source val losses, the plots."""
    # TensorBoard's step of the last point: 0-based, and only every log_every_n_steps, so not a count.
    rows = [("last logged step", f"{summary.last_step:,}")]
    if summary.tokens is not None:
        rows.append(("tokens", f"{summary.tokens:,} ({format_count(summary.tokens)})"))
    rows.append(("wall time", format_duration(summary.wall_time_s)))
    if summary.final_train_loss is not None:
        rows.append(("final train loss", f"{summary.final_train_loss:.4f}"))
    if summary.final_val_loss is not None:
        rows.append(("final val loss", f"{summary.final_val_loss:.4f} (ppl {summary.final_val_ppl:.2f})"))
        rows.append(("best val loss", f"{summary.best_val_loss:.4f} at step {summary.best_val_step:,}"))
    if summary.mean_tokens_per_sec is not None:
        rows.append(("mean tokens/s", format_count(summary.mean_tokens_per_sec)))
    if summary.mean_mfu is not None:
        rows.append(("mean MFU", f"{100 * summary.mean_mfu:.1f}%"))
    rows.append(("skipped steps", f"{summary.skipped_steps:,}"))
    lines = [
        f"# Training report: {run_dir}",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        "Wall time runs from the first logged event to the last, pauses between a stop and a resume included."
        + (
            " Means of tokens/s and MFU leave out the first logged point (warm-up)."
            if summary.mean_tokens_per_sec is not None or summary.mean_mfu is not None
            else ""
        ),
    ]
    if summary.val_loss_by_source:
        lines += [
            "",
            "## Validation loss per source",
            "",
            "| source | final val loss | ppl |",
            "|---|---|---|",
        ]
        for source, loss in summary.val_loss_by_source.items():
            lines.append(f"| {source} | {loss:.4f} | {math.exp(min(loss, 700.0)):.2f} |")
    if images:
        lines += ["", "## Plots"]
        titles = {stem: title for stem, title, _ in FIGURES}
        for image in images:
            lines += ["", f"![{titles.get(image.stem, image.stem)}]({image.name})"]
    return "\n".join(lines) + "\n"


# --- plotting -------------------------------------------------------------------------------------------


def _xy(scalars: Scalars, tag: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    points = scalars[tag]
    return (
        np.array([p.step for p in points], dtype=float),
        np.array([p.value * scale for p in points], dtype=float),
    )


def smooth(values: Sequence[float], weight: float = 0.9) -> np.ndarray:
    """TensorBoard's exponential moving average, debiased so that the first points are not pulled towards
    zero; a NaN or infinite value (a skipped step's loss) is left out, not carried into every later point."""
    smoothed, average, count = np.full(len(values), np.nan), 0.0, 0
    for i, value in enumerate(values):
        if math.isfinite(value):
            average, count = average * weight + (1 - weight) * value, count + 1
        if count:
            smoothed[i] = average / (1 - weight**count)
    return smoothed


def _style(ax: Any, xlabel: str, ylabel: str, title: str | None = None) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    # 1.2M rather than 1.2e6 with an offset in the corner: readable at a glance.
    ax.xaxis.set_major_formatter(FuncFormatter(_count_tick))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and tokens: no tick at step 2.5


def _legend(ax: Any, *more_axes: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    for other in more_axes:
        more_handles, more_labels = other.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        ax.legend(handles, labels, loc="best", fontsize="small", framealpha=0.85)


def _loss_lines(ax: Any, scalars: Scalars, x_of: Callable[[np.ndarray], np.ndarray]) -> None:
    if TRAIN_LOSS in scalars:
        steps, values = _xy(scalars, TRAIN_LOSS)
        if len(values) > SMOOTH_ABOVE:
            ax.plot(x_of(steps), values, color="C0", alpha=0.25, linewidth=0.8)
            ax.plot(x_of(steps), smooth(values), color="C0", label="train (smoothed)")
        else:
            ax.plot(x_of(steps), values, color="C0", label="train")
    if VAL_LOSS in scalars:
        steps, values = _xy(scalars, VAL_LOSS)
        ax.plot(x_of(steps), values, color="C1", marker="o", markersize=4, label="val")
    for i, tag in enumerate(source_loss_tags(scalars)):
        steps, values = _xy(scalars, tag)
        ax.plot(
            x_of(steps),
            values,
            color=f"C{i + 2}",
            linestyle="--",
            marker=".",
            linewidth=1,
            label=f"val: {tag.split('/')[1]}",
        )


def _plain_number(value: float, _position: Any = None) -> str:
    return f"{value:g}" if 1e-3 <= abs(value) < 1e5 else _compact_scientific(value)


def _log_y(ax: Any, values: np.ndarray) -> None:
    """A log y axis labelled with plain numbers (2, 3, 5, 10; not 2x10^0): many ticks per decade over a
    narrow range, fewer over many decades so that the labels do not crowd."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    values = values[np.isfinite(values) & (values > 0)]
    if len(values) == 0:  # a log axis of zeros alone draws nothing
        return
    decades = math.log10(values.max() / values.min())
    if decades < 1:
        subs: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0)
    else:
        subs = (1.0, 2.0, 3.0, 5.0) if decades < 1.5 else (1.0, 2.0, 5.0) if decades < 3 else (1.0,)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain_number))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _log_y_if_wide(ax: Any, values: np.ndarray) -> None:
    """A log y axis when the values span more than LOG_SCALE_RATIO: the first steps' loss (about ln of the
    vocabulary size) or a gradient-norm spike otherwise flattens everything else into a line at the bottom."""
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) >= 2 and values.max() / values.min() > LOG_SCALE_RATIO:
        _log_y(ax, values)


def _draw_loss(fig: Any, scalars: Scalars) -> None:
    with_tokens = bool(scalars.get(TOKENS_SEEN))
    axes = fig.subplots(1, 2, sharey=True) if with_tokens else [fig.subplots()]
    _loss_lines(axes[0], scalars, lambda steps: steps)
    _style(axes[0], "step", "loss", "by step")
    _legend(axes[0])
    if with_tokens:
        _loss_lines(axes[1], scalars, lambda steps: tokens_at(steps, scalars))
        _style(axes[1], "tokens seen", "", "by tokens")
        axes[1].tick_params(labelleft=True)
    tags = [TRAIN_LOSS, VAL_LOSS, *source_loss_tags(scalars)]
    _log_y_if_wide(axes[0], np.array([p.value for tag in tags for p in scalars.get(tag, [])], dtype=float))


def _compact_scientific(value: float, _position: Any = None) -> str:
    """3e-4, 2.5e-4, 0: how learning rates are written in configs (not 300µ, nor 0.0003 with an offset)."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _from_zero(ax: Any) -> None:
    """The y axis from 0, with room above the highest point (a flat top line would merge with the frame)."""
    ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.08)


def _draw_lr(fig: Any, scalars: Scalars) -> None:
    from matplotlib.ticker import FuncFormatter

    ax = fig.subplots()
    ax.plot(*_xy(scalars, LR), color="C0")
    _style(ax, "step", "learning rate")
    ax.yaxis.set_major_formatter(FuncFormatter(_compact_scientific))
    _from_zero(ax)


def _draw_throughput(fig: Any, scalars: Scalars) -> None:
    from matplotlib.ticker import FuncFormatter

    # Two panels, not two y axes: MFU is tokens/s times a constant, so on twin axes the lines coincide.
    panels = [tag for tag in (TOKENS_PER_SEC, MFU) if tag in scalars]
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, tag in zip(axes, panels, strict=True):
        last = ax is axes[-1]
        if tag == TOKENS_PER_SEC:
            ax.plot(*_xy(scalars, tag), color="C0", marker=".", markersize=3)
            _style(ax, "step" if last else "", "tokens/s")
            ax.yaxis.set_major_formatter(FuncFormatter(_count_tick))
        else:
            ax.plot(*_xy(scalars, tag, scale=100.0), color="C3", marker=".", markersize=3)
            _style(ax, "step" if last else "", "MFU (%)")
        _from_zero(ax)


def _draw_time(fig: Any, scalars: Scalars) -> None:
    ax = fig.subplots()
    for tag, label, color in ((STEP_TIME, "step", "C0"), (DATALOADER_WAIT, "waiting for data", "C1")):
        if tag in scalars:
            ax.plot(*_xy(scalars, tag), color=color, label=label)
    _style(ax, "step", "milliseconds")
    _from_zero(ax)
    _legend(ax)


def _draw_memory(fig: Any, scalars: Scalars) -> None:
    ax = fig.subplots()
    for i, (tag, label) in enumerate(MEMORY_TAGS.items()):
        if tag in scalars:
            ax.plot(*_xy(scalars, tag), color=f"C{i}", label=label)
    _style(ax, "step", "GiB")
    _from_zero(ax)
    _legend(ax)


def _draw_grad_norm(fig: Any, scalars: Scalars) -> None:
    ax = fig.subplots()
    steps, values = _xy(scalars, GRAD_NORM)
    ax.plot(steps, values, color="C0", linewidth=1)
    _style(ax, "step", "global gradient norm")
    _log_y_if_wide(ax, values)


DRAWERS: dict[str, Callable[[Any, Scalars], None]] = {
    "loss": _draw_loss,
    "lr": _draw_lr,
    "throughput": _draw_throughput,
    "time": _draw_time,
    "memory": _draw_memory,
    "grad_norm": _draw_grad_norm,
}


def draw_figures(scalars: Scalars, output_dir: str | Path) -> list[Path]:
    """One PNG per theme of `FIGURES` with any of its tags in `scalars`, into `output_dir`; their paths."""
    import matplotlib

    # Agg needs no display. The figures are made without pyplot, so no global backend is chosen or
    # switched (a notebook that calls this keeps its own) and no figure lingers in pyplot's registry.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    output_dir = Path(output_dir)
    titles = {stem: title for stem, title, _ in FIGURES}
    written = []
    with matplotlib.rc_context({"axes.titlesize": "medium", "figure.titlesize": "large"}):
        for stem in figures_to_draw(scalars):
            wide = stem == "loss" and bool(scalars.get(TOKENS_SEEN))
            tall = stem == "throughput" and TOKENS_PER_SEC in scalars and MFU in scalars
            figsize = (12, 4.5) if wide else (8, 6) if tall else (8, 4.5)
            fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
            FigureCanvasAgg(fig)
            DRAWERS[stem](fig, scalars)
            fig.suptitle(titles[stem])
            path = output_dir / f"{stem}.png"
            fig.savefig(path)
            written.append(path)
    return written
