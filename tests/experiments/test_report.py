"""`lit-pretrain report`: TensorBoard event files of a (resumed) run -> PNG plots and README.md."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from lit_pretrain.cli import main
from lit_pretrain.experiments.report import format_count, format_duration, read_scalars, smooth, tokens_at

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_FIGURES = {"loss.png", "lr.png", "throughput.png", "time.png", "memory.png", "grad_norm.png"}
T0 = 1_700_000_000.0
TOKENS_PER_STEP = 1024
# Validation losses of the run as it continued (step -> loss); the best is not the last.
VAL = {24: 6.0, 49: 5.0, 74: 4.0, 99: 3.5, 124: 3.2, 149: 3.0, 174: 2.9, 199: 2.95}
STALE = 99.0  # what the first attempt logged at the steps the resumed run did again


def train_loss(step: int) -> float:
    return 2.0 + 8.0 * math.exp(-step / 50) + 0.1 * math.sin(1.7 * step)  # a noisy decay from ln(vocab)


def tokens_per_sec(step: int) -> float:
    return 100.0 if step == 0 else 5000.0 + 150.0 * math.cos(0.7 * step)  # the first window is warm-up


def log_steps(writer: SummaryWriter, steps: range, start_time: float, stale: bool = False) -> None:
    """Log `steps` as LitPretrain, the throughput callback and the monitoring callbacks do: one second per
    step from `start_time`. A `stale` attempt logs, from step 40 on, losses the resumed run must overwrite."""
    for step in steps:
        wall = start_time + (step - steps.start)
        stale_here = stale and step >= 40

        def scalar(tag: str, value: float, step: int = step, wall: float = wall) -> None:
            writer.add_scalar(tag, value, step, walltime=wall)

        # A skipped step logs its non-finite loss.
        loss = math.nan if step == 130 else train_loss(step) + (STALE if stale_here else 0.0)
        scalar("train/loss", loss)
        scalar("train/tokens_seen", float((step + 1) * TOKENS_PER_STEP))
        scalar("train/lr", 3e-4 * min(1.0, (step + 1) / 20) * (0.55 + 0.45 * math.cos(math.pi * step / 200)))
        scalar("train/grad_norm", 5.0 * math.exp(-step / 40) + 0.3)
        if step % 10 == 0:
            scalar("perf/tokens_per_sec", tokens_per_sec(step))
            scalar("perf/mfu", tokens_per_sec(step) * 5e-5)
            scalar("perf/step_time_ms", 205.0 + (step % 30))
            scalar("perf/dataloader_wait_ms", 3.0 + (step % 7))
            scalar("memory/rss_gb", 2.0 + step / 400)
        if step in (130, 150):
            scalar("train/skipped_steps", 1.0 if step == 130 else 2.0)
        if step in VAL:
            loss = STALE if stale_here else VAL[step]
            scalar("val/loss", loss)
            scalar("val/ppl", math.exp(min(loss, 50.0)))
            scalar("val/code/loss", loss - 0.3)
            scalar("val/text/loss", loss + 0.2)
    writer.flush()


def write_resumed_run(run_dir: Path) -> None:
    """Steps 0-59, then a resume from step 40's checkpoint into the same version directory (a second event
    file) up to step 99, then a resume into version_1 up to step 199; and an unrelated run below RUN_DIR."""
    first = SummaryWriter(str(run_dir / "tensorboard" / "version_0"))
    log_steps(first, range(0, 60), T0, stale=True)
    first.close()
    second = SummaryWriter(str(run_dir / "tensorboard" / "version_0"))
    log_steps(second, range(40, 100), T0 + 1000)
    second.close()
    third = SummaryWriter(str(run_dir / "tensorboard" / "version_1"))
    log_steps(third, range(100, 200), T0 + 2000)
    third.close()
    # `make pretrain` validates the untrained model in RUN_DIR/untrained: not part of this run.
    baseline = SummaryWriter(str(run_dir / "untrained" / "tensorboard" / "version_0"))
    baseline.add_scalar("val/loss", 10.5, 0, walltime=T0 - 5000)
    baseline.close()


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A resumed run with every tag, its report written by `lit-pretrain report`, and what it printed."""
    import contextlib
    import io

    run_dir = tmp_path_factory.mktemp("run")
    write_resumed_run(run_dir)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["report", str(run_dir)])
    return run_dir, printed.getvalue()


def assert_png(path: Path) -> tuple[int, int]:
    """`path` is a non-empty PNG; its (height, width) in pixels."""
    import matplotlib.image

    assert path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.std() > 0  # not a blank canvas
    return image.shape[0], image.shape[1]


def test_scalars_merge_event_files_and_later_wall_time_wins(tmp_path: Path):
    write_resumed_run(tmp_path)
    scalars = read_scalars(tmp_path)
    losses = scalars["train/loss"]
    assert [p.step for p in losses] == list(range(200))
    # Steps 40-59 were logged twice: the resumed run's values (written later) win.
    assert losses[45].value == pytest.approx(train_loss(45))
    assert losses[39].value == pytest.approx(train_loss(39))  # the first attempt's, not logged again
    val = {p.step: p.value for p in scalars["val/loss"]}
    assert val == pytest.approx(VAL)  # no stale 99 at step 49, and no baseline point at step 0
    assert {"val/code/loss", "val/text/loss", "memory/rss_gb", "train/skipped_steps"} <= set(scalars)


