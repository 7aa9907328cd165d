"""`LitPretrain`: next-token prediction around `GPT`, with AdamW and warmup + cosine decay."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from lit_pretrain.data.manifest import check_fingerprints_match, fingerprint
from lit_pretrain.model import GPT, ModelConfig, num_parameters, training_flops_per_token


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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = ModelConfig.from_name(model_name, **(model_overrides or {}))
        self.model: GPT | None = None
        self.val_loss = MeanMetric()
        # One mean per validation source, created in setup() once the data's sources are known.
        self.val_loss_by_source = torch.nn.ModuleDict()
        self.val_source_names: list[str] = []
        self.tokens_seen = 0

    def configure_model(self) -> None:
        """Build the network here (not in __init__), so strategies can decide where and how it lives."""
        if self.model is None:
            self.model = GPT(self.config)

    def setup(self, stage: str) -> None:
        """Refuse data the model cannot read, before any step runs."""
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

    def training_step(self, batch: torch.Tensor | dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Next-token cross-entropy on one micro-batch."""
        loss = self._loss(batch)
        tokens = batch["tokens"] if isinstance(batch, dict) else batch
        self.tokens_seen += (tokens.size(1) - 1) * tokens.size(0) * self.trainer.world_size
        self.log("train/loss", loss, prog_bar=True)
        # The rate used by this step (a Python float: logging it costs no device sync).
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

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
        if self.trainer.max_steps and self.trainer.max_steps > 0:
            return self.trainer.max_steps
        # Lightning issue 20550 (dataloader state dropped on resume when this is read) does not reproduce
        # with the pinned lightning/litdata versions; tests/test_train.py resumes through this path.
        return int(self.trainer.estimated_stepping_batches)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store tokens seen and the tokenizer, so a checkpoint alone is enough to generate text."""
        checkpoint["tokens_seen"] = self.tokens_seen
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "tokenizer_json"):
            checkpoint["tokenizer_json"] = datamodule.tokenizer_json()
            checkpoint["data_manifest"] = datamodule.manifest

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the token counter; refuse data whose tokens mean something else than the checkpoint's."""
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
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
