"""Optimizer steps with a NaN or infinite loss are skipped; too many in a row stop the run."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from lit_pretrain.data.datamodule import PretrainDataModule
from lit_pretrain.training.module import LitPretrain
from tests.helpers.models import TEST_MODEL_OVERRIDES


class _LossAt(LitPretrain):
    """LitPretrain whose loss is replaced by NaN (or inf) at chosen optimizer steps."""

    def __init__(self, bad_steps: dict[int, float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.bad_steps = bad_steps
        self.weights_before_step: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        self.weights_before_step[self.trainer.global_step] = self.model.wte.weight.detach().clone()

    def _loss(self, batch):
        loss = super()._loss(batch)
        bad = self.bad_steps.get(self.trainer.global_step) if self.training else None
        return loss if bad is None else loss * bad


def _train(small_corpus: Path, module: LitPretrain, steps: int, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        **trainer_kwargs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        enable_model_summary=False,
    )
    trainer.fit(module, PretrainDataModule(str(small_corpus), seq_len=32, micro_batch_size=4))
    return trainer


def test_a_nan_step_is_skipped_and_leaves_the_weights_unchanged(small_corpus: Path):
    module = _LossAt(
        {2: float("nan"), 3: float("inf")}, model_name="tiny", model_overrides=TEST_MODEL_OVERRIDES
    )
    with pytest.warns(UserWarning, match="the loss is not finite; skipped this optimizer step"):
        _train(small_corpus, module, 6)
    weights = module.weights_before_step
    assert torch.equal(weights[2], weights[3]) and torch.equal(weights[3], weights[4])
    assert not torch.equal(weights[1], weights[2]) and not torch.equal(weights[4], weights[5])
    assert module.skipped_steps == 2 and torch.isfinite(module.model.wte.weight).all()


def test_fp16_mixed_precision_lets_the_grad_scaler_skip_a_nan_step(small_corpus: Path):
    # Lightning turns precision="16-mixed" into bf16 on CPU; the plugin given directly keeps fp16 autocast
    # and a real GradScaler, the path GPUs take.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    precision = MixedPrecision("16-mixed", "cpu", scaler)
    module = _LossAt({2: float("nan")}, model_name="tiny", model_overrides=TEST_MODEL_OVERRIDES)
    with pytest.warns(UserWarning, match="skipped this optimizer step"):
        trainer = _train(small_corpus, module, 5, plugins=[precision], gradient_clip_val=1.0)
    assert trainer.precision == "16-mixed"
    weights = module.weights_before_step
    assert torch.equal(weights[2], weights[3]), "the scaler skipped the step"
    assert not torch.equal(weights[1], weights[2]) and not torch.equal(weights[3], weights[4])
    assert scaler.get_scale() < 2.0**10, "the scaler backed off after the non-finite gradients"
    assert module.skipped_steps == 1 and torch.isfinite(module.model.wte.weight).all()


def test_too_many_bad_steps_in_a_row_stop_the_run(small_corpus: Path):
    module = _LossAt(
        {step: float("nan") for step in range(1, 10)},
        model_name="tiny",
        model_overrides=TEST_MODEL_OVERRIDES,
        max_consecutive_skipped_steps=3,
    )
    with (
        pytest.warns(UserWarning, match="skipped this optimizer step"),
        pytest.raises(RuntimeError, match="NaN or infinite for 4 optimizer steps"),
    ):
        _train(small_corpus, module, 10)