def test_the_report_holds_the_runs_numbers(resumed_run: tuple[Path, str]):
    run_dir, _ = resumed_run
    readme = (run_dir / "report" / "README.md").read_text()
    assert "| last logged step | 199 |" in readme
    assert f"| tokens | {200 * TOKENS_PER_STEP:,} (205k) |" in readme
    assert "| wall time | 34m 59s |" in readme  # T0 .. T0 + 2000 + 99
    assert f"| final train loss | {train_loss(199):.4f} |" in readme
    assert f"| final val loss | 2.9500 (ppl {math.exp(2.95):.2f}) |" in readme
    assert "| best val loss | 2.9000 at step 174 |" in readme
    # The warm-up point (100 tokens/s) is left out of the means.
    mean = sum(tokens_per_sec(step) for step in range(10, 200, 10)) / 19
    assert f"| mean tokens/s | {format_count(mean)} |" in readme and format_count(mean) == "5.01k"
    assert f"| mean MFU | {100 * mean * 5e-5:.1f}% |" in readme
    assert "| skipped steps | 2 |" in readme
    assert "| code | 2.6500 |" in readme and "| text | 3.1500 |" in readme
    for name in sorted(ALL_FIGURES):
        assert f"]({name})" in readme


def test_the_report_draws_every_figure_as_png(resumed_run: tuple[Path, str]):
    run_dir, printed = resumed_run
    report = run_dir / "report"
    assert {p.name for p in report.glob("*.png")} == ALL_FIGURES
    sizes = {name: assert_png(report / name) for name in ALL_FIGURES}
    assert sizes["loss.png"][1] > sizes["lr.png"][1]  # the loss figure has a second panel, by tokens
    assert f"Report: {report / 'README.md'}" in printed
    for name in ALL_FIGURES:
        assert str(report / name) in printed


def test_a_run_with_few_tags_gets_only_its_figures(tmp_path: Path):
    # Event files directly in RUN_DIR/tensorboard/, no version directory; no tokens, val or perf tags.
    writer = SummaryWriter(str(tmp_path / "tensorboard"))
    for step in range(30):
        writer.add_scalar("train/loss", train_loss(step), step, walltime=T0 + step)
        writer.add_scalar("train/lr", 1e-3, step, walltime=T0 + step)
    writer.close()
    stale = tmp_path / "elsewhere" / "memory.png"  # left by an earlier report into the same directory
    stale.parent.mkdir()
    stale.write_bytes(PNG_SIGNATURE)
    main(["report", str(tmp_path), "--output_dir", str(tmp_path / "elsewhere")])
    output = tmp_path / "elsewhere"
    assert {p.name for p in output.glob("*.png")} == {"loss.png", "lr.png"}
    assert not (tmp_path / "report").exists()
    height, width = assert_png(output / "loss.png")
    assert width < 1000  # one panel: no tokens axis without train/tokens_seen
    readme = (output / "README.md").read_text()
    assert "| last logged step | 29 |" in readme and "| skipped steps | 0 |" in readme
    assert "| final val loss" not in readme and "| tokens |" not in readme and "MFU" not in readme
    assert "memory.png" not in readme and "![Learning rate](lr.png)" in readme


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_directory_without_event_files_is_a_user_error(tmp_path: Path, make: str):
    run_dir = tmp_path / "run"
    if make == "empty":
        (run_dir / "tensorboard" / "version_0").mkdir(parents=True)
        message = r"no TensorBoard event files .*run.*tensorboard"
    else:
        message = r"run directory .*run does not exist"
    with pytest.raises(SystemExit, match=rf"^lit-pretrain report: error: {message}"):
        main(["report", str(run_dir)])


def test_tokens_between_and_beyond_logged_steps():
    from lit_pretrain.experiments.report import Point

    scalars = {"train/tokens_seen": [Point(s, (s + 1) * 100.0, 0.0) for s in (10, 20, 30)]}
    assert tokens_at([15, 30, 40], scalars) == pytest.approx([1600, 3100, 4100])
    assert tokens_at([5], {}) is None


def test_durations_read_as_people_write_them():
    assert format_duration(12.34) == "12.3s"
    assert format_duration(245) == "4m 05s"
    assert format_duration(3723) == "1h 02m 03s"
    assert format_duration(2 * 86400 + 3 * 3600 + 4 * 60) == "2d 03h 04m"


def test_counts_read_with_k_m_b_t():
    assert [format_count(v) for v in (0, 789, 45_600, 999_999, 1_234_567, 3e11, 2.5e12)] == [
        "0",
        "789",
        "45.6k",
        "1M",
        "1.23M",
        "300B",
        "2.5T",
    ]


def test_smoothing_skips_a_non_finite_loss():
    smoothed = smooth([4.0, math.nan, 4.0, math.inf, 2.0], weight=0.5)
    assert smoothed[:4] == pytest.approx([4.0, 4.0, 4.0, 4.0])  # debiased: no pull towards 0
    assert smoothed[4] == pytest.approx((0.5 * 0.75 * 4.0 + 0.5 * 2.0) / 0.875)
    assert math.isnan(smooth([math.nan, 1.0])[0])
