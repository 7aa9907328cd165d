"""`lit-pretrain fit|validate`: LightningCLI wired to `LitPretrain` and `PretrainDataModule`."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from jsonargparse import Namespace
from jsonargparse.typing import register_type
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from lit_pretrain.callbacks.preemption import Preemption
from lit_pretrain.callbacks.source_tokens import SourceTokenCounter
from lit_pretrain.callbacks.throughput import TokenThroughput
from lit_pretrain.checkpoint.naming import STEP_FILENAME, find_last_checkpoint
from lit_pretrain.checkpoint.retention import RetainingCheckpoint
from lit_pretrain.data.datamodule import PretrainDataModule
from lit_pretrain.model import ModelConfig
from lit_pretrain.training.budget import TokenCount
from lit_pretrain.training.module import LitPretrain

log = logging.getLogger(__name__)

# --model.max_tokens 3e12 and --max_tokens 3e12: token counts may be written in scientific notation.
register_type(TokenCount, serializer=int, deserializer=TokenCount)


class PretrainCLI(LightningCLI):
    """LightningCLI with checkpointing (`--checkpoint.*`), preemption (`--preemption.*`), run-directory
    defaults and `--ckpt_path last` meaning the newest complete checkpoint, or a fresh start without one."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add `--checkpoint.*` (atomic, retained checkpoints; last.ckpt links the newest) and `--preemption.*`."""
        parser.add_lightning_class_args(RetainingCheckpoint, "checkpoint")
        parser.add_lightning_class_args(Preemption, "preemption")
        parser.set_defaults(
            {
                "checkpoint.save_last": "link",
                "checkpoint.filename": STEP_FILENAME,
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.save_top_k": -1,
                # A resumed run keeps writing last.ckpt, not last-v1.ckpt.
                "checkpoint.enable_version_counter": False,
            }
        )

    def before_instantiate_classes(self) -> None:
        """Fill what the run's other settings decide: seq_len, checkpoint and TensorBoard directories."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        fill_seq_len(config)
        root = config.trainer.default_root_dir or os.getcwd()
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(Path(root) / "checkpoints")
        if config.trainer.logger in (None, True):
            config.trainer.logger = {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(root), "name": "tensorboard"},
            }

    def before_fit(self) -> None:
        """Resolve `--ckpt_path last` to the newest complete checkpoint, or start fresh with a message."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        directory = Path(config["checkpoint"].dirpath)
        found = find_last_checkpoint(directory)
        if found is None:
            log.info("no complete checkpoint in %s: starting a fresh run", directory)
        else:
            log.info("resuming from %s", found)
        config["ckpt_path"] = None if found is None else str(found)

    def after_fit(self) -> None:
        """Say where everything went and how it ended."""
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "train/"))
        }
        checkpoint_dir = self.config[self.subcommand].checkpoint.dirpath
        print("\n== Training finished")
        print(f"   steps: {trainer.global_step}   tokens seen: {self.model.tokens_seen:,}")
        for name in ("train/loss", "val/loss", "val/ppl"):
            if name in metrics:
                print(f"   {name}: {metrics[name]:.4f}")
        print(f"   checkpoints: {checkpoint_dir}")
        if isinstance(trainer.logger, TensorBoardLogger):
            print(f"   TensorBoard: tensorboard --logdir {trainer.logger.root_dir}")


def fill_seq_len(config: Namespace) -> None:
    """A `data.seq_len` that no config or flag sets is the model's context length (its block_size)."""
    if config.data.seq_len is not None:
        return
    model = config.model
    config.data.seq_len = ModelConfig.from_name(model.model_name, **(model.model_overrides or {})).block_size
    log.info("data.seq_len is not set: using the model's block_size, %d", config.data.seq_len)


def run_lightning_cli(
    args: list[str] | None = None,
    extra_callbacks: list | None = None,
    cli_class: type[PretrainCLI] = PretrainCLI,
    run: bool = True,
    prog: str | None = None,
) -> PretrainCLI:
    """Run fit/validate with `args` (default: sys.argv) and return the CLI object.

    `extra_callbacks` join the default ones (for programs that drive the CLI, such as benchmarks).
    `cli_class` and `run=False` give other commands the same parser (`estimate` parses and stops).
    """
    return cli_class(
        LitPretrain,
        PretrainDataModule,
        trainer_defaults={
            # What every recipe in configs/trainer/ would otherwise repeat.
            "gradient_clip_val": 1.0,
            "log_every_n_steps": 10,
            "num_sanity_val_steps": 0,
            "check_val_every_n_epoch": None,  # validate every val_check_interval steps, not per epoch
            "callbacks": [TokenThroughput(), SourceTokenCounter(), *(extra_callbacks or [])],
            "plugins": [{"class_path": "lit_pretrain.checkpoint.atomic.AtomicCheckpointIO"}],
        },
        save_config_kwargs={"overwrite": True},
        args=args,
        parser_kwargs={"default_env": False, **({"prog": prog} if prog else {})},
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Run `fit` or `validate` (the verb is the first of `args`; None: read sys.argv)."""
    run_lightning_cli(args)
