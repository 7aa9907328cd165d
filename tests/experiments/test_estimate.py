"""Batch arithmetic, token budgets and `lit-pretrain estimate`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lit_pretrain.cli import main
from lit_pretrain.data.datamodule import accumulation_steps
from lit_pretrain.experiments.estimate import PEAK_FLOPS, estimate
from lit_pretrain.model import ModelConfig, num_parameters, training_flops_per_token
from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import fit_args


def test_accumulation_follows_from_the_global_batch():
    assert accumulation_steps(64, 8, 2) == 4
    assert accumulation_steps(16, 4, 4) == 1
    with pytest.raises(ValueError, match=r"global_batch_size 100 must be a positive multiple of .* = 16"):
        accumulation_steps(100, 8, 2)


def test_global_batch_size_sets_gradient_accumulation(small_corpus: Path, tmp_path: Path):
    args = fit_args(small_corpus, tmp_path, "--trainer.max_steps", "3", "--data.global_batch_size", "16")
    main(args)  # micro-batch 4 in one process: 4 micro-batches per step
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3 and checkpoint["tokens_seen"] == 3 * 16 * 32
    assert checkpoint["resume_fingerprint"]["accumulate_grad_batches"] == 4


def test_max_tokens_stops_first_and_sets_the_schedule(small_corpus: Path, tmp_path: Path):
    # 4 x 32 = 128 tokens per step: 300 tokens take 3 steps, well before max_steps.
    main(fit_args(small_corpus, tmp_path, "--trainer.max_steps", "100", "--model.max_tokens", "300"))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3
    # The cosine reaches min_lr at the token budget, not at max_steps.
    schedule = checkpoint["lr_schedulers"][0]
    assert schedule["_last_lr"][0] == pytest.approx(checkpoint["hyper_parameters"]["min_lr"])


def test_max_time_stops_first_and_the_last_step_is_saved(small_corpus: Path, tmp_path: Path):
    args = fit_args(
        small_corpus, tmp_path, "--trainer.max_steps", "100000", "--trainer.max_time", "00:00:00:03"
    )
    main([*args, "--trainer.val_check_interval", "100000"])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert 0 < checkpoint["global_step"] < 100000
    assert (
        tmp_path / "checkpoints" / "last.ckpt"
    ).resolve().name == f"step-{checkpoint['global_step']:07d}.ckpt"


FSDP2 = "lit_pretrain.checkpoint.io.AtomicModelParallelStrategy"


def _config(strategy: str | dict | None, every: int = 0) -> dict:
    trainer = {"devices": 8, "precision": "bf16-mixed"}
    if strategy:
        trainer["strategy"] = strategy
    return {
        "model": {"model_name": "tinyllama-1.1b", "parallel": {"activation_checkpointing_every": every}},
        "data": {"seq_len": 2048, "micro_batch_size": 4, "global_batch_size": 256},
        "trainer": trainer,
    }


def test_estimate_shards_states_with_fsdp2_only():
    ddp = estimate(_config("ddp"), 8, "h100-sxm", 0.5, 10**9)
    fsdp = estimate(
        _config({"class_path": FSDP2, "init_args": {"tensor_parallel_size": 1}}),
        8,
        "h100-sxm",
        0.5,
        10**9,
    )
    parameters = num_parameters(ModelConfig.from_name("tinyllama-1.1b"))
    assert ddp["memory_per_device"]["optimizer_gib"] == pytest.approx(parameters * 8 / 2**30)
    assert fsdp["memory_per_device"]["optimizer_gib"] == pytest.approx(parameters * 8 / 8 / 2**30)
    assert ddp["gradient_accumulation"] == 8 and ddp["tokens_per_step"] == 256 * 2048


def test_estimate_splits_blocks_further_with_tensor_parallelism():
    layout = {"class_path": FSDP2, "init_args": {"data_parallel_size": 2, "tensor_parallel_size": 4}}
    result = estimate(_config(layout), 8, "h100-sxm", 0.5, None)
    config = ModelConfig.from_name("tinyllama-1.1b")
    blocks = config.n_layer * (
        num_parameters(replace(config, n_layer=2)) - num_parameters(replace(config, n_layer=1))
    )
    expected = (num_parameters(config) - blocks) / 2 + blocks / 8  # the rest is sharded over the 2 DP ranks
    assert result["strategy"] == "fsdp2+tp"
    assert result["memory_per_device"]["optimizer_gib"] == pytest.approx(expected * 8 / 2**30)
    assert result["gradient_accumulation"] == 256 / (4 * 2), "micro-batches are per data-parallel rank"
    fsdp = estimate(
        _config({"class_path": FSDP2, "init_args": {"tensor_parallel_size": 1}}), 8, "h100-sxm", 0.5, None
    )
    assert result["memory_per_device"]["activations_gib"] < fsdp["memory_per_device"]["activations_gib"]
    assert estimate(_config("fsdp"), 8, "h100-sxm", 0.5, None)["tensor_parallel_size"] == 1, "FSDP v1: no TP"
    lone_auto = {"class_path": FSDP2, "init_args": {"data_parallel_size": "auto", "tensor_parallel_size": 2}}
    assert estimate(_config(lone_auto), 8, "h100-sxm", 0.5, None)["data_parallel_size"] == 4
    # Lightning's default for "auto" sizes: tensor parallel within the node, data parallel across nodes.
    assert estimate(_config({"class_path": FSDP2}), 4, "h100-sxm", 0.5, None)["tensor_parallel_size"] == 4


def test_estimate_refuses_a_layout_that_does_not_fit():
    with pytest.raises(ValueError, match="tensor_parallel_size 3 must divide n_head"):
        estimate(
            _config({"class_path": FSDP2, "init_args": {"tensor_parallel_size": 3}}), 6, "h100-sxm", 0.5, None
        )
    with pytest.raises(ValueError, match="must equal devices x num_nodes = 8"):
        layout = {"class_path": FSDP2, "init_args": {"data_parallel_size": 2, "tensor_parallel_size": 2}}
        estimate(_config(layout), 8, "h100-sxm", 0.5, None)


def test_estimate_time_follows_flops_and_mfu():
    result = estimate(_config("ddp"), 8, "h100-sxm", 0.5, 10**9)
    flops = training_flops_per_token(ModelConfig.from_name("tinyllama-1.1b"), 2048) * 256 * 2048
    assert result["flops_per_step"] == flops
    assert result["seconds_per_step"] == pytest.approx(flops / (8 * PEAK_FLOPS["h100-sxm"] * 0.5))
    assert result["hours_to_max_tokens"] == pytest.approx(10**9 / result["tokens_per_second"] / 3600)


def test_activation_checkpointing_lowers_the_activation_estimate():
    plain = estimate(_config("ddp"), 8, "h100-sxm", 0.5, None)["memory_per_device"]["activations_gib"]
    every = estimate(_config("ddp", every=1), 8, "h100-sxm", 0.5, None)["memory_per_device"][
        "activations_gib"
    ]
    assert every < plain / 3


def test_estimate_command_reads_the_recipes(capsys):
    configs = [
        "--config",
        str(REPO_ROOT / "configs/trainer/fsdp2.yaml"),
        "--config",
        str(REPO_ROOT / "configs/model/tinyllama-1.1b.yaml"),
    ]
    main(["estimate", *configs, "--devices", "8", "--max_tokens", "1000000000"])
    out = capsys.readouterr().out
    assert (
        "fsdp2 on 8 x h100-sxm" in out
        and "memory per device" in out
        and "time to 1,000,000,000 tokens" in out
    )


def test_estimate_without_a_device_count_is_a_clear_error():
    with pytest.raises(SystemExit, match=r"trainer.devices is -1: pass --devices N"):
        main(["estimate", "--config", str(REPO_ROOT / "configs/trainer/ddp.yaml")])
