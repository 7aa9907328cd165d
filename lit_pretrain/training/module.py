"""`LitPretrain`: next-token prediction around `GPT`, wiring the model, data, optimizer and checkpoints."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torchmetrics import MeanMetric

from lit_pretrain._compat.lightning import attached_trainer, should_log_this_step
from lit_pretrain.checkpoint.fingerprint import (
    check_resume_fingerprint,
    elastic_changes,
    fingerprint_differences,
    resume_fingerprint,
)
from lit_pretrain.checkpoint.legacy import FUSED_QKV_RESUME_ERROR, split_fused_qkv
from lit_pretrain.checkpoint.loading import model_config, read_metadata, read_model_weights
from lit_pretrain.checkpoint.rng import (
    global_seed,
    micro_batch_seed,
    rng_states,
    seed_global_generators,
    set_rng_states,
)
from lit_pretrain.data.batches import Batch, batch_windows, tokens_in_batch
from lit_pretrain.data.datamodule import DataSpec, data_spec
from lit_pretrain.data.distributed import data_parallel_size_and_rank
from lit_pretrain.data.manifest import check_fingerprints_match, fingerprint
from lit_pretrain.interop.huggingface import is_hf_directory, read_hf_config, read_hf_model
from lit_pretrain.model import GPT, ModelConfig, num_parameters, training_flops_per_token
from lit_pretrain.optim.accumulation import ends_optimizer_step
from lit_pretrain.optim.adamw import AdamWConfig, build_adamw
from lit_pretrain.optim.batch_warmup import BatchSizeWarmup, first_rows
from lit_pretrain.optim.losses import next_token_losses
from lit_pretrain.optim.muon import OPTIMIZERS, MuonConfig, build_muon_adamw
from lit_pretrain.parallel.apply import parallelize
from lit_pretrain.parallel.config import ParallelConfig
from lit_pretrain.parallel.gradients import clip_grad_norm_, total_grad_norm
from lit_pretrain.parallel.init import materialize
from lit_pretrain.training.budget import TokenCount, schedule_length

log = logging.getLogger(__name__)


def resolve_model_config(
    model_name: str, model_overrides: dict[str, Any] | None, init_from: str | None = None
) -> ModelConfig:
    """The model a run trains: a preset plus overrides, or, with `init_from` a Hugging Face model directory,
    that model's architecture (plus overrides, e.g. dropout), since its weights must fit."""
    if init_from and is_hf_directory(init_from):
        config, _ = read_hf_config(init_from)
        return replace(config, **(model_overrides or {})) if model_overrides else config
    return ModelConfig.from_name(model_name, **(model_overrides or {}))


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
        parallel: ParallelConfig | dict | None = None,
        max_tokens: TokenCount | None = None,
        optimizer: str = "adamw",
        muon_lr: float = 0.02,
        muon_momentum: float = 0.95,
        lr_schedule: str = "cosine",
        decay_fraction: float = 0.2,
        decay_shape: str = "linear",
        z_loss: float = 0.0,
        batch_size_warmup_tokens: TokenCount | int = 0,
        batch_size_warmup_start: float = 0.0,
        document_mask: bool = False,
        document_positions: bool = False,
        embedding_lr: float | None = None,
    ) -> None:
        """`init_from` starts from a checkpoint's weights only (fresh optimizer and schedule).

        `parallel` says how blocks are sharded (under ModelParallelStrategy), recomputed and compiled (see
        parallel/). Training stops after `max_tokens` training tokens, or at the trainer's max_steps /
        max_time if sooner. Skipping bad steps is the `LossGuard` callback's job (callbacks/loss_guard.py).

        `optimizer` "muon": Muon (`muon_lr`, `muon_momentum`, `weight_decay`) for the blocks' matrices and
        AdamW for the rest (optim/muon.py). `lr_schedule` "wsd": warmup, stable, then a decay over the
        last `decay_fraction` of the run shaped `decay_shape` (linear, cosine or sqrt); both optimizers
        follow the one schedule. `z_loss` adds `z_loss * mean(logsumexp(logits)^2)` to the training loss
        (PaLM); train/loss and the validation loss stay the cross-entropy, train/z_loss logs the term.
        `batch_size_warmup_tokens` trains on a growing share of each micro-batch, from
        `batch_size_warmup_start`, until that many tokens are trained on (optim/batch_warmup.py).

        `document_mask`: attention stays within each document of a packed window (documents end with the
        data's EOS token, whose id is read from the dataset's manifest); `document_positions` also restarts
        positions at each document (model/gpt.py).

        `embedding_lr`: the token embedding's own AdamW rate (the head's too when tied), on the same
        schedule; None: `learning_rate`.
        """
        super().__init__()
        self.save_hyperparameters()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"--model.optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        if not 0.0 <= z_loss < float("inf"):
            raise ValueError(f"--model.z_loss must be 0 (off) or a positive number, got {z_loss}")
        self.muon_config = MuonConfig(muon_lr, muon_momentum)
        self.batch_warmup = BatchSizeWarmup(int(batch_size_warmup_tokens), batch_size_warmup_start)
        self.hparams["batch_size_warmup_tokens"] = self.batch_warmup.tokens  # a plain int in checkpoints
        # Stored as a plain dict: checkpoints must load with torch.load(weights_only=True).
        self.parallel_config = (
            parallel if isinstance(parallel, ParallelConfig) else ParallelConfig(**(parallel or {}))
        )
        self.hparams["parallel"] = asdict(self.parallel_config)
        self.hparams["max_tokens"] = int(max_tokens) if max_tokens else None  # a plain int in checkpoints
        self.config = resolve_model_config(model_name, model_overrides, init_from)
        if init_from and is_hf_directory(init_from):
            # Checkpoints rebuild the model from model_name + model_overrides: every field, so the imported
            # architecture is what they get back.
            self.hparams["model_overrides"] = {k: v for k, v in asdict(self.config).items() if k != "name"}
        self.optimizer_config = AdamWConfig(
            learning_rate,
            min_lr,
            warmup_steps,
            weight_decay,
            tuple(betas),
            eps,
            lr_schedule,
            decay_fraction,
            decay_shape,
            embedding_lr,
        )
        self.model: GPT | None = None
        self.val_loss = MeanMetric()
        # The logged steps' training loss: a mean over their micro-batches and the data-parallel ranks.
        # No NaN checks: they would move the loss to the host on every update.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.train_z_loss = MeanMetric(nan_strategy="disable")
        # Rows of each micro-batch this optimizer step trains on (batch-size warmup; None: all).
        self._step_rows: int | None = None
        # This optimizer step's micro-batch losses summed on the device, for `step_loss` (the loss guard).
        self._step_loss_sum: torch.Tensor | None = None
        self._step_micro_batches = 0
        # One mean per validation source, created in setup() once the data's sources are known.
        self.val_loss_by_source = torch.nn.ModuleDict()
        self.val_source_names: list[str] = []
        self.tokens_seen = 0
        # Set in setup(): how many data-parallel ranks there are and which one this process is.
        self.data_parallel_size, self.data_parallel_rank = 1, 0
        self.data: DataSpec | None = None

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
        trainer = attached_trainer(self)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        materialize(self.model, device, seed=global_seed())
        if self.hparams.init_from:
            self._load_initial_weights(Path(self.hparams.init_from))

    def _load_initial_weights(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"--model.init_from {path}: no such checkpoint")
        if is_hf_directory(path):
            _, weights, _ = read_hf_model(path)
            set_model_state_dict(
                self.model, weights, options=StateDictOptions(full_state_dict=True, strict=True)
            )
            log.info(
                "initialised the model from the Hugging Face model %s; optimizer and schedule start fresh",
                path,
            )
            return
        metadata = read_metadata(path)
        differences = fingerprint_differences(vars(model_config(metadata, path)), vars(self.config))
        differences.pop("name", None)
        if differences:
            lines = "\n".join(f"  {k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differences.items())
            raise ValueError(f"--model.init_from {path} holds a different model:\n{lines}")
        weights = read_model_weights(path, self.config)
        # Full tensors in; each rank keeps its shard when the model is sharded.
        set_model_state_dict(self.model, weights, options=StateDictOptions(full_state_dict=True, strict=True))
        log.info(
            "initialised the model from %s (step %s); optimizer and schedule start fresh",
            path,
            metadata.get("global_step", "?"),
        )

    def setup(self, stage: str) -> None:
        """Refuse data the model cannot read, before any step runs; give document masking the EOS id."""
        self.data_parallel_size, self.data_parallel_rank = data_parallel_size_and_rank(self.trainer)
        self.data = data_spec(self.trainer)
        if self.hparams.document_positions and not self.hparams.document_mask:
            raise ValueError(
                "--model.document_positions restarts positions per document: it needs --model.document_mask true"
            )
        if self.data is None:
            if self.hparams.document_mask and self.config.eos_token_id is None:
                raise ValueError(
                    "--model.document_mask needs the data's EOS token id: train with --data.data_dir"
                )
            return
        if self.hparams.document_mask:
            self._mask_documents(int(self.data.manifest["eos_id"]))
        if self.data.vocab_size > self.config.vocab_size:
            raise ValueError(
                f"the data in {self.data.data_dir} was tokenized with {self.data.vocab_size:,} tokens but "
                f"model {self.config.name!r} has vocab_size {self.config.vocab_size:,}: set "
                f"--model.model_overrides '{{vocab_size: {self.data.vocab_size}}}' or prepare the data with "
                f"--vocab_size {self.config.vocab_size}"
            )
        if stage in ("fit", "validate"):
            self.val_source_names = list(self.data.val_sources)
            for name in self.val_source_names:
                if name not in self.val_loss_by_source:
                    self.val_loss_by_source[name] = MeanMetric()
        if self.batch_warmup.tokens and self.data.micro_batch_size < 2:
            raise ValueError(
                "--model.batch_size_warmup_tokens trains on the first rows of each micro-batch, which needs "
                f"--data.micro_batch_size of 2 or more (got {self.data.micro_batch_size}): raise it, lowering "
                "--trainer.accumulate_grad_batches to keep the batch, or turn the warmup off"
            )
        if self.data.seq_len > self.config.block_size:
            raise ValueError(
                f"--data.seq_len {self.data.seq_len} is longer than model {self.config.name!r}'s block_size "
                f"{self.config.block_size}: lower one or raise the other"
            )

    def _mask_documents(self, eos_id: int) -> None:
        # Before configure_model builds the network; recorded in model_overrides, so that checkpoints
        # rebuild the same model (and a resume compares like with like).
        fields = {
            "document_mask": True,
            "document_positions": bool(self.hparams.document_positions),
            "eos_token_id": eos_id,
        }
        self.config = replace(self.config, **fields)
        self.hparams["model_overrides"] = {**(self.hparams.model_overrides or {}), **fields}

    def on_train_start(self) -> None:
        """Say what is being trained."""
        if self.data is not None:
            summary = self.model_summary(self.data.seq_len)
            log.info(
                "model %s: %.2fM parameters, %.1f MFLOPs per token at seq_len %d",
                self.config.name,
                summary["parameters"] / 1e6,
                summary["flops_per_token"] / 1e6,
                self.data.seq_len,
            )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits for token ids."""
        return self.model(idx)

    def _losses(self, batch: Batch, z_loss: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Shards store uint16/int32 tokens; embedding lookups and cross-entropy need int64.
        windows = batch_windows(batch).long()
        inputs, targets = windows[:, :-1], windows[:, 1:]
        return next_token_losses(self.model(inputs), targets, z_loss)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Seed the generators from the micro-batch's place in the run, so a resumed run draws the same."""
        micro_batch = batch_idx % self.trainer.accumulate_grad_batches
        # Tensor-parallel ranks of one group draw alike: their replicated activations must stay identical.
        seed_global_generators(
            micro_batch_seed(global_seed(), self.trainer.global_step, micro_batch, self.data_parallel_rank)
        )

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Next-token cross-entropy (plus the z-loss) on one micro-batch; the cross-entropy is what is
        logged and what the loss guard judges."""
        accumulate = self.trainer.accumulate_grad_batches
        if batch_idx % accumulate == 0 or self._step_rows is None:
            # Fixed for the whole optimizer step, from the tokens trained on before it (checkpointed).
            self._step_rows = self.batch_warmup.rows(self.tokens_seen, batch_windows(batch).size(0))
        batch = first_rows(batch, self._step_rows)
        loss, z_term = self._losses(batch, self.hparams.z_loss)
        detached = loss.detach()
        if batch_idx % accumulate == 0:
            self._step_loss_sum, self._step_micro_batches = detached, 0
        else:
            self._step_loss_sum = self._step_loss_sum + detached
        self._step_micro_batches += 1
        self.tokens_seen += tokens_in_batch(batch) * self.data_parallel_size
        if should_log_this_step(self.trainer):
            self.train_loss.update(detached)
            if z_term is not None:
                self.train_z_loss.update(z_term.detach())
            if ends_optimizer_step(batch_idx, accumulate):
                # The only reduction across ranks, and the only host transfer, of the training loss.
                mean = self.train_loss.compute()
                self.train_loss.reset()
                self.log("train/loss", mean, sync_dist=False)
                self.log("train/ppl", torch.exp(mean), sync_dist=False)
                self.log("train/tokens_seen", float(self.tokens_seen))
                # The rate used by this step (a Python float: logging it costs no device sync).
                self.log("train/lr", self.optimizers().param_groups[0]["lr"])
                if z_term is not None:
                    self.log("train/z_loss", self.train_z_loss.compute(), sync_dist=False)
                    self.train_z_loss.reset()
        return loss if z_term is None else loss + z_term

    def step_loss(self) -> torch.Tensor | None:
        """This process's mean loss over the micro-batches of the current optimizer step (on the device)."""
        if self._step_loss_sum is None:
            return None
        return self._step_loss_sum / self._step_micro_batches

    def planned_steps(self) -> int | None:
        """The run's length in optimizer steps (the sooner of max_steps and max_tokens); None if unbounded."""
        try:
            return self._planned_steps()
        except ValueError:
            return None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Stop once `max_tokens` training tokens have been seen (at the end of an optimizer step)."""
        max_tokens = self.hparams.max_tokens
        if (
            max_tokens
            and self.tokens_seen >= max_tokens
            and ends_optimizer_step(batch_idx, self.trainer.accumulate_grad_batches)
        ):
            self.trainer.should_stop = True

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
        elif should_log_this_step(self.trainer):
            norm = total_grad_norm(parameters)
        if gradient_clip_val and not by_norm:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if norm is not None:  # None: a skipped step, whose gradients were dropped
            self.log("train/grad_norm", norm)

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Accumulate token-weighted mean losses: over all validation data and per source."""
        loss, _ = self._losses(batch)
        weight = tokens_in_batch(batch)
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
        """AdamW (weight decay on matrices only), or Muon + AdamW, and a per-optimizer-step schedule."""
        decay_steps = self.hparams.lr_decay_steps or self._planned_steps()
        if self.hparams.optimizer == "muon":
            optimizer, scheduler = build_muon_adamw(
                self.model, self.optimizer_config, self.muon_config, decay_steps
            )
        else:
            optimizer, scheduler = build_adamw(
                self.model.parameters(), self.optimizer_config, decay_steps, embedding=self.model.wte.weight
            )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _planned_steps(self) -> int:
        tokens_per_step = 0
        if self.data is not None:
            tokens_per_step = (
                self.data.seq_len
                * self.data.micro_batch_size
                * self.trainer.accumulate_grad_batches
                * self.data_parallel_size
            )
        max_tokens = self.hparams.max_tokens if tokens_per_step else None
        if max_tokens and self.batch_warmup.tokens:
            # The warmup's smaller steps make the token budget last more steps.
            micro_batch = self.data.micro_batch_size
            by_tokens = self.batch_warmup.steps_to_reach(
                max_tokens, micro_batch, tokens_per_step // micro_batch
            )
            max_steps = self.trainer.max_steps
            return min(by_tokens, max_steps) if max_steps and max_steps > 0 else by_tokens
        return schedule_length(self.trainer.max_steps, max_tokens, tokens_per_step)

    def _resume_fingerprint(self) -> dict[str, Any]:
        return resume_fingerprint(
            self.config, self.data, self.data_parallel_size, self.trainer.accumulate_grad_batches
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store counters, RNG states and what a resume must match; the tokenizer, for generation."""
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["optimizer_name"] = self.hparams.optimizer
        checkpoint["rng_states"] = rng_states()
        if attached_trainer(self) is not None:
            checkpoint["resume_fingerprint"] = self._resume_fingerprint()
        if attached_trainer(self) is not None:
            # Which logger run this is, so that a resumed run continues it (cli/fit.py).
            checkpoint["loggers"] = [
                {"class_name": type(logger).__name__, "version": logger.version}
                for logger in self.trainer.loggers
            ]
        if self.data is not None:
            checkpoint["tokenizer_json"] = self.data.tokenizer_json
            checkpoint["data_manifest"] = self.data.manifest

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore counters and RNG states; refuse to resume a run that differs from the checkpoint's."""
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
        trainer = attached_trainer(self)
        resuming = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        if split_fused_qkv(checkpoint.get("state_dict", {})) and resuming:
            raise ValueError(FUSED_QKV_RESUME_ERROR)
        if resuming and "resume_fingerprint" in checkpoint:
            saved, current = checkpoint["resume_fingerprint"], self._resume_fingerprint()
            elastic = self.data is not None and self.data.elastic_resume
            check_resume_fingerprint(saved, current, elastic)
            for change in elastic_changes(saved, current) if elastic else []:
                rank_zero_warn(f"resuming elastically although {change}: the data order differs from before")
        if resuming:
            self._check_same_optimizer(checkpoint.get("optimizer_name", "adamw"))  # older ones: AdamW
        if resuming and "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
        if "data_manifest" in checkpoint and self.data is not None:
            check_fingerprints_match(
                fingerprint(checkpoint["data_manifest"]),
                fingerprint(self.data.manifest),
                "the checkpoint",
                str(self.data.data_dir),
            )

    def _check_same_optimizer(self, saved: str) -> None:
        if saved != self.hparams.optimizer:
            raise ValueError(
                f"the checkpoint was trained with --model.optimizer {saved} and this run asks for "
                f"{self.hparams.optimizer}: its optimizer state does not carry over. Resume with "
                f"--model.optimizer {saved}, or start from its weights with a fresh optimizer and schedule "
                "through --model.init_from <checkpoint> (without --ckpt_path)"
            )

    def model_summary(self, seq_len: int) -> dict[str, float]:
        """Parameters and training FLOPs per token, for logs and MFU."""
        return {
            "parameters": num_parameters(self.config),
            "parameters_without_embedding": num_parameters(self.config, include_embedding=False),
            "flops_per_token": training_flops_per_token(self.config, seq_len),
        }
