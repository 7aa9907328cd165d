"""The parallelize step: options applied from outside the model, precisions, float8's clear skip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lit_pretrain.cli import main
from lit_pretrain.model import GPT, ModelConfig
from lit_pretrain.parallel.apply import float8_unavailable_reason, parallelize
from lit_pretrain.parallel.config import ParallelConfig
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.runs import fit_args, scalars


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig.from_name("tiny", **TEST_MODEL_OVERRIDES))


def test_activation_checkpointing_keeps_names_and_gradients():
    plain, wrapped = _model(), parallelize(_model(), ParallelConfig(activation_checkpointing_every=2))
    assert plain.state_dict().keys() == wrapped.state_dict().keys(), "checkpoints stay interchangeable"
    tokens = torch.randint(0, 512, (2, 16))
    for model in (plain, wrapped):
        model(tokens).float().pow(2).mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), wrapped.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_bad_parallel_options_are_clear_errors():
    with pytest.raises(ValueError, match="activation_checkpointing_every must be 0"):
        ParallelConfig(activation_checkpointing_every=-1)
    with pytest.raises(ValueError, match="fsdp_param_dtype must be one of"):
        ParallelConfig(fsdp_param_dtype="fp8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where float8 cannot run")
def test_float8_without_a_capable_gpu_is_skipped_with_a_message():
    assert float8_unavailable_reason() == "no CUDA device"
    with pytest.warns(UserWarning, match="float8 training skipped: no CUDA device"):
        model = parallelize(_model(), ParallelConfig(float8=True))
    assert type(model.blocks[0].attn.q) is torch.nn.Linear


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16-true"])
def test_fit_runs_in_each_cpu_precision(small_corpus: Path, tmp_path: Path, precision: str):
    main(fit_args(small_corpus, tmp_path, "--trainer.max_steps", "2", "--trainer.precision", precision))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2
    # bf16-true keeps the weights themselves in bf16; mixed precision keeps fp32 weights, bf16 compute.
    stored = torch.bfloat16 if precision == "bf16-true" else torch.float32
    assert {v.dtype for k, v in checkpoint["state_dict"].items() if k.startswith("model.")} == {stored}
    losses = [loss for _, loss in scalars(tmp_path)["train/loss"]]
    assert len(losses) == 2 and all(math.isfinite(loss) and 5.0 < loss < 7.5 for loss in losses), (
        "finite, near ln(512) = 6.24 for an untrained 512-token model"
    )


@pytest.mark.slow
def test_compiled_blocks_train_and_keep_checkpoint_names(small_corpus: Path, tmp_path: Path):
    main(fit_args(small_corpus, tmp_path, "--trainer.max_steps", "2", "--model.parallel.compile", "true"))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert set(checkpoint["state_dict"]) == {f"model.{k}" for k in _model().state_dict()}
