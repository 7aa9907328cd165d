"""A few thousand steps with every callback on: the process's memory stays flat after warm-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.runs import fit_args, run_fit, scalars

STEPS, LOG_EVERY = 2000, 50


@pytest.mark.slow
def test_memory_does_not_grow_over_thousands_of_steps_with_every_callback(small_corpus: Path, tmp_path: Path):
    output = run_fit(
        fit_args(
            small_corpus,
            tmp_path,
            "--config",
            "configs/callbacks/diagnostics.yaml",
            "--perf.peak_tflops",
            "1",
            "--trainer.max_steps",
            str(STEPS),
            "--trainer.log_every_n_steps",
            str(LOG_EVERY),
            "--trainer.val_check_interval",
            "500",
            "--checkpoint.every_n_train_steps",
            "1000",
            "--trainer.enable_progress_bar",
            "true",
        ),
        timeout=1200,
    )
    found = scalars(tmp_path)
    for tag in ("perf/mfu", "train/loss", "grad_norm/wte.weight", "eval/heldout_text/bits_per_byte"):
        assert tag in found, tag
    assert output.count("[progress] step") >= STEPS // LOG_EVERY
    steps, rss = np.array(found["memory/rss_gb"]).T
    assert len(rss) == STEPS // LOG_EVERY
    after_warmup = steps >= STEPS // 5
    slope_per_1000_steps = np.polyfit(steps[after_warmup], rss[after_warmup], 1)[0] * 1000
    growth = rss[after_warmup][-1] - rss[after_warmup][0]
    # Noise here is a few MB (allocator pages, Python's arenas); a leak of one small tensor or dict per
    # step would add tens of MB over 1,600 steps.
    assert slope_per_1000_steps < 0.005, f"RSS grows {slope_per_1000_steps * 1024:.1f} MiB per 1000 steps"
    assert growth < 0.01, f"RSS grew {growth * 1024:.1f} MiB after warm-up: {rss.round(4).tolist()}"
