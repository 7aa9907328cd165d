"""fit/validate: LightningCLI wired to `LitPretrain` and `PretrainDataModule`."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lit_pretrain.callbacks.preemption import Preemption
from lit_pretrain.callbacks.throughput import TokenThroughput
from lit_pretrain.checkpoint.io import RetainingCheckpoint, find_last_checkpoint
from lit_pretrain.data.datamodule import PretrainDataModule
from lit_pretrain.training.module import LitPretrain


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
                "checkpoint.filename": "step-{step:07d}",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.save_top_k": -1,
                # A resumed run keeps writing last.ckpt, not last-v1.ckpt.
                "checkpoint.enable_version_counter": False,
            }
        )

    def before_instantiate_classes(self) -> None:
        """Put checkpoints and TensorBoard logs under the run's default_root_dir unless set explicitly."""
        config = self.config[self.subcommand] if self.subcommand else self.config
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
        if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0":  # the processes DDP started too
            if found is None:
                print(f"[resume] no complete checkpoint in {directory}: starting a fresh run", flush=True)
            else:
                print(f"[resume] resuming from {found}", flush=True)
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
        print(f"   steps: {trainer.global_step}   tokens seen: {getattr(self.model, 'tokens_seen', 0):,}")
        for name in ("train/loss", "val/loss", "val/ppl"):
            if name in metrics:
                print(f"   {name}: {metrics[name]:.4f}")
        print(f"   checkpoints: {checkpoint_dir}")
        logdir = getattr(trainer.logger, "root_dir", None)  # TensorBoardLogger: <save_dir>/<name>
        if logdir:
            print(f"   TensorBoard: tensorboard --logdir {logdir}")


def run_lightning_cli(args: list[str] | None = None, extra_callbacks: list | None = None) -> PretrainCLI:
    """Run fit/validate with `args` (default: sys.argv) and return the CLI object.

    `extra_callbacks` join the default ones (for programs that drive the CLI, such as benchmarks).
    """
    return PretrainCLI(
        LitPretrain,
        PretrainDataModule,
        trainer_defaults={
            "callbacks": [TokenThroughput(), *(extra_callbacks or [])],
            "plugins": [{"class_path": "lit_pretrain.checkpoint.io.AtomicCheckpointIO"}],
        },
        save_config_kwargs={"overwrite": True},
        args=args,
        parser_kwargs={"default_env": False},
    )
