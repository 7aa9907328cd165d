"""`lit-pretrain fit|validate`: LightningCLI wired to `LitPretrain` and `PretrainDataModule`."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import Namespace
from jsonargparse.typing import register_type
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from lit_pretrain.callbacks.loss_guard import LossGuard
from lit_pretrain.callbacks.memory import MemoryMonitor
from lit_pretrain.callbacks.preemption import Preemption
from lit_pretrain.callbacks.progress import RunProgress
from lit_pretrain.callbacks.source_tokens import SourceTokenCounter
from lit_pretrain.callbacks.throughput import TokenThroughput
from lit_pretrain.checkpoint.loading import read_metadata
from lit_pretrain.checkpoint.naming import STEP_FILENAME, find_last_checkpoint
from lit_pretrain.checkpoint.retention import RetainingCheckpoint
from lit_pretrain.data.datamodule import PretrainDataModule
from lit_pretrain.experiments.sweep import RESULT_FILE
from lit_pretrain.model import num_parameters, training_flops_per_token
from lit_pretrain.training.budget import TokenCount
from lit_pretrain.training.module import LitPretrain, resolve_model_config

log = logging.getLogger(__name__)

# --model.max_tokens 3e12 and --max_tokens 3e12: token counts may be written in scientific notation.
register_type(TokenCount, serializer=int, deserializer=TokenCount)

# The init argument through which each logger continues an existing run, by logger class name. Not
# CSVLogger: given an existing version it deletes that version's metrics.csv, so a resumed run takes the next.
RESUME_ARGUMENT = {
    "TensorBoardLogger": "version",
    "WandbLogger": "id",
    "MLFlowLogger": "run_id",
}


class PretrainCLI(LightningCLI):
    """LightningCLI with checkpointing (`--checkpoint.*`), preemption (`--preemption.*`), throughput and MFU
    (`--perf.*`), the loss guard (`--loss_guard.*`), run-directory defaults, and `--ckpt_path last` meaning
    the newest complete checkpoint (continuing its logger's run), or a fresh start without one."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add the callbacks every run has, each with its own argument group."""
        parser.add_lightning_class_args(RetainingCheckpoint, "checkpoint")
        parser.add_lightning_class_args(Preemption, "preemption")
        parser.add_lightning_class_args(TokenThroughput, "perf")
        parser.add_lightning_class_args(LossGuard, "loss_guard")
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
        """Fill what the run's other settings decide: seq_len, directories, the checkpoint to resume from."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        fill_seq_len(config)
        root = config.trainer.default_root_dir or os.getcwd()
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(Path(root) / "checkpoints")
        if config.trainer.logger in (None, True):
            config.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.TensorBoardLogger",
                init_args=Namespace(save_dir=str(root), name="tensorboard"),
            )
        if self.subcommand == "fit":
            warn_if_torchrun_restarts_share_its_store(os.environ)
        if self.subcommand == "fit" and config.get("ckpt_path") == "last":
            config.ckpt_path = resolve_last_checkpoint(Path(config.checkpoint.dirpath))
        if self.subcommand == "fit" and config.get("ckpt_path"):
            continue_logger_runs(config.trainer.logger, read_metadata(Path(config.ckpt_path)))
        if config.trainer.enable_progress_bar is False:
            # Lightning refuses a progress bar callback when the bar is turned off.
            defaults = self.trainer_defaults
            defaults["callbacks"] = [c for c in defaults["callbacks"] if not isinstance(c, RunProgress)]

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
        for logger in trainer.loggers:
            print(f"   {describe_logger(logger)}")
        if trainer.default_root_dir:
            print(f"   report: lit-pretrain report {trainer.default_root_dir}")
        root = self.config[self.subcommand].trainer.default_root_dir
        if root and "://" not in str(root):  # a run directory that was asked for (not the cwd), on disk
            write_run_result(trainer, metrics, Path(root))


def write_run_result(trainer: L.Trainer, metrics: dict[str, float], run_dir: Path) -> Path:
    """`result.json` in `run_dir`: how the run ended and its last losses (read by `sweep` and `compare`).

    "finished" means the run reached its planned end (max_steps, max_tokens or max_epochs); "stopped" that something
    else ended it (a signal on any rank, max_time), so `--ckpt_path last` should continue it. Written
    atomically: a sweep never reads half a file.
    """
    model = trainer.lightning_module
    max_tokens = model.hparams.get("max_tokens")
    max_epochs = trainer.max_epochs
    reached_end = (
        (trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps)
        or bool(max_tokens and model.tokens_seen >= max_tokens)
        or bool(max_epochs and max_epochs > 0 and trainer.current_epoch >= max_epochs)
    )
    result = {
        "status": "finished" if reached_end and not trainer.interrupted else "stopped",
        "global_step": trainer.global_step,
        "tokens_seen": int(model.tokens_seen),
        "parameters": int(num_parameters(model.config)),
        "parameters_without_embedding": int(num_parameters(model.config, include_embedding=False)),
        "flops_per_token": int(training_flops_per_token(model.config, model.data.seq_len))
        if model.data is not None
        else None,
        **{name: value for name, value in metrics.items() if name in ("train/loss", "val/loss", "val/ppl")},
        "ended_at": time.time(),
    }
    path = run_dir / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(temporary, path)
    return path


class LogConfigCallback(SaveConfigCallback):
    """Saves the resolved configuration next to the logs and logs all of it as hyperparameters."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Every logger gets the whole configuration (model, data, trainer, callbacks), not only the model's."""
        config = self.config.as_dict()
        config.pop("config", None)  # the --config file paths, not settings
        for key in ("optimizer", "lr_scheduler"):
            # LightningCLI's own --optimizer/--lr_scheduler, unused here (LitPretrain configures its own):
            # a logged `optimizer: None` would clash with the model's `optimizer` hyperparameter (MLflow
            # refuses a parameter logged twice with two values).
            if config.get(key) is None:
                config.pop(key, None)
        for logger in trainer.loggers:
            if (
                type(logger).__name__ == "MLFlowLogger"
                and logger.experiment.get_run(logger.run_id).data.params
            ):
                # MLflow refuses to change a logged parameter, and a resumed run changes some (max_steps,
                # ckpt_path, the run id): the continued run keeps the values it was started with.
                log.info("MLflow run %s keeps the hyperparameters it was started with", logger.run_id)
                continue
            logger.log_hyperparams(config)


def resolve_last_checkpoint(directory: Path) -> str | None:
    """`--ckpt_path last`: the newest checkpoint in `directory` that loads, or None (a fresh start).

    Newer ones that do not load are skipped with a warning; when none loads, `find_last_checkpoint` raises.
    """
    found = find_last_checkpoint(directory)
    if found is None:
        log.info("no complete checkpoint in %s: starting a fresh run", directory)
        return None
    log.info("resuming from %s", found)
    return str(found)


def warn_if_torchrun_restarts_share_its_store(environ: Mapping[str, str]) -> bool:
    """Warn (and return True) when torchrun may restart workers over the store the last attempt used.

    torchrun's agent keeps one TCPStore for every attempt (torch 2.13 shares it by default), and the
    process group's keys are not separated by attempt: a restarted rank can read a dead peer's address
    and fail to connect ("Gloo connectFullMesh failed", NCCL's "Connection refused"; pytorch/pytorch#135712,
    #167288). Seen in 2 of 3 restarts with gloo here; none with the store not shared.
    """
    restarts = int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)
    if restarts == 0 or environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return False
    log.warning(
        "torchrun may restart this job (--max-restarts %d) over the store of the failed attempt, and a "
        "restarted rank can then connect to a dead peer's address and fail: start torchrun with "
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment (docs/checkpoints.md)",
        restarts,
    )
    return True


