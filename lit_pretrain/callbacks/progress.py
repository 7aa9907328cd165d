"""`RunProgress`: a progress bar over the whole run on a terminal, one plain line per interval elsewhere."""

from __future__ import annotations

import datetime
import logging
import sys
import time
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from lit_pretrain._compat.lightning import should_log_this_step
from lit_pretrain.optim.accumulation import ends_optimizer_step

log = logging.getLogger(__name__)


class RunProgress(ProgressBar):
    """Progress towards the run's last optimizer step (max_steps or max_tokens, not the end of an epoch).

    `mode="bar"`: a tqdm bar counting optimizer steps, with loss and tokens/s from the latest logged step
    and tqdm's ETA. `mode="lines"`: on every logged step one line (step, loss, lr, tokens/s, MFU when known,
    ETA) and one per validation, with no carriage returns, for SLURM and nohup log files.
    `mode="auto"` draws the bar when stdout is a terminal and writes lines otherwise. Only global rank 0
    shows anything. Values come from the metrics logged at that step, so nothing extra reaches the host.
    """

    def __init__(self, mode: Literal["auto", "bar", "lines"] = "auto") -> None:
        super().__init__()
        if mode not in ("auto", "bar", "lines"):
            raise ValueError(f"progress mode must be auto, bar or lines, got {mode!r}")
        self.mode = mode
        self._enabled = True
        self._bar: tqdm | None = None
        self._redirect: Any = None  # routes the suite's log lines above the bar while it is drawn
        self._use_bar = False
        self._total: int | None = None
        self._started = 0.0
        self._first_step = 0

    def disable(self) -> None:
        """Show nothing (Lightning calls this on ranks other than 0)."""
        self._enabled = False

    def enable(self) -> None:
        """Show progress again."""
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        """Whether this process shows progress."""
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        """Print without breaking the bar."""
        if self._bar is not None:
            self._bar.write(" ".join(str(a) for a in args))
        else:
            print(*args, **kwargs)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Work out the run's length; open the bar on a terminal."""
        planned = getattr(pl_module, "planned_steps", None)
        self._total = planned() if callable(planned) else None
        if self._total is None and trainer.max_steps > 0:
            self._total = trainer.max_steps
        self._started, self._first_step = time.monotonic(), trainer.global_step
        self._use_bar = self.mode == "bar" or (self.mode == "auto" and sys.stdout.isatty())

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Open the bar at the first batch, after the start-up messages."""
        if self._enabled and self._use_bar and self._bar is None:
            self._redirect = logging_redirect_tqdm([logging.getLogger("lit_pretrain")])
            self._redirect.__enter__()
            self._bar = tqdm(
                total=self._total,
                initial=trainer.global_step,
                desc="training",
                unit="step",
                dynamic_ncols=True,
                file=sys.stdout,
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Advance by one optimizer step; on logged steps show the latest values."""
        if not self._enabled or not ends_optimizer_step(batch_idx, trainer.accumulate_grad_batches):
            return
        if self._bar is not None:
            self._bar.update(1)
        if should_log_this_step(trainer):
            metrics = _floats(trainer.callback_metrics)
            if self._bar is not None:
                self._bar.set_postfix_str(_join(_values(metrics, short=True)), refresh=True)
            else:
                log.info(
                    _join([self._step_text(trainer.global_step), *_values(metrics), self._eta_text(trainer)])
                )
        if self._bar is not None and self._total and trainer.global_step >= self._total:
            self.on_train_end(
                trainer, pl_module
            )  # done: Lightning's closing messages follow on their own lines

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """One line with the validation loss (during fit)."""
        if not self._enabled or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        metrics = _floats(trainer.callback_metrics)
        if "val/loss" not in metrics:
            return
        line = _join([self._step_text(trainer.global_step), f"val/loss {metrics['val/loss']:.4f}"])
        if "val/ppl" in metrics:
            line += f" | val/ppl {metrics['val/ppl']:.2f}"
        if self._bar is not None:
            self._bar.write(line)
        else:
            log.info(line)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._redirect.__exit__(None, None, None)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Close the bar, so the error is printed on a line of its own."""
        self.on_train_end(trainer, pl_module)

    def _step_text(self, step: int) -> str:
        return f"step {step}/{self._total}" if self._total else f"step {step}"

    def _eta_text(self, trainer: L.Trainer) -> str:
        """Time left at the mean pace since this process started training (validation and saves included)."""
        done = trainer.global_step - self._first_step
        if not self._total or done <= 0:
            return "eta ?"
        seconds = (time.monotonic() - self._started) / done * max(self._total - trainer.global_step, 0)
        return f"eta {datetime.timedelta(seconds=round(seconds))}"


# What the progress shows, when logged: only these are moved to the host.
_SHOWN = ("train/loss", "train/lr", "perf/tokens_per_sec", "perf/mfu", "val/loss", "val/ppl")


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: float(metrics[name]) for name in _SHOWN if name in metrics}


def _values(metrics: dict[str, float], short: bool = False) -> list[str]:
    """The step's values as `name value` texts, in a fixed order, leaving out those not logged."""
    texts = []
    if "train/loss" in metrics:
        texts.append(f"loss {metrics['train/loss']:.4f}")
    if "train/lr" in metrics and not short:
        texts.append(f"lr {metrics['train/lr']:.2e}")
    if "perf/tokens_per_sec" in metrics:
        texts.append(f"{metrics['perf/tokens_per_sec']:,.0f} tok/s")
    if "perf/mfu" in metrics:
        texts.append(f"mfu {100 * metrics['perf/mfu']:.1f}%")
    return texts


def _join(texts: list[str]) -> str:
    return " | ".join(texts)
