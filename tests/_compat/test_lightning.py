"""The private Lightning names in lit_pretrain/_compat/lightning.py still exist and mean what they meant."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import ModelParallelStrategy

from lit_pretrain._compat import lightning as compat
from lit_pretrain._compat.lightning import StepCheckpointBase


def broken(what: str) -> str:
    return (
        f"lightning {L.__version__} changed {what} (lit_pretrain/_compat/lightning.py was checked against "
        f"{compat.CHECKED_AGAINST}): update that module, then CHECKED_AGAINST"
    )


def test_model_checkpoint_private_save_path_is_as_checked():
    callback = ModelCheckpoint()
    for attribute in ("_last_global_step_saved", "_last_checkpoint_saved"):
        assert hasattr(callback, attribute), broken(f"ModelCheckpoint.{attribute}")
    for method, parameters in {
        "_monitor_candidates": ["trainer"],
        "_save_topk_checkpoint": ["trainer", "monitor_candidates"],
        "_save_last_checkpoint": ["trainer", "monitor_candidates"],
        "_save_checkpoint": ["trainer", "filepath"],
        "_should_skip_saving_checkpoint": ["trainer"],
    }.items():
        assert hasattr(ModelCheckpoint, method), broken(f"ModelCheckpoint.{method}")
        found = list(inspect.signature(getattr(ModelCheckpoint, method)).parameters)[1:]
        assert found == parameters, broken(f"the parameters of ModelCheckpoint.{method}")
    linking = inspect.signature(ModelCheckpoint._link_checkpoint).parameters
    assert list(linking) == ["trainer", "filepath", "linkpath"], broken("ModelCheckpoint._link_checkpoint")
    # StepCheckpointBase turns _link_checkpoint into a method: Lightning must call it through self.
    assert "self._link_checkpoint(" in inspect.getsource(ModelCheckpoint._save_last_checkpoint), broken(
        "how ModelCheckpoint links `last`"
    )


def test_step_checkpoint_base_overrides_only_existing_private_methods():
    overridden = [
        name for name in vars(StepCheckpointBase) if name.startswith("_") and not name.startswith("__")
    ]
    for name in overridden:
        assert hasattr(ModelCheckpoint, name), broken(
            f"ModelCheckpoint.{name} (overridden by StepCheckpointBase)"
        )


def test_should_update_logs_is_a_property_of_the_logger_connector():
    trainer = L.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, log_every_n_steps=1
    )
    assert hasattr(trainer, "_logger_connector"), broken("Trainer._logger_connector")
    assert compat.should_log_this_step(trainer) is True, broken("_LoggerConnector.should_update_logs")
    assert compat.should_log_this_step(L.Trainer(logger=False, log_every_n_steps=0)) is False


def test_attached_trainer_reads_the_module_private_trainer():
    module = L.LightningModule()
    assert compat.attached_trainer(module) is None, broken("LightningModule._trainer")
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    module.trainer = trainer
    assert compat.attached_trainer(module) is trainer, broken("LightningModule._trainer")


def test_model_parallel_sizes_are_read_and_replaced():
    strategy = ModelParallelStrategy(data_parallel_size="auto", tensor_parallel_size=2)
    assert compat.model_parallel_sizes(strategy) == ("auto", 2), broken("ModelParallelStrategy's sizes")
    compat.set_model_parallel_sizes(strategy, 4, 2)
    assert compat.model_parallel_sizes(strategy) == (4, 2)
    source = inspect.getsource(ModelParallelStrategy.setup_environment)
    assert "_data_parallel_size" in source and "_tensor_parallel_size" in source, broken(
        "where ModelParallelStrategy reads its sizes (setup_environment)"
    )


def test_a_sharded_checkpoint_reads_back_in_one_process(tmp_path: Path):
    import torch.distributed.checkpoint as dcp

    dcp.save({"state_dict": {"model.w": torch.arange(4.0)}}, checkpoint_id=tmp_path / "sharded")
    torch.save({"global_step": 7}, tmp_path / "sharded" / "meta.pt")
    try:
        checkpoint = compat.load_sharded_checkpoint(tmp_path / "sharded")
    except (ImportError, AttributeError) as error:
        pytest.fail(broken(f"lightning.fabric.utilities.load._load_distributed_checkpoint ({error})"))
    assert (
        torch.equal(checkpoint["state_dict"]["model.w"], torch.arange(4.0)) and checkpoint["global_step"] == 7
    )
