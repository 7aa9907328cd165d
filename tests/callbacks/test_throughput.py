"""`TokenThroughput`: the device peak MFU is measured against, and the arithmetic of its metrics."""

from __future__ import annotations

import pytest
import torch

from lit_pretrain.callbacks.throughput import TokenThroughput, run_precision
from lit_pretrain.parallel.config import ParallelConfig
from lit_pretrain.parallel.devices import peak_flops


@pytest.mark.parametrize(
    "precision, parallel, expected",
    [
        ("bf16-mixed", None, "bf16"),
        ("32-true", None, "fp32"),
        ("16-mixed", ParallelConfig(), "fp16"),
        # FSDP2's mixed precision computes in bf16 while Lightning's precision stays 32-true.
        ("32-true", ParallelConfig(fsdp_param_dtype="bfloat16"), "bf16"),
        # float8 counts only where it runs: never on a machine without CUDA float8 tensor cores.
        ("bf16-mixed", ParallelConfig(float8=True), "bf16"),
    ],
)
def test_the_run_precision_follows_lightning_fsdp2_and_float8(precision, parallel, expected):
    assert run_precision(precision, parallel) == expected


def test_tf32_matmuls_are_measured_against_the_tf32_peak():
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("high")
        precision = run_precision("32-true", None)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert precision == "tf32"
    assert peak_flops("NVIDIA H100 80GB HBM3", precision) == 494.5e12


def test_metrics_follow_from_tokens_time_and_the_peak():
    throughput = TokenThroughput(peak_tflops=100.0)
    throughput.peak_flops_per_device = 100e12
    throughput._flops_per_token, throughput._window_tokens, throughput._window_steps = 6_000_000, 400_000, 4
    metrics = throughput.metrics(elapsed=2.0, waited=0.5, world_size=8)
    assert metrics["perf/tokens_per_sec"] == 200_000
    assert metrics["perf/tokens_per_sec_per_device"] == 25_000
    assert metrics["perf/tflops_per_sec_per_device"] == pytest.approx(0.15)
    assert metrics["perf/mfu"] == pytest.approx(0.15e12 / 100e12)
    assert metrics["perf/step_time_ms"] == 500 and metrics["perf/dataloader_wait_ms"] == 125


def test_without_a_peak_there_is_no_mfu_and_a_bad_peak_is_refused():
    throughput = TokenThroughput()
    throughput._flops_per_token, throughput._window_tokens, throughput._window_steps = 10, 100, 1
    assert "perf/mfu" not in throughput.metrics(1.0, 0.0, 1)
    with pytest.raises(ValueError, match="perf.peak_tflops must be positive"):
        TokenThroughput(peak_tflops=0)
