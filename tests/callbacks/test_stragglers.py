"""`Stragglers`: the spread of the ranks' own step times, and one warning about a rank that stays slow."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from lit_pretrain.callbacks.stragglers import Stragglers, spread
from tests.helpers.distributed import spawn_on_gloo
from tests.helpers.runs import fit_args, run_fit, scalars


def test_the_spread_is_the_slowest_over_the_median():
    assert spread([1.0, 1.0, 3.0, 1.0]) == (3.0, 2)
    assert spread([2.0, 1.0]) == (pytest.approx(2.0 / 1.5), 0), "two ranks: the median is their mean"
    assert spread([1.0, 2.0, 2.0]) == (1.0, 1), "the lowest of equally slow ranks"
    assert spread([5.0]) == (1.0, 0)


def test_a_rank_slow_for_patience_intervals_in_a_row_is_named_once():
    stragglers = Stragglers(factor=1.2, patience=3)
    slow_rank_2 = [1.0, 1.1, 1.3, 0.9]  # 1.3 > 1.2 x the median 1.05
    assert [stragglers.observe(slow_rank_2) for _ in range(4)] == [
        ([], []),
        ([], []),
        ([2], []),
        ([], []),
    ], "named at the 3rd interval in a row, not again while it stays slow"
    assert stragglers.observe([1.0, 1.0, 1.0, 1.0]) == ([], [2]), "caught up"
    assert [stragglers.observe(slow_rank_2)[0] for _ in range(3)] == [[], [], [2]], "named again"


def test_an_interval_at_the_median_starts_the_count_again():
    stragglers = Stragglers(factor=1.5, patience=2)
    assert stragglers.observe([1.0, 2.0, 1.0]) == ([], [])
    assert stragglers.observe([1.0, 1.4, 1.0]) == ([], []), "1.4 is not above 1.5 x 1.0"
    assert stragglers.observe([1.0, 2.0, 1.0]) == ([], [])
    assert stragglers.observe([1.0, 2.0, 1.0]) == ([1], [])


def test_each_slow_rank_is_counted_on_its_own():
    stragglers = Stragglers(factor=1.2, patience=2)
    times = [1.0, 1.0, 1.0, 2.0, 3.0]
    assert stragglers.observe(times) == ([], [])
    assert stragglers.observe(times) == ([3, 4], [])
    assert stragglers.observe([1.0, 1.0, 1.0, 1.0, 3.0]) == ([], [3])


def test_the_warning_says_by_how_much_and_where():
    stragglers = Stragglers(factor=1.2, patience=3)
    stragglers.hosts = ["node-a", "node-b", "node-c"]
    message = stragglers.describe(1, forward=[0.2, 0.5, 0.2], data=[0.1, 0.1, 0.1])
    assert message.startswith("rank 1 (node-b) is a straggler: above 1.2x the median")
    assert "for 3 logged intervals in a row, 2.00x in the last" in message
    assert "forward passes 0.500 s, median 0.200 s" in message
    assert "waiting for data 0.100 s, median 0.100 s" in message


@pytest.mark.parametrize(("factor", "patience"), [(1.0, 3), (0.5, 3), (1.2, 0)])
def test_a_factor_not_above_one_or_no_patience_is_refused(factor: float, patience: int):
    with pytest.raises(ValueError, match="Stragglers"):
        Stragglers(factor=factor, patience=patience)


class _Sleep(torch.nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


class _Regression(L.LightningModule):
    """A linear regression whose forward pass sleeps `seconds` (inside the network, as a slow device would)."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 1), _Sleep(seconds))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(run_dir: Path, module: L.LightningModule, callbacks: list[L.Callback], **trainer_args) -> None:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 4, generator=generator), torch.randn(64, 1, generator=generator))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=6,
        log_every_n_steps=2,
        logger=TensorBoardLogger(run_dir, name="tensorboard"),
        callbacks=callbacks,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_args,
    )
    trainer.fit(module, DataLoader(data, batch_size=4))


def test_one_process_logs_no_spread(tmp_path: Path):
    _fit(tmp_path, _Regression(), [Stragglers()])
    logged = scalars(tmp_path)
    assert [step for step, _ in logged["loss"]] == [1, 3, 5]
    assert not [tag for tag in logged if tag.startswith("perf/step_time")]


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _fit_rank(rank: int, world_size: int, run_dir: Path) -> None:
    # Started by spawn_on_gloo, as torchrun would: Lightning joins the process group instead of launching.
    os.environ["LOCAL_RANK"] = str(rank)
    warnings = _Warnings()
    logging.getLogger("lit_pretrain.callbacks.stragglers").addHandler(warnings)
    _fit(
        run_dir,
        _Regression(seconds=0.05 if rank == 1 else 0.0),
        [Stragglers(factor=1.2, patience=2)],
        devices=world_size,
        strategy=DDPStrategy(process_group_backend="gloo"),
    )
    (run_dir / f"warnings{rank}.json").write_text(json.dumps(warnings.messages))


def test_two_processes_over_gloo_name_the_slow_one(tmp_path: Path):
    spawn_on_gloo(_fit_rank, 2, tmp_path, preload=[__name__])
    logged = scalars(tmp_path)
    # Logged at the 2nd, 4th and 6th optimizer steps (TensorBoard counts from 0).
    assert [step for step, _ in logged["perf/step_time_spread"]] == [1, 3, 5]
    assert [rank for _, rank in logged["perf/step_time_slowest_rank"]] == [1, 1, 1]
    # Rank 1's forward passes take 50 ms, rank 0's well under one: the spread of two ranks nears 2 (the
    # median of two is their mean). 1.5: rank 0 would have to spend a third of rank 1's time.
    assert min(value for _, value in logged["perf/step_time_spread"]) > 1.5
    (warning,) = json.loads((tmp_path / "warnings0.json").read_text())
    assert warning.startswith("rank 1 (") and "above 1.2x the median" in warning
    assert json.loads((tmp_path / "warnings1.json").read_text()) == [], "only rank 0 speaks"


@pytest.mark.slow
@pytest.mark.parametrize("trainer_config", ["cpu-ddp", "cpu-fsdp2"])
def test_a_slowed_rank_in_a_two_process_fit_is_in_tensorboard_and_named(
    small_corpus: Path, tmp_path: Path, trainer_config: str
):
    """`lit-pretrain fit` on 2 processes, rank 1 sleeping 0.1 s in each forward pass (the output head)."""
    callbacks = [
        {"class_path": "lit_pretrain.callbacks.stragglers.Stragglers", "init_args": {"patience": 2}},
        {"class_path": "tests.helpers.callbacks.SlowRank", "init_args": {"rank": 1, "seconds": 0.1}},
    ]
    args = fit_args(small_corpus, tmp_path, "--config", f"configs/trainer/{trainer_config}.yaml")
    args += ["--trainer.max_steps", "8", "--trainer.log_every_n_steps", "2"]
    for callback in callbacks:
        args += ["--trainer.callbacks+", json.dumps(callback)]
    output = run_fit(args)
    logged = scalars(tmp_path)
    assert [step for step, _ in logged["perf/step_time_spread"]] == [1, 3, 5, 7]
    assert [rank for _, rank in logged["perf/step_time_slowest_rank"]] == [1, 1, 1, 1]
    assert min(value for _, value in logged["perf/step_time_spread"]) > 1.2  # the default factor
    warnings = [line for line in output.splitlines() if line.startswith("[stragglers] warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("[stragglers] warning: rank 1 ("), output[-3000:]
