"""`LossGuard`: optimizer steps with a NaN, infinite or spiking loss leave the weights unchanged."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.precision import MixedPrecision

from lit_pretrain.callbacks.loss_guard import LossGuard
from lit_pretrain.data.datamodule import PretrainDataModule
from lit_pretrain.training.module import LitPretrain
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.runs import scalars


class _LossAt(LitPretrain):
    """LitPretrain whose loss is multiplied by a chosen factor (NaN, inf, 1e9) at chosen optimizer steps."""

    def __init__(self, bad_steps: dict[int, float], **kwargs) -> None:
        super().__init__(model_name="tiny", model_overrides=TEST_MODEL_OVERRIDES, **kwargs)
        self.bad_steps = bad_steps
        self.weights_before_step: dict[int, torch.Tensor] = {}
        self.step_losses: dict[int, float] = {}

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        self.weights_before_step[self.trainer.global_step] = self.model.wte.weight.detach().clone()

    def _losses(self, batch, z_loss: float = 0.0):
        loss, z_term = super()._losses(batch, z_loss)
        factor = self.bad_steps.get(self.trainer.global_step) if self.training else None
        loss = loss if factor is None else loss * factor
        if self.training:
            self.step_losses[self.trainer.global_step] = float(loss.detach())
        return loss, z_term


def _train(
    small_corpus: Path, module: LitPretrain, guard: LossGuard, steps: int, ckpt_path=None, **trainer_kwargs
) -> L.Trainer:
    trainer_kwargs.setdefault("logger", False)
    trainer_kwargs.setdefault("enable_checkpointing", False)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        callbacks=[guard, *trainer_kwargs.pop("callbacks", [])],
        enable_progress_bar=False,
        limit_val_batches=0,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(
        module, PretrainDataModule(str(small_corpus), seq_len=32, micro_batch_size=4), ckpt_path=ckpt_path
    )
    return trainer


def _unchanged_at(module: _LossAt, step: int) -> bool:
    """Whether optimizer step `step` (0-based: the step taken from `global_step == step`) left the weights alone."""
    weights = module.weights_before_step
    return torch.equal(weights[step], weights[step + 1])


def test_nan_and_inf_steps_are_skipped_and_leave_the_weights_unchanged(small_corpus: Path, caplog):
    module = _LossAt({2: float("nan"), 3: float("inf")})
    guard = LossGuard()
    with caplog.at_level(logging.WARNING, logger="lit_pretrain"):
        _train(small_corpus, module, guard, 6)
    assert _unchanged_at(module, 2) and _unchanged_at(module, 3)
    assert not _unchanged_at(module, 1) and not _unchanged_at(module, 4)
    assert guard.skipped == 2 and torch.isfinite(module.model.wte.weight).all()
    assert (
        "step 3: the loss nan is not finite; skipped this optimizer step (1 in a row, 1 in all)"
        in caplog.text
    )
    assert (
        "step 4: the loss inf is not finite; skipped this optimizer step (2 in a row, 2 in all)"
        in caplog.text
    )


def test_a_loss_spike_is_skipped_logged_and_the_guard_resumes_with_its_state(
    small_corpus: Path, tmp_path: Path
):
    spike, nan = 7, 9
    module = _LossAt({spike: 1e9 / 6.0, nan: float("nan")})
    guard = LossGuard(window=6, min_history=4, spike_sigma=6.0)
    logger = TensorBoardLogger(tmp_path, name="tensorboard", version=0)
    checkpoints = ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=11, save_top_k=-1)
    _train(
        small_corpus,
        module,
        guard,
        11,
        logger=logger,
        log_every_n_steps=1,
        callbacks=[checkpoints],
        enable_checkpointing=True,
    )
    assert module.step_losses[spike] > 1e8
    assert _unchanged_at(module, spike) and _unchanged_at(module, nan)
    assert not _unchanged_at(module, spike - 1) and not _unchanged_at(module, spike + 1)
    assert guard.skipped == 2
    # The window holds the good steps only: the spike did not raise the bar for the next ones.
    good = [module.step_losses[s] for s in range(11) if s not in (spike, nan)]
    assert list(guard.recent) == pytest.approx(good[-6:], rel=1e-6)
    skipped = dict(scalars(tmp_path)["train/skipped_steps"])
    # TensorBoard's step is the number of optimizer steps before the logged one.
    assert (skipped[spike - 1], skipped[spike], skipped[nan - 1], skipped[nan]) == (0.0, 1.0, 1.0, 2.0)

    resumed = LossGuard(window=6, min_history=4, spike_sigma=6.0)
    checkpoint = next((tmp_path / "ckpt").glob("*.ckpt"))
    _train(small_corpus, _LossAt({}), resumed, 11, ckpt_path=str(checkpoint))
    assert (resumed.skipped, resumed.consecutive, list(resumed.recent)) == (2, 0, list(guard.recent))


def test_the_stop_action_stops_at_the_first_bad_step_without_updating(small_corpus: Path):
    module = _LossAt({3: 1e9 / 6.0})
    guard = LossGuard(action="stop", window=3, min_history=3)
    with pytest.raises(
        RuntimeError, match=r"step 4: the loss .* is a spike above .*--loss_guard.action stop"
    ):
        _train(small_corpus, module, guard, 8)
    assert max(module.weights_before_step) == 3, "no step after the spike ran"


def test_fp16_mixed_precision_with_a_grad_scaler_skips_a_nan_step(small_corpus: Path):
    # Lightning turns precision="16-mixed" into bf16 on CPU; the plugin given directly keeps fp16 autocast
    # and a real GradScaler, the path GPUs take.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    precision = MixedPrecision("16-mixed", "cpu", scaler)
    module = _LossAt({2: float("nan")})
    guard = LossGuard()
    trainer = _train(small_corpus, module, guard, 5, plugins=[precision], gradient_clip_val=1.0)
    assert trainer.precision == "16-mixed"
    assert _unchanged_at(module, 2)
    assert not _unchanged_at(module, 1) and not _unchanged_at(module, 3)
    assert scaler.get_scale() < 2.0**10, "the scaler backed off after the non-finite gradients"
    assert guard.skipped == 1 and torch.isfinite(module.model.wte.weight).all()


def test_too_many_bad_steps_in_a_row_stop_the_run(small_corpus: Path):
    module = _LossAt({step: float("nan") for step in range(1, 10)})
    with pytest.raises(RuntimeError, match="bad for 4 optimizer steps in a row"):
        _train(small_corpus, module, LossGuard(max_consecutive=3), 10)


def test_the_spike_threshold_is_mean_plus_k_sample_standard_deviations():
    guard = LossGuard(spike_sigma=3.0, window=5, min_history=3)
    assert guard.judge(1e9) is None, "no history yet: nothing is a spike"
    for loss in [5.0, 4.0, 4.5, 4.2, 4.4, 4.3]:
        guard.recent.append(loss)
    recent = np.array([4.0, 4.5, 4.2, 4.4, 4.3])  # the window keeps the last 5
    threshold = recent.mean() + 3.0 * recent.std(ddof=1)
    assert guard.spike_threshold() == pytest.approx(threshold)
    assert guard.judge(threshold - 1e-6) is None
    assert guard.judge(threshold + 1e-6).startswith("a spike above")
    assert guard.judge(math.nan) == guard.judge(-math.inf) == "not finite"
    assert LossGuard(spike_sigma=None).judge(1e9) is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"action": "warn"}, "'skip' or 'stop'"),
        ({"spike_sigma": 0}, "positive"),
        ({"min_history": 1}, "min_history"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossGuard(**kwargs)
