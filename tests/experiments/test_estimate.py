"""Batch arithmetic, token budgets and `lit-pretrain estimate`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_pretrain.cli import main
from lit_pretrain.cli.estimate import parse
from lit_pretrain.data.datamodule import accumulation_steps
from lit_pretrain.experiments.estimate import estimate
from lit_pretrain.model import ModelConfig
from tests.helpers.paths import CONFIGS
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


# --- `lit-pretrain estimate`: the numbers (lit_pretrain/experiments/estimate.py) ---------------------------

# TinyLlama 1.1B, counted by hand from its preset (vocab 32000, width 2048, 22 layers, 32 heads of 64, 4 KV
# heads, SwiGLU width 5632, RMSNorm, untied embeddings):
#   attention per block: 2048 x (2048 + 2 x 4 x 64) + 2048 x 2048 = 9,437,184
#   MLP per block: 3 x 2048 x 5632 = 34,603,008; two norms: 2 x 2048
#   block: 44,044,288; 22 blocks: 968,974,336
#   + final norm 2048 + lm_head 65,536,000 = 1,034,512,384 (N, no embedding table)
#   + embedding table 65,536,000 = 1,100,048,384 parameters
# FLOPs per token at 2048: 6N + 12 x 22 x 32 x 64 x 2048 = 6,207,074,304 + 1,107,296,256 = 7,314,370,560.
TINYLLAMA_PARAMETERS = 1_100_048_384
TINYLLAMA_BLOCKS = 968_974_336
TINYLLAMA_FLOPS_PER_TOKEN = 7_314_370_560
GIB = 2**30


def _tinyllama(**kwargs):
    settings = dict(seq_len=2048, micro_batch_size=4, global_batch_size=256, precision="bf16-mixed")
    return estimate(ModelConfig.from_name("tinyllama-1.1b"), **{**settings, **kwargs})


def test_estimate_counts_tinyllama_as_by_hand():
    ddp = _tinyllama(strategy="ddp", data_parallel_size=8, device="h100-sxm", mfu=0.5, max_tokens=10**9)
    assert ddp.parameters == TINYLLAMA_PARAMETERS
    assert ddp.gradient_accumulation == 8  # 256 / (4 x 8 ranks)
    assert ddp.tokens_per_step == 524_288  # 256 x 2048
    assert ddp.flops_per_step == TINYLLAMA_FLOPS_PER_TOKEN * 524_288 == 3_834_836_712_161_280
    # 8 devices x 989.5 TFLOP/s (H100 SXM, bf16 dense) x 50% MFU
    assert ddp.seconds_per_step == pytest.approx(3_834_836_712_161_280 / (8 * 989.5e12 * 0.5))
    assert ddp.seconds_per_step == pytest.approx(0.96888, rel=1e-4)
    assert ddp.steps_to_max_tokens == 1908  # ceil(1e9 / 524,288)
    assert ddp.hours_to_max_tokens == pytest.approx(1e9 / 524_288 * 0.96888 / 3600, rel=1e-4)
    # DDP, mixed precision: fp32 weights (4 B), gradients (4 B) and two AdamW moments (8 B) per parameter.
    assert ddp.memory.weights == pytest.approx(4 * TINYLLAMA_PARAMETERS / GIB)
    assert ddp.memory.optimizer == pytest.approx(8.195999, rel=1e-6)
    # Activations: (10 + 24) x 2048 x 4 x 2048 bytes per layer x 22, plus fp32 logits and their gradient,
    # 2 x 2048 x 4 x 32000 x 4 bytes: 12,549,357,568 + 2,097,152,000 bytes = 13.640625 GiB.
    assert ddp.memory.activations == pytest.approx(13.640625)


def test_fsdp2_shards_the_states_and_tensor_parallelism_splits_the_blocks():
    fsdp = _tinyllama(strategy="fsdp2", data_parallel_size=8)
    assert fsdp.memory.optimizer == pytest.approx(8 * TINYLLAMA_PARAMETERS / 8 / GIB)  # 1.0245 GiB
    both = _tinyllama(strategy="fsdp2", data_parallel_size=2, tensor_parallel_size=4)
    # Embeddings, norms and the head (131,074,048) over 2 data-parallel ranks, the blocks over all 8:
    # 65,537,024 + 121,121,792 = 186,658,816 parameters per device.
    assert (TINYLLAMA_PARAMETERS - TINYLLAMA_BLOCKS) / 2 + TINYLLAMA_BLOCKS / 8 == 186_658_816
    assert both.memory.optimizer == pytest.approx(186_658_816 * 8 / GIB)
    assert both.strategy == "fsdp2+tp" and both.devices == 8
    assert both.gradient_accumulation == 32, "micro-batches are per data-parallel rank: 256 / (4 x 2)"
    assert both.memory.activations < fsdp.memory.activations
    # Lightning's FSDP (v1) shards over every rank, like FSDP2 without tensor parallelism.
    assert _tinyllama(strategy="fsdp", data_parallel_size=8).memory.optimizer == fsdp.memory.optimizer


def test_precision_sets_the_peak_and_the_memory():
    def run(**kwargs):
        return _tinyllama(**{"strategy": "fsdp2", "data_parallel_size": 8, "device": "h100-sxm", **kwargs})

    mixed = run(precision="bf16-mixed")
    assert (mixed.compute_precision, mixed.peak_flops_per_device) == ("bf16", 989.5e12)
    fp32 = run(precision="32-true")
    assert (fp32.compute_precision, fp32.peak_flops_per_device) == ("fp32", 67e12)
    assert fp32.seconds_per_step == pytest.approx(mixed.seconds_per_step * 989.5 / 67)
    assert fp32.memory.activations > mixed.memory.activations, "fp32 activations take twice the bytes"
    # trainer/fsdp2.yaml + parallel/fsdp2-bf16.yaml: Lightning at 32-true, FSDP2 computing in bf16.
    policy = run(precision="32-true", fsdp_param_dtype="bfloat16")
    assert policy.compute_precision == "bf16" and policy.peak_flops_per_device == 989.5e12
    assert policy.memory.optimizer == mixed.memory.optimizer
    true16 = run(precision="bf16-true")
    assert true16.memory.optimizer == pytest.approx(mixed.memory.optimizer / 2)
    assert run(precision="16-mixed", device="a100").peak_flops_per_device == 312e12
    assert run(float8=True).peak_flops_per_device == 1979e12
    # An A100 has no fp8 units: training skips float8 there, and the estimate says so.
    no_fp8 = run(float8=True, device="NVIDIA A100-SXM4-80GB")
    assert no_fp8.compute_precision == "bf16" and no_fp8.device == "a100"
    assert "has no fp8 units" in no_fp8.notes[0]
    # An FSDP2 dtype means nothing under DDP, where Lightning's precision decides.
    ddp = _tinyllama(strategy="ddp", data_parallel_size=8, precision="32-true", fsdp_param_dtype="bfloat16")
    assert ddp.compute_precision == "fp32"


def test_activation_checkpointing_lowers_the_activation_estimate():
    plain = _tinyllama(strategy="ddp", data_parallel_size=8).memory.activations
    every = _tinyllama(strategy="ddp", data_parallel_size=8, activation_checkpointing_every=1)
    assert every.memory.activations < plain / 3


def test_estimate_refuses_what_training_would_refuse():
    with pytest.raises(ValueError, match="tensor_parallel_size 3 must divide the model's n_head"):
        _tinyllama(strategy="fsdp2", data_parallel_size=2, tensor_parallel_size=3)
    with pytest.raises(ValueError, match="global_batch_size 100 must be a positive multiple"):
        _tinyllama(strategy="ddp", data_parallel_size=8, global_batch_size=100)
    with pytest.raises(ValueError, match="seq_len 4096 exceeds the model's block_size 2048"):
        _tinyllama(seq_len=4096)
    with pytest.raises(ValueError, match="strategy single runs on one device, not 8"):
        _tinyllama(strategy="single", data_parallel_size=8)
    with pytest.raises(ValueError, match="tensor parallelism needs the fsdp2 strategy"):
        _tinyllama(strategy="ddp", data_parallel_size=2, tensor_parallel_size=4)
    with pytest.raises(ValueError, match="unknown device 'tpu-v5'"):
        _tinyllama(device="tpu-v5")


# --- `lit-pretrain estimate`: the command (lit_pretrain/cli/estimate.py) -----------------------------------


def _configs(*names: str) -> list[str]:
    return [arg for name in names for arg in ("--config", str(CONFIGS / f"{name}.yaml"))]


def _estimate(capsys, *args: str) -> str:
    main(["estimate", *args])
    return capsys.readouterr().out


def test_the_command_parses_with_fits_parser_and_overrides(capsys):
    out = _estimate(
        capsys,
        *_configs("trainer/fsdp2", "parallel/fsdp2-bf16", "model/tinyllama-1.1b", "data/seq2048"),
        "--devices",
        "8",
        "--data.global_batch_size",
        "512",
        "--max_tokens",
        "3e12",
    )
    assert "fsdp2 on 8 x h100-sxm (data parallel 8, tensor parallel 1), 32-true: bf16 matmuls" in out
    assert "global batch 512 x 2048 = 1,048,576 tokens per step (micro-batch 8, accumulation 8)" in out
    assert "time to 3,000,000,000,000 tokens:" in out and "(2,861,023 steps)" in out
    assert "memory per device" in out and "data.seq_len is not set" not in out


def test_token_budgets_take_scientific_notation(capsys):
    base = _configs("trainer/gpu", "model/tinyllama-1.1b")
    assert "time to 20,000,000,000 tokens" in _estimate(capsys, *base, "--max_tokens", "2e10")
    assert "time to 20,000,000,000 tokens" in _estimate(capsys, *base, "--max_tokens", "20_000_000_000")
    assert "time to 1,000,000 tokens" in _estimate(capsys, *base, "--model.max_tokens", "1000000")
    with pytest.raises(SystemExit) as exit_info:
        main(["estimate", *base, "--max_tokens", "3.5"])
    assert exit_info.value.code != 0 and "not a whole number of tokens" in capsys.readouterr().err


def test_several_devices_with_strategy_auto_are_ddp(capsys):
    out = _estimate(capsys, *_configs("trainer/gpu", "model/tinyllama-1.1b"), "--devices", "8")
    assert "ddp on 8 x h100-sxm (data parallel 8, tensor parallel 1), bf16-mixed: bf16 matmuls" in out
    assert "global batch 64 x 2048 = 131,072 tokens per step (micro-batch 8, accumulation 1)" in out
    assert "data.seq_len is not set: using the model's block_size, 2048" in out
    one = _estimate(capsys, *_configs("trainer/gpu", "model/tinyllama-1.1b"))
    assert "single on 1 x h100-sxm" in one
    nodes = _estimate(capsys, *_configs("trainer/gpu", "model/tinyllama-1.1b"), "--trainer.num_nodes", "2")
    assert "ddp on 2 x h100-sxm" in nodes


def test_the_sequence_length_comes_from_the_recipe_or_the_model(capsys):
    recipe = _estimate(capsys, *_configs("trainer/gpu", "model/llama2-7b", "data/seq4096"), "--gpu", "h200")
    assert "global batch 2 x 4096" in recipe and "data.seq_len is not set" not in recipe
    # Set explicitly to the data module's default, it is still the run's value, not the model's.
    explicit = _estimate(capsys, *_configs("trainer/gpu", "model/llama2-7b"), "--data.seq_len", "256")
    assert "global batch 8 x 256" in explicit and "data.seq_len is not set" not in explicit
    gpt2 = _estimate(capsys, *_configs("trainer/gpu", "model/gpt2-124m"))
    assert "using the model's block_size, 1024" in gpt2 and "global batch 8 x 1024" in gpt2
    with pytest.raises(SystemExit, match="seq_len 4096 exceeds the model's block_size 2048"):
        main(["estimate", *_configs("trainer/gpu", "model/tinyllama-1.1b", "data/seq4096")])


def test_the_precision_and_the_device_set_the_peak(capsys):
    base = _configs("trainer/gpu", "model/tinyllama-1.1b")
    assert "bf16 matmuls, peak 989.5 TFLOP/s" in _estimate(capsys, *base)
    assert "fp32 matmuls, peak 67.0 TFLOP/s" in _estimate(capsys, *base, "--trainer.precision", "32-true")
    assert "fp16 matmuls, peak 312.0 TFLOP/s" in _estimate(
        capsys, *base, "--trainer.precision", "16-mixed", "--gpu", "NVIDIA A100-SXM4-80GB"
    )
    assert "on 1 x mi300x" in _estimate(capsys, *base, "--gpu", "AMD Instinct MI300X")
    with pytest.raises(SystemExit, match="unknown device 'v100'"):
        main(["estimate", *base, "--gpu", "v100"])


def test_tensor_parallel_layouts_resolve_as_the_strategy_does(capsys):
    base = _configs("trainer/fsdp2-tp", "parallel/fsdp2-bf16", "model/llama2-7b", "data/seq4096")
    out = _estimate(capsys, *base, "--devices", "8", "--trainer.num_nodes", "4")
    assert "fsdp2+tp on 32 x h100-sxm (data parallel 4, tensor parallel 8)" in out
    lone = _estimate(
        capsys, *base, "--devices", "8", "--trainer.strategy.init_args.tensor_parallel_size", "2"
    )
    assert "(data parallel 4, tensor parallel 2)" in lone
    with pytest.raises(
        SystemExit, match="tensor_parallel_size 3 must divide devices x num_nodes = 8 x 1 = 8"
    ):
        main(["estimate", *base, "--devices", "8", "--trainer.strategy.init_args.tensor_parallel_size", "3"])


def test_strategies_by_name(capsys):
    base = [*_configs("trainer/gpu", "model/tinyllama-1.1b"), "--devices", "4"]
    assert "fsdp on 4 x" in _estimate(capsys, *base, "--trainer.strategy", "fsdp")
    assert "ddp on 4 x" in _estimate(capsys, *base, "--trainer.strategy", "ddp_spawn")
    with pytest.raises(SystemExit, match="estimate does not model strategy 'deepspeed_stage_3'"):
        main(["estimate", *base, "--trainer.strategy", "deepspeed_stage_3"])


def test_estimate_without_a_device_count_is_a_clear_error():
    with pytest.raises(SystemExit, match=r"trainer.devices is -1: pass --devices N"):
        main(["estimate", *_configs("trainer/ddp")])


def test_estimate_composes_exactly_what_fit_composes(capsys):
    """The estimate's parser is fit's: the same defaults, files and overrides give the same config."""
    import yaml

    args = [*_configs("trainer/fsdp2", "parallel/fsdp2-bf16", "model/tinyllama-1.1b", "data/seq2048")]
    args += ["--data.global_batch_size", "512", "--trainer.num_nodes", "2"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    fit = yaml.safe_load(capsys.readouterr().out)
    cli = parse(args)
    ours = yaml.safe_load(cli.parser.dump(cli.config, skip_unset=False))
    for estimate_only in ("gpu", "mfu", "devices", "max_tokens"):
        ours.pop(estimate_only)
    # LightningCLI resolves `seed_everything: true` to a drawn seed once parsed; --print_config stops before.
    ours.pop("seed_everything"), fit.pop("seed_everything")
    assert set(fit) - set(ours) <= {"ckpt_path", "weights_only"}, "only Trainer.fit's own arguments differ"
    assert ours == {key: value for key, value in fit.items() if key in ours}
