"""Callbacks that tests add to `lit-pretrain fit` runs through `--trainer.callbacks` to observe them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from lit_pretrain.data.batches import batch_windows


class RecordMicroBatchLosses(L.Callback):
    """Recomputes each micro-batch's loss independently of the module and writes them, per rank, as JSON."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.losses: list[dict[str, Any]] = []

    @torch.no_grad()
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ):
        windows = batch_windows(batch).long()
        logits = pl_module.model(windows[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), windows[:, 1:].flatten())
        self.losses.append({"step": trainer.global_step, "batch_idx": batch_idx, "loss": float(loss)})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.losses))


class SlowRank(L.Callback):
    """Makes one rank's device look slower: a sleep at the end of each of its forward passes (in the head)."""

    def __init__(self, rank: int, seconds: float) -> None:
        self.rank = rank
        self.seconds = seconds

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == self.rank:
            # The output head runs after the last block's all-gather: under FSDP2 the other ranks do not
            # wait for this rank inside their own forward passes, as they would for a slow block.
            pl_module.model.lm_head.register_forward_hook(lambda *_: time.sleep(self.seconds))
