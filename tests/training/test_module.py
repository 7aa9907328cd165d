"""LitPretrain's optimizer and schedule."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from lit_pretrain.optim.schedules import warmup_cosine
from lit_pretrain.training.module import LitPretrain
from tests.helpers.models import TEST_MODEL_OVERRIDES


def test_warmup_cosine_shape():
    lr = [warmup_cosine(s, warmup_steps=10, decay_steps=110, max_lr=1.0, min_lr=0.1) for s in range(130)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert lr[60] == pytest.approx(0.1 + 0.5 * 0.9)  # halfway through the decay
    assert lr[110] == pytest.approx(0.1) and lr[129] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lr[9:], lr[10:], strict=False)), "non-increasing after warmup"


def test_weight_decay_only_on_matrices():
    module = LitPretrain(model_overrides=TEST_MODEL_OVERRIDES, weight_decay=0.1)
    module.configure_model()
    module.trainer = L.Trainer(max_steps=10, logger=False)
    optimizer = module.configure_optimizers()["optimizer"]
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.ndim < 2 for p in plain["params"]) and plain["params"]
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in module.model.parameters()
    )


class RecordLearningRate(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("accumulate", [1, 3])
def test_schedule_advances_once_per_optimizer_step(accumulate: int):
    torch.manual_seed(0)
    tokens = torch.randint(0, 512, (64, 17))
    module = LitPretrain(
        model_overrides=TEST_MODEL_OVERRIDES,
        learning_rate=1e-2,
        min_lr=1e-3,
        warmup_steps=2,
        lr_decay_steps=6,
    )
    recorder = RecordLearningRate()
    trainer = L.Trainer(
        max_steps=8,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
    )
    trainer.fit(module, DataLoader(tokens, batch_size=2))
    expected = [warmup_cosine(s, 2, 6, 1e-2, 1e-3) for s in range(8)]
    assert recorder.lrs == pytest.approx(expected)
    assert trainer.global_step == 8
    assert math.isclose(recorder.lrs[-1], 1e-3)
