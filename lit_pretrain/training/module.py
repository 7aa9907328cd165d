"""`LitPretrain`: next-token prediction around `GPT`, with AdamW and warmup + cosine decay."""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torchmetrics import MeanMetric

from lit_pretrain.checkpoint.fingerprint import (
    check_resume_fingerprint,
    fingerprint_differences,
    resume_fingerprint,
    rng_states,
    seed_step,
    set_rng_states,
)
from lit_pretrain.checkpoint.io import FUSED_QKV_RESUME_ERROR, read_checkpoint, split_fused_qkv
from lit_pretrain.data.manifest import check_fingerprints_match, fingerprint
from lit_pretrain.model import GPT, ModelConfig, num_parameters, training_flops_per_token
from lit_pretrain.parallel.apply import ParallelConfig, data_parallel_size_and_rank, materialize, parallelize
from lit_pretrain.parallel.gradients import clip_grad_norm_, total_grad_norm


def warmup_cosine(step: int, warmup_steps: int, decay_steps: int, max_lr: float, min_lr: float) -> float:
    """Learning rate at optimizer step `step`: linear warmup to max_lr, cosine decay to min_lr, then flat."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


class LitPretrain(L.LightningModule):
    """Pre-trains a decoder-only transformer named by a preset (`model_name`) plus field overrides."""

    def __init__(
        self,
        model_name: str = "tiny",
        model_overrides: dict[str, Any] | None = None,
        learning_rate: float = 3e-4,
        min_lr: float = 3e-5,
        warmup_steps: int = 100,
        lr_decay_steps: int | None = None,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        init_from: str | None = None,
        max_consecutive_skipped_steps: int = 10,
        parallel: ParallelConfig | dict | None = None,
        max_tokens: int | None = None,
    ) -> None:
        """`init_from` starts from a checkpoint's weights only (fresh optimizer and schedule).

        A step whose loss is NaN or infinite is skipped (parameters unchanged); more than
        `max_consecutive_skipped_steps` such steps in a row stop the run. `parallel` says how blocks are
        sharded (under ModelParallelStrategy), recomputed and compiled (see parallelize.py). Training
        stops after `max_tokens` training tokens, or at the trainer's max_steps / max_time if sooner.
        """
        super().__init__()
        self.save_hyperparameters()
        # Stored as a plain dict: checkpoints must load with torch.load(weights_only=True).
        self.parallel_config = (
            parallel if isinstance(parallel, ParallelConfig) else ParallelConfig(**(parallel or {}))
        )
        self.hparams["parallel"] = asdict(self.parallel_config)
        self.config = ModelConfig.from_name(model_name, **(model_overrides or {}))
        self.model: GPT | None = None
        self.val_loss = MeanMetric()
        # One mean per validation source, created in setup() once the data's sources are known.
        self.val_loss_by_source = torch.nn.ModuleDict()
        self.val_source_names: list[str] = []
        self.tokens_seen = 0
        self.skipped_steps = 0
        # Set in setup(): how many data-parallel ranks there are and which one this process is.
        self.data_parallel_size, self.data_parallel_rank = 1, 0
        self._consecutive_skipped_steps = 0
        # Whether every micro-batch of the current optimizer step had a finite loss (a tensor: no sync).
        self._step_finite: torch.Tensor | None = None

    def configure_model(self) -> None:
        """Build the network here (not in __init__), so strategies can decide where and how it lives."""
        if self.model is not None:
            return
        # Built on the meta device, wrapped (sharded, checkpointed, compiled), then allocated: no rank ever
        # holds the whole model. The weights are drawn from their own generator, so they depend only on
        # the seed, not on the number of processes or on what drew random numbers before.
        with torch.device("meta"):
            model = GPT(self.config)
        self.model = parallelize(model, self.parallel_config, self.device_mesh)
        device = self.trainer.strategy.root_device if self._trainer is not None else torch.device("cpu")
        materialize(self.model, device, seed=int(os.environ.get("PL_GLOBAL_SEED", 0)))
        if self.hparams.init_from:
            self._load_initial_weights(Path(self.hparams.init_from))

    def _load_initial_weights(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"--model.init_from {path}: no such checkpoint")
        checkpoint = read_checkpoint(path)
        saved = checkpoint.get("hyper_parameters", {})
        if "model_name" in saved:
            saved_config = ModelConfig.from_name(saved["model_name"], **(saved.get("model_overrides") or {}))
            differences = fingerprint_differences(vars(saved_config), vars(self.config))
            differences.pop("name", None)
            if differences:
                lines = "\n".join(f"  {k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differences.items())
                raise ValueError(f"--model.init_from {path} holds a different model:\n{lines}")
        weights = {
            k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")
        }
        # Full tensors in; each rank keeps its shard when the model is sharded.
        set_model_state_dict(self.model, weights, options=StateDictOptions(full_state_dict=True, strict=True))
        if self._trainer is None or self.trainer.is_global_zero:
            print(
                f"initialised the model from {path} (step {checkpoint.get('global_step', '?')}); "
                "optimizer and schedule start fresh",
                flush=True,
            )

    def setup(self, stage: str) -> None:
        """Refuse data the model cannot read, before any step runs."""
        self.data_parallel_size, self.data_parallel_rank = data_parallel_size_and_rank(self.trainer)
        datamodule = getattr(self.trainer, "datamodule", None)
        data_vocab = getattr(datamodule, "vocab_size", None)
        if data_vocab is not None and data_vocab > self.config.vocab_size:
            raise ValueError(
                f"the data in {datamodule.data_dir} was tokenized with {data_vocab:,} tokens but model "
                f"{self.config.name!r} has vocab_size {self.config.vocab_size:,}: set "
                f"--model.model_overrides '{{vocab_size: {data_vocab}}}' or prepare the data with "
                f"--vocab_size {self.config.vocab_size}"
            )
        if stage in ("fit", "validate") and hasattr(datamodule, "val_sources"):
            self.val_source_names = [s.name for s in datamodule.val_sources]
            for name in self.val_source_names:
                if name not in self.val_loss_by_source:
                    self.val_loss_by_source[name] = MeanMetric()
        seq_len = getattr(datamodule, "seq_len", None)
        if seq_len is not None and seq_len > self.config.block_size:
            raise ValueError(
                f"--data.seq_len {seq_len} is longer than model {self.config.name!r}'s block_size "
                f"{self.config.block_size}: lower one or raise the other"
            )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits for token ids."""
        return self.model(idx)

    def _loss(self, batch: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        # PretrainDataModule gives {"tokens", "source"}; a plain tensor of windows works too.
        batch = batch["tokens"] if isinstance(batch, dict) else batch
        # Shards store uint16/int32 tokens; embedding lookups and cross-entropy need int64.
        batch = batch.long()
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = self.model(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed the generators from the micro-batch's place in the run, so a resumed run draws the same."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        micro_batch = batch_idx % self.trainer.accumulate_grad_batches
        # Tensor-parallel ranks of one group draw alike: their replicated activations must stay identical.
        seed_step(seed, self.trainer.global_step, micro_batch, self.data_parallel_rank)

    def training_step(self, batch: torch.Tensor | dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Next-token cross-entropy on one micro-batch."""
        loss = self._loss(batch)
        finite = torch.isfinite(loss.detach())
        self._step_finite = finite if self._step_finite is None else self._step_finite & finite
        tokens = batch["tokens"] if isinstance(batch, dict) else batch
        self.tokens_seen += (tokens.size(1) - 1) * tokens.size(0) * self.data_parallel_size
        self.log("train/loss", loss, prog_bar=True)
        # The rate used by this step (a Python float: logging it costs no device sync).
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Stop once `max_tokens` training tokens have been seen (at the end of an optimizer step)."""
        max_tokens = self.hparams.max_tokens
        if (
            max_tokens
            and self.tokens_seen >= max_tokens
            and (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0
        ):
            self.trainer.should_stop = True

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Skip the step when a micro-batch's loss was NaN or infinite: no gradient reaches the weights."""
        finite, self._step_finite = self._step_finite, None
        if finite is None:
            return
        bad = (~finite).float()
        if self.trainer.world_size > 1:  # every rank must skip together
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        if not bool(bad > 0):  # one host sync per optimizer step
            self._consecutive_skipped_steps = 0
            return
        self.skipped_steps += 1
        self._consecutive_skipped_steps += 1
        precision = self.trainer.precision_plugin
        if not (isinstance(precision, MixedPrecision) and precision.scaler is not None):
            # AdamW leaves a parameter without a gradient untouched (no moment update, no weight decay).
            # With a GradScaler the non-finite gradients already make it skip the step.
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    parameter.grad = None
        self.log("train/skipped_steps", float(self.skipped_steps))
        rank_zero_warn(
            f"step {self.trainer.global_step}: the loss is not finite; skipped this optimizer step "
            f"({self._consecutive_skipped_steps} in a row, {self.skipped_steps} in all)"
        )
        if self._consecutive_skipped_steps > self.hparams.max_consecutive_skipped_steps:
            raise RuntimeError(
                f"the loss was NaN or infinite for {self._consecutive_skipped_steps} optimizer steps in a row "
                f"(up to step {self.trainer.global_step}; --model.max_consecutive_skipped_steps is "
                f"{self.hparams.max_consecutive_skipped_steps}): training has diverged. Lower "
                "--model.learning_rate, add --trainer.gradient_clip_val, or check the data; resume from "
                "the last checkpoint with --ckpt_path last"
            )

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Log the global gradient norm, and clip by it when --trainer.gradient_clip_val is set.

        Lightning's own norm clipping fails when tensor parallelism puts parameters on different meshes.
        Without norm clipping the norm is taken only on the steps that are logged (its reductions cost).
        """
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        by_norm = bool(gradient_clip_val) and gradient_clip_algorithm != "value"
        norm = None
        if by_norm:
            norm = clip_grad_norm_(parameters, gradient_clip_val)
        elif self.trainer._logger_connector.should_update_logs:  # Lightning's own "log this step?"
            norm = total_grad_norm(parameters)
        if gradient_clip_val and not by_norm:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if norm is not None:  # None: a skipped step, whose gradients were dropped
            self.log("train/grad_norm", norm)

    def validation_step(
        self, batch: torch.Tensor | dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Accumulate token-weighted mean losses: over all validation data and per source."""
        loss = self._loss(batch)
        tokens = batch["tokens"] if isinstance(batch, dict) else batch
        weight = tokens.size(0) * (tokens.size(1) - 1)
        self.val_loss.update(loss, weight=weight)
        if dataloader_idx < len(self.val_source_names):
            self.val_loss_by_source[self.val_source_names[dataloader_idx]].update(loss, weight=weight)

    def on_validation_epoch_end(self) -> None:
        """Log validation loss and perplexity (exp of the mean loss, not the mean of per-batch exps)."""
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/ppl", torch.exp(loss), sync_dist=False)
        for name in self.val_source_names:
            metric = self.val_loss_by_source[name]
            self.log(f"val/{name}/loss", metric.compute(), sync_dist=False, add_dataloader_idx=False)
            metric.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (weight decay on matrices only) and a per-optimizer-step warmup + cosine schedule."""
        hp = self.hparams
        decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.learning_rate,
            betas=tuple(hp.betas),
            eps=hp.eps,
        )
        decay_steps = hp.lr_decay_steps or self._total_optimizer_steps()
        # LambdaLR multiplies the base lr, so express the schedule as a fraction of it.
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: (
                warmup_cosine(step, hp.warmup_steps, decay_steps, hp.learning_rate, hp.min_lr)
                / hp.learning_rate
            ),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_optimizer_steps(self) -> int:
        limits = []
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            limits.append(self.trainer.max_steps)
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.hparams.max_tokens and hasattr(datamodule, "seq_len"):
            tokens_per_step = (
                datamodule.seq_len
                * datamodule.micro_batch_size
                * self.trainer.accumulate_grad_batches
                * self.data_parallel_size
            )
            limits.append(math.ceil(self.hparams.max_tokens / tokens_per_step))
        if limits:
            return min(limits)
        # Not trainer.estimated_stepping_batches: an epoch over a weighted mixture ends when one source
        # runs out, which litdata's length does not know (it gave 2 steps for a 24-step epoch), and
        # reading it drops the data loader's position on resume (Lightning issue 20550, reproduced here).
        raise ValueError(
            "the learning-rate schedule needs a length: set --trainer.max_steps, --model.max_tokens or "
            "--model.lr_decay_steps (training by epochs alone is not supported)"
        )

    def _resume_fingerprint(self, datamodule: Any) -> dict[str, Any]:
        return resume_fingerprint(
            self.config, datamodule, self.data_parallel_size, self.trainer.accumulate_grad_batches
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store counters, RNG states and what a resume must match; the tokenizer, for generation."""
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["skipped_steps"] = self.skipped_steps
        checkpoint["rng_states"] = rng_states()
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self._trainer is not None:
            checkpoint["resume_fingerprint"] = self._resume_fingerprint(datamodule)
        if datamodule is not None and hasattr(datamodule, "tokenizer_json"):
            checkpoint["tokenizer_json"] = datamodule.tokenizer_json()
            checkpoint["data_manifest"] = datamodule.manifest

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore counters and RNG states; refuse to resume a run that differs from the checkpoint's."""
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        resuming = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if split_fused_qkv(checkpoint.get("state_dict", {})) and resuming:
            raise ValueError(FUSED_QKV_RESUME_ERROR)
        if resuming and "resume_fingerprint" in checkpoint:
            current = self._resume_fingerprint(datamodule)
            elastic = bool(getattr(datamodule, "elastic_resume", False))
            for change in check_resume_fingerprint(checkpoint["resume_fingerprint"], current, elastic):
                rank_zero_warn(f"resuming elastically although {change}: the data order differs from before")
        if resuming and "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
        if "data_manifest" in checkpoint and hasattr(datamodule, "manifest"):
            check_fingerprints_match(
                fingerprint(checkpoint["data_manifest"]),
                fingerprint(datamodule.manifest),
                "the checkpoint",
                str(datamodule.data_dir),
            )

    def model_summary(self, seq_len: int) -> dict[str, float]:
        """Parameters and training FLOPs per token, for logs and MFU."""
        return {
            "parameters": num_parameters(self.config),
            "parameters_without_embedding": num_parameters(self.config, include_embedding=False),
            "flops_per_token": training_flops_per_token(self.config, seq_len),
        }
