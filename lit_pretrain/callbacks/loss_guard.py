"""`LossGuard`: skip (or stop on) optimizer steps whose loss is NaN, infinite or a spike."""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any, Literal

import lightning as L
import torch

from lit_pretrain._compat.lightning import should_log_this_step
from lit_pretrain.optim.accumulation import ends_optimizer_step

log = logging.getLogger(__name__)


class LossGuard(L.Callback):
    """Judges each optimizer step's loss before the step is taken, and drops the update of a bad one.

    A step is bad when its loss (mean over the micro-batches and the data-parallel ranks) is NaN or
    infinite, or, with `spike_sigma`, when it exceeds the mean of the last `window` good steps by more than
    `spike_sigma` standard deviations (checked once `min_history` good steps are known). With
    `action="skip"` a bad step's gradients are dropped, so the optimizer leaves every parameter and its
    moments untouched; more than `max_consecutive` bad steps in a row stop the run. With `action="stop"`
    the first bad step stops the run, also without updating the parameters.

    Needs a module with `step_loss()` (LitPretrain). Costs one host transfer per optimizer step, plus one
    all-reduce with several ranks (every rank must skip alike). Its counts and window are checkpointed.
    """

    def __init__(
        self,
        action: Literal["skip", "stop"] = "skip",
        spike_sigma: float | None = 6.0,
        window: int = 100,
        min_history: int = 50,
        max_consecutive: int = 10,
    ) -> None:
        if action not in ("skip", "stop"):
            raise ValueError(f"loss_guard.action must be 'skip' or 'stop', got {action!r}")
        if spike_sigma is not None and spike_sigma <= 0:
            raise ValueError(
                f"loss_guard.spike_sigma must be positive (or null to turn it off), got {spike_sigma}"
            )
        if not 2 <= min_history <= window:
            raise ValueError(f"loss_guard needs 2 <= min_history <= window, got {min_history} and {window}")
        self.action = action
        self.spike_sigma = spike_sigma
        self.window = window
        self.min_history = min_history
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self.recent: deque[float] = deque(maxlen=window)

    def state_dict(self) -> dict[str, Any]:
        """Counts and the recent good losses, so a resumed run judges its steps as the first run would."""
        return {"skipped": self.skipped, "consecutive": self.consecutive, "recent": list(self.recent)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from saved counts and losses."""
        self.skipped = int(state_dict["skipped"])
        self.consecutive = int(state_dict["consecutive"])
        self.recent = deque(state_dict["recent"], maxlen=self.window)

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Checkpoints from before the guard kept only the skip count, at the top level."""
        self.skipped = int(checkpoint.get("skipped_steps", self.skipped))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse a module that cannot say its step's loss, before any step runs."""
        if not callable(getattr(pl_module, "step_loss", None)):
            raise TypeError(
                f"LossGuard needs a LightningModule with a step_loss() method (as LitPretrain has); "
                f"{type(pl_module).__name__} has none"
            )

    def spike_threshold(self) -> float | None:
        """The loss above which a step is a spike, or None while too few good steps are known."""
        if self.spike_sigma is None or len(self.recent) < self.min_history:
            return None
        mean = math.fsum(self.recent) / len(self.recent)
        variance = math.fsum((x - mean) ** 2 for x in self.recent) / (len(self.recent) - 1)
        return mean + self.spike_sigma * math.sqrt(variance)

    def judge(self, loss: float) -> str | None:
        """Why the step with this loss is bad ("not finite", "a spike above ..."), or None if it is good."""
        if not math.isfinite(loss):
            return "not finite"
        threshold = self.spike_threshold()
        if threshold is not None and loss > threshold:
            return f"a spike above {threshold:.4f} (mean + {self.spike_sigma:g} sigma of the last {len(self.recent)} steps)"
        return None

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Decide on the step about to be taken; drop its gradients if it is bad."""
        loss = pl_module.step_loss()
        if loss is None:
            return
        if trainer.world_size > 1:
            loss = trainer.strategy.reduce(loss, reduce_op="mean")
        value = float(loss)  # the host sync: the decision is needed before the optimizer runs
        reason = self.judge(value)
        step = trainer.global_step + 1  # the step about to be taken, as the logged metrics count it
        if reason is None:
            self.consecutive = 0
            self.recent.append(value)
            return
        # AdamW leaves a parameter without a gradient untouched (no moment update, no weight decay); under a
        # GradScaler the gradients are already unscaled here, so its step skips the parameters too.
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None
        self.skipped += 1
        self.consecutive += 1
        if self.action == "stop":
            raise RuntimeError(
                f"step {step}: the loss {value:.4f} is {reason}; the update was not applied and the run "
                "stops (--loss_guard.action stop). Resume from the last checkpoint with --ckpt_path last, "
                "with a lower --model.learning_rate or --loss_guard.action skip"
            )
        log.warning(
            "step %d: the loss %.4f is %s; skipped this optimizer step (%d in a row, %d in all)",
            step,
            value,
            reason,
            self.consecutive,
            self.skipped,
        )
        if self.consecutive > self.max_consecutive:
            raise RuntimeError(
                f"the loss was bad for {self.consecutive} optimizer steps in a row (up to step {step}, the "
                f"last {reason}; --loss_guard.max_consecutive is {self.max_consecutive}): training has "
                "diverged. Lower --model.learning_rate, add --trainer.gradient_clip_val, or check the data; "
                "resume from the last checkpoint with --ckpt_path last"
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Log `train/skipped_steps` with the step's other metrics."""
        if ends_optimizer_step(batch_idx, trainer.accumulate_grad_batches) and should_log_this_step(trainer):
            pl_module.log("train/skipped_steps", float(self.skipped), on_step=True, on_epoch=False)
