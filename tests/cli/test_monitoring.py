"""What a `fit` run shows: TensorBoard scalars and hyperparameters, progress lines or bar, resumed logs."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.helpers.fault_injection import PAUSE_MID_SAVE_ENV
from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import _env, fit_args, fit_command, run_fit, scalars

# Every 2nd of 6 optimizer steps, validation after steps 3 and 6.
STEPS, LOG_EVERY = 6, 2
TRAIN_TAGS = [
    "train/loss",
    "train/ppl",
    "train/lr",
    "train/grad_norm",
    "train/tokens_seen",
    "train/skipped_steps",
    "perf/tokens_per_sec",
    "perf/tokens_per_sec_per_device",
    "perf/tflops_per_sec_per_device",
    "perf/mfu",
    "perf/step_time_ms",
    "perf/dataloader_wait_ms",
    "memory/rss_gb",
]
VAL_TAGS = ["val/loss", "val/ppl"]
CUDA_TAGS = ["memory/max_allocated_gb", "memory/max_reserved_gb"]


def _args(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return fit_args(
        corpus,
        run_dir,
        "--trainer.log_every_n_steps",
        str(LOG_EVERY),
        "--trainer.enable_progress_bar",
        "true",
        *extra,
    )


@pytest.fixture(scope="module")
def monitored_run(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """6 steps with --perf.peak_tflops, stdout a pipe; then resumed to 8 steps with --ckpt_path last."""
    run_dir = tmp_path_factory.mktemp("monitored")
    output = run_fit(_args(small_corpus, run_dir, "--perf.peak_tflops", "0.5"))
    resumed = run_fit(
        _args(
            small_corpus,
            run_dir,
            "--perf.peak_tflops",
            "0.5",
            "--trainer.max_steps",
            "8",
            "--ckpt_path",
            "last",
        )
    )
    return run_dir, output + resumed


def _first_run_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(s, v) for s, v in points if s < STEPS] for tag, points in scalars(run_dir).items()}


def test_every_cpu_tag_is_logged_at_every_logging_interval(monitored_run):
    run_dir, _ = monitored_run
    found = _first_run_scalars(run_dir)
    # TensorBoard's step is the count of optimizer steps before the logged one: steps 2, 4, 6 -> 1, 3, 5.
    for tag in TRAIN_TAGS:
        assert [step for step, _ in found.get(tag, [])] == [1, 3, 5], tag
    for tag in VAL_TAGS:
        assert len(found.get(tag, [])) == 2, tag
    sources = ["python-stdlib-code", "python-stdlib-prose"]
    for source in sources:
        assert len(found[f"val/{source}/loss"]) == 2 and len(found[f"data/tokens/{source}"]) == 3
    assert not set(CUDA_TAGS) & set(found), "CUDA memory is not logged on a CPU"


def test_logged_values_hang_together(monitored_run):
    run_dir, _ = monitored_run
    found = {tag: dict(points) for tag, points in _first_run_scalars(run_dir).items()}
    for step in (1, 3, 5):
        loss, ppl = found["train/loss"][step], found["train/ppl"][step]
        assert ppl == pytest.approx(2.718281828459045**loss, rel=1e-5)
        tokens_per_sec = found["perf/tokens_per_sec"][step]
        assert found["perf/tokens_per_sec_per_device"][step] == pytest.approx(tokens_per_sec)
        tflops = found["perf/tflops_per_sec_per_device"][step]
        assert found["perf/mfu"][step] == pytest.approx(tflops / 0.5, rel=1e-5)
        # 2 optimizer steps of 4 windows of 32 tokens each per logging interval.
        assert tokens_per_sec * 2 * found["perf/step_time_ms"][step] / 1000 == pytest.approx(
            2 * 4 * 32, rel=1e-4
        )
        assert 0 <= found["perf/dataloader_wait_ms"][step] < found["perf/step_time_ms"][step]
        assert 0.05 < found["memory/rss_gb"][step] < 64


def test_the_whole_resolved_configuration_is_logged_as_hyperparameters(monitored_run):
    run_dir, _ = monitored_run
    event_file = sorted((run_dir / "tensorboard" / "version_0").glob("events.out.tfevents.*"))[0]
    accumulator = EventAccumulator(str(event_file))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    for key in ("trainer/max_steps", "data/data_dir", "data/seq_len", "model/model_name", "perf/peak_tflops"):
        assert key in hparams, key
    assert hparams["trainer/max_steps"].number_value == STEPS
    assert hparams["perf/peak_tflops"].number_value == 0.5


def test_without_a_terminal_each_interval_is_one_plain_line(monitored_run):
    _, output = monitored_run
    assert "\r" not in output
    lines = [line for line in output.splitlines() if line.startswith("[progress] step")]
    assert lines[0].startswith("[progress] step 2/6 | loss ")
    assert " | lr " in lines[0] and " tok/s | mfu " in lines[0] and " | eta " in lines[0]
    assert "[progress] step 3/6 | val/loss " in output
    assert sum(" tok/s" in line for line in lines) == 3 + 1, "steps 2, 4, 6, then 8 after resuming"


def test_a_resumed_run_continues_the_same_tensorboard_directory(monitored_run):
    run_dir, output = monitored_run
    assert [p.name for p in (run_dir / "tensorboard").iterdir()] == ["version_0"]
    assert len(list((run_dir / "tensorboard" / "version_0").glob("events.out.tfevents.*"))) == 2
    assert [step for step, _ in scalars(run_dir)["train/loss"]] == [1, 3, 5, 7]
    assert "TensorBoardLogger continues run 0" in output
    assert f"TensorBoard: tensorboard --logdir {run_dir / 'tensorboard' / 'version_0'}" in output


def test_without_a_peak_there_is_no_mfu_and_a_line_says_how_to_get_it(small_corpus: Path, tmp_path: Path):
    output = run_fit(fit_args(small_corpus, tmp_path, "--trainer.max_steps", "2"))
    assert "no peak FLOP/s known for 'cpu' at fp32: perf/mfu is not logged (set --perf.peak_tflops" in output
    found = scalars(tmp_path)
    assert "perf/tflops_per_sec_per_device" in found and "perf/mfu" not in found


def test_on_a_terminal_a_bar_shows_the_whole_run(small_corpus: Path, tmp_path: Path):
    primary, replica = pty.openpty()
    # A terminal of 40 x 120 characters (a new pseudo-terminal has no size, and tqdm would draw nothing).
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    args = _args(small_corpus, tmp_path, "--trainer.max_steps", "4")
    process = subprocess.Popen(
        fit_command(args), stdout=replica, stderr=replica, cwd=REPO_ROOT, env=_env(None)
    )
    os.close(replica)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=120) == 0, b"".join(chunks)[-3000:]
    text = b"".join(chunks).decode(errors="replace")
    assert "training: 100%" in text and "4/4" in text and "tok/s" in text and "loss=" not in text
    assert "loss " in text, "the postfix shows the logged loss"
    assert "[progress] step 2/4 | loss" not in text, "no plain lines on a terminal"


def test_two_ranks_log_the_mean_loss_over_ranks_and_the_accumulation_window(
    small_corpus: Path, tmp_path: Path
):
    record = tmp_path / "losses"
    callback = {
        "class_path": "tests.helpers.callbacks.RecordMicroBatchLosses",
        "init_args": {"output_dir": str(record)},
    }
    args = fit_args(
        small_corpus,
        tmp_path,
        "--config",
        "configs/trainer/cpu-ddp.yaml",
        "--trainer.accumulate_grad_batches",
        "2",
        "--trainer.max_steps",
        "3",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.callbacks+",
        json.dumps(callback),
    )
    run_fit(args)
    micro_batches = [m for rank in (0, 1) for m in json.loads((record / f"rank{rank}.json").read_text())]
    logged = dict(scalars(tmp_path)["train/loss"])
    assert sorted(logged) == [0, 1, 2]
    for step in (0, 1, 2):
        losses = [m["loss"] for m in micro_batches if m["step"] == step]
        assert len(losses) == 4, "2 ranks x 2 micro-batches"
        assert logged[step] == pytest.approx(sum(losses) / 4, abs=1e-5)
        rank0_last = [
            m["loss"] for m in json.loads((record / "rank0.json").read_text()) if m["step"] == step
        ][-1]
        assert logged[step] != pytest.approx(rank0_last, abs=1e-6), "not rank 0's last micro-batch"


def test_checkpoint_saves_are_left_out_of_the_throughput_window(small_corpus: Path, tmp_path: Path):
    # Every checkpoint write pauses 1.5 s halfway (tests/helpers/fault_injection.py); a save follows every
    # 2nd step, inside the next logging window. Steps here take tens of milliseconds.
    args = fit_args(
        small_corpus,
        tmp_path,
        "--trainer.log_every_n_steps",
        "2",
        "--checkpoint.every_n_train_steps",
        "2",
        "--trainer.limit_val_batches",
        "0",
    )
    run_fit(args, env={PAUSE_MID_SAVE_ENV: "1.5"})
    found = scalars(tmp_path)
    saves = list((tmp_path / "checkpoints").glob("step-*.ckpt"))
    assert len(saves) >= 2, "the saves (and their pauses) happened"
    step_times = [value for _, value in found["perf/step_time_ms"]]
    assert len(step_times) == 3 and max(step_times[1:]) < 500, step_times