def continue_logger_runs(logger_config: Any, metadata: dict[str, Any]) -> None:
    """Point each configured logger at the run its checkpoint logged to, so a resumed run's curves continue.

    A logger whose configuration names its own version (or W&B id, MLflow run id) is left alone.
    """
    saved = {entry["class_name"]: entry["version"] for entry in metadata.get("loggers", [])}
    entries = logger_config if isinstance(logger_config, list) else [logger_config]
    for entry in entries:
        if not isinstance(entry, Namespace) or "class_path" not in entry:
            continue
        class_name = entry.class_path.rsplit(".", 1)[-1]
        argument = RESUME_ARGUMENT.get(class_name)
        if argument is None or saved.get(class_name) is None:
            continue
        if entry.get("init_args") is None:
            entry.init_args = Namespace()
        if entry.init_args.get(argument) is None:
            entry.init_args[argument] = saved[class_name]
            log.info("%s continues run %s", class_name, saved[class_name])


def describe_logger(logger: Logger) -> str:
    """Where a finished run's logger put its metrics, in one line."""
    if isinstance(logger, TensorBoardLogger):
        return f"TensorBoard: tensorboard --logdir {logger.log_dir}"
    if isinstance(logger, CSVLogger):
        return f"CSV: {Path(logger.log_dir) / 'metrics.csv'}"
    name = type(logger).__name__
    if name == "WandbLogger":
        run = logger.experiment
        if run.offline:  # (its url would warn that there is none)
            return f"W&B: run {logger.version}, offline (to upload: wandb sync {Path(run.dir).parent})"
        return f"W&B: run {logger.version} ({run.url})"
    if name == "MLFlowLogger":
        # The tracking URI: save_dir is None unless it is a file: URI.
        return f"MLflow: run {logger.version} at {logger.experiment.tracking_uri}"
    return f"{name}: {logger.log_dir or logger.save_dir}"


def fill_seq_len(config: Namespace) -> None:
    """A `data.seq_len` that no config or flag sets is the model's context length (its block_size)."""
    if config.data.seq_len is not None:
        return
    model = config.model
    config.data.seq_len = resolve_model_config(
        model.model_name, model.model_overrides, model.init_from
    ).block_size
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
            # RunProgress last: it shows what the others logged at the same step.
            "callbacks": [MemoryMonitor(), SourceTokenCounter(), *(extra_callbacks or []), RunProgress()],
            "plugins": [{"class_path": "lit_pretrain.checkpoint.atomic.AtomicCheckpointIO"}],
        },
        save_config_callback=LogConfigCallback,
        save_config_kwargs={"overwrite": True},
        args=args,
        parser_kwargs={"default_env": False, **({"prog": prog} if prog else {})},
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Run `fit` or `validate` (the verb is the first of `args`; None: read sys.argv)."""
    run_lightning_cli(args)
