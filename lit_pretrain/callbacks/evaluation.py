"""In-loop evaluation: the `InLoopEvaluator` interface, `InLoopEvaluation` that runs evaluators during
training, and `TextBitsPerByte`, a built-in evaluator (loss and bits per byte on fixed texts).

An evaluation package plugs in by subclassing `InLoopEvaluator`; a run lists its evaluators in YAML:

    trainer:
      callbacks:
        - class_path: lit_pretrain.callbacks.evaluation.InLoopEvaluation
          init_args:
            every_n_steps: 1000
            evaluators:
              - class_path: lit_pretrain.callbacks.evaluation.TextBitsPerByte
                init_args: {path: data/heldout.txt}
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from tokenizers import Tokenizer

from lit_pretrain.checkpoint.rng import rng_states, set_rng_states
from lit_pretrain.data.datamodule import DataSpec, data_spec
from lit_pretrain.data.distributed import data_parallel_size_and_rank
from lit_pretrain.data.tokenizer import find_eos_id
from lit_pretrain.inference.scoring import Windows, rolling_windows, score_windows
from lit_pretrain.optim.accumulation import ends_optimizer_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationContext:
    """What an evaluator may need besides the model: the run's tokenizer, the device, the step, the processes.

    The tokenizer fields are None when the run's data is not a `PretrainDataModule`. `seq_len` is the
    length of the training windows (the positions the model has been trained on), None without such data.
    `global_step` is the number of optimizer steps taken (0 in `setup`). Under tensor parallelism the
    data-parallel size and rank, not the world size and global rank, say which processes may read different
    inputs: the processes of one tensor-parallel group must feed the model the same tokens.
    """

    tokenizer: Tokenizer | None
    tokenizer_json: str | None
    eos_id: int | None
    bos_id: int | None
    seq_len: int | None
    device: torch.device
    global_step: int
    world_size: int
    global_rank: int
    data_parallel_size: int
    data_parallel_rank: int


class InLoopEvaluator(ABC):
    """One evaluation that runs inside the training loop; subclass it and set `name`.

    `evaluate` is called on every rank at the same steps, with the model in eval mode, autograd off and the
    trainer's precision context active; it returns Python floats by metric name, which rank 0 logs as
    `eval/<name>/<metric>`. Nothing reduces them across ranks: an evaluator that splits its work over the
    data-parallel ranks must reduce its own numbers (with torch.distributed) so that rank 0 holds the
    result. A sharded model (FSDP2, tensor parallel) needs every rank in each forward pass, so all ranks must
    run the same number of forward passes. Evaluators may draw from the global random generators: the callback
    restores them afterwards.
    """

    name: str = "evaluator"

    def setup(self, context: EvaluationContext) -> None:  # noqa: B027 - optional: by default nothing to do
        """Prepare once before training (encode texts, check inputs); raise here to fail before any step."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, context: EvaluationContext) -> dict[str, float]:
        """Metric values of `model` (the bare network, e.g. `GPT`) by metric name."""


@contextmanager
def evaluation_mode(module: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside the block; each submodule's own train/eval mode is restored after."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for submodule, training in modes:
            submodule.training = training


def logger_step(trainer: L.Trainer) -> int:
    """The logger step of what is measured on the weights after `trainer.global_step` optimizer steps.

    Lightning writes the metrics of the n-th optimizer step (`train/*`) and of the validation right after it
    (`val/*`) at logger step n - 1, its count of the steps taken before that one: so does everything measured
    on the weights that step produced (checkpoints are named by n, `global_step`).
    """
    return max(trainer.global_step - 1, 0)


def network(pl_module: L.LightningModule) -> torch.nn.Module:
    """The bare network a module trains (`LitPretrain.model`, a `GPT`), or the module itself."""
    model = getattr(pl_module, "model", None)
    return model if isinstance(model, torch.nn.Module) else pl_module


def document_ids(spec: DataSpec, tokenizer: Tokenizer) -> tuple[int | None, int | None]:
    """The (EOS, BOS) ids documents were prepared with; EOS from the tokenizer for older manifests."""
    eos_id, bos_id = spec.manifest.get("eos_id"), spec.manifest.get("bos_id")
    if eos_id is None:
        try:
            eos_id = find_eos_id(tokenizer)
        except ValueError:
            eos_id = None
    return eos_id, bos_id


class InLoopEvaluation(L.Callback):
    """Runs `evaluators` every `every_n_steps` optimizer steps and, with `at_end`, when training ends.

    Every rank runs every evaluator (a sharded model needs all of them); the model is put in eval mode with
    autograd off and its modes restored after, and the global random generators (Python, NumPy, torch CPU
    and CUDA) are saved before and restored after, so evaluation changes nothing training draws. Evaluators
    reduce their own numbers across ranks (see `InLoopEvaluator`).

    Metrics are written as `eval/<evaluator name>/<metric>` at the logger step of the weights evaluated
    (`logger_step`): the step of `val/*` for the same weights. They go straight to the loggers on global rank
    0, not through `LightningModule.log`: Lightning re-writes a value logged with `self.log` at every later
    logged step until it is logged again, and `self.log` is not allowed in `on_train_end`. The values are
    also put in `trainer.callback_metrics` (so a checkpoint can monitor them) and in one INFO log line.
    """

    def __init__(
        self, evaluators: list[InLoopEvaluator], every_n_steps: int = 1000, at_end: bool = True
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"InLoopEvaluation: every_n_steps must be at least 1, got {every_n_steps}")
        names = [evaluator.name for evaluator in evaluators]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"InLoopEvaluation: evaluator names must differ; repeated: {', '.join(duplicates)}"
            )
        self.evaluators = list(evaluators)
        self.every_n_steps = every_n_steps
        self.at_end = at_end
        self._spec: DataSpec | None = None
        self._tokenizer: Tokenizer | None = None
        self._last_evaluated_step: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Read the run's tokenizer and let each evaluator prepare (and fail) before the first step."""
        if stage != "fit":
            return
        self._spec = data_spec(trainer)
        self._tokenizer = Tokenizer.from_str(self._spec.tokenizer_json) if self._spec is not None else None
        self._last_evaluated_step = None
        context = self._context(trainer)
        for evaluator in self.evaluators:
            evaluator.setup(context)

    def _context(self, trainer: L.Trainer) -> EvaluationContext:
        spec, tokenizer = self._spec, self._tokenizer
        eos_id, bos_id = document_ids(spec, tokenizer) if spec is not None else (None, None)
        data_parallel_size, data_parallel_rank = data_parallel_size_and_rank(trainer)
        return EvaluationContext(
            tokenizer=tokenizer,
            tokenizer_json=spec.tokenizer_json if spec is not None else None,
            eos_id=eos_id,
            bos_id=bos_id,
            seq_len=spec.seq_len if spec is not None else None,
            device=trainer.strategy.root_device,
            global_step=trainer.global_step,
            world_size=trainer.world_size,
            global_rank=trainer.global_rank,
            data_parallel_size=data_parallel_size,
            data_parallel_rank=data_parallel_rank,
        )

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Run every evaluator now (on every rank) and return `eval/<name>/<metric>` values."""
        self._last_evaluated_step = trainer.global_step
        model = network(pl_module)
        context = self._context(trainer)
        metrics: dict[str, float] = {}
        states = rng_states()
        try:
            with evaluation_mode(model), trainer.precision_plugin.forward_context():
                for evaluator in self.evaluators:
                    for metric, value in evaluator.evaluate(model, context).items():
                        metrics[f"eval/{evaluator.name}/{metric}"] = float(value)
        finally:
            set_rng_states(states)
        return metrics

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Evaluate after every `every_n_steps`-th optimizer step."""
        if not ends_optimizer_step(batch_idx, trainer.accumulate_grad_batches):
            return
        if trainer.global_step % self.every_n_steps != 0:
            return
        metrics = self.evaluate(trainer, pl_module)
        if metrics:
            pl_module.log_dict(metrics, on_step=True, on_epoch=False, sync_dist=False, logger=False)
        self._write(trainer, metrics)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Evaluate the final weights, unless the last step was just evaluated."""
        if self.at_end and self._last_evaluated_step != trainer.global_step:
            self._write(trainer, self.evaluate(trainer, pl_module))

    def _write(self, trainer: L.Trainer, metrics: dict[str, float]) -> None:
        if not metrics or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=logger_step(trainer))
        values = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        log.info("after %d optimizer steps: %s", trainer.global_step, values)


class TextBitsPerByte(InLoopEvaluator):
    """Mean next-token loss (nats per token) and bits per byte on fixed texts, with the run's tokenizer.

    Give `texts`, or `path` (a UTF-8 file scored as one text). Each text is scored as a document of its own:
    its tokens follow the end-of-document token (and the beginning-of-document token when the data was
    prepared with one), as every document follows the previous one in the training stream, so every token of
    the text is predicted and every byte of it counts: `bits_per_byte` is the summed loss in nats / ln 2 /
    the text's UTF-8 bytes, and `loss` the summed loss / the text's tokens. Long texts are cut into
    consecutive windows of the training sequence length (the model's `block_size` when the data does not say),
    each read without the previous window as context (`lit_pretrain.inference.scoring`, which `lit-pretrain
    evaluate` scores with too). Every rank scores every text (the same forward passes
    on all ranks, which sharded models need), so the numbers need no reduction across ranks.
    """

    def __init__(
        self,
        texts: list[str] | None = None,
        path: str | None = None,
        name: str = "heldout_text",
        batch_size: int = 8,
    ) -> None:
        if (texts is None) == (path is None):
            raise ValueError("TextBitsPerByte: give either texts or path (one of them)")
        if batch_size < 1:
            raise ValueError(f"TextBitsPerByte: batch_size must be at least 1, got {batch_size}")
        self.texts = list(texts) if texts is not None else None
        self.path = path
        self.name = name
        self.batch_size = batch_size
        self._documents: list[list[int]] = []  # per text: the context prefix, then the text's tokens
        self._prefix_length = 0
        self._num_bytes = 0
        self._num_tokens = 0
        self._windows: dict[int, Windows] = {}  # by window length

    def setup(self, context: EvaluationContext) -> None:
        """Encode the texts once; refuse a run without a tokenizer, or texts without tokens."""
        if context.tokenizer is None:
            raise ValueError(
                f"TextBitsPerByte {self.name!r} needs the run's tokenizer: train on a PretrainDataModule"
            )
        if context.eos_id is None:
            raise ValueError(
                f"TextBitsPerByte {self.name!r}: the run's tokenizer has no end-of-document token"
            )
        if self.path is not None:
            file = Path(self.path)
            if not file.is_file():
                raise FileNotFoundError(f"TextBitsPerByte {self.name!r}: no text file at {file}")
            texts = [file.read_text(encoding="utf-8")]
        else:
            texts = self.texts
        prefix = [context.eos_id] + ([context.bos_id] if context.bos_id is not None else [])
        encodings = context.tokenizer.encode_batch(texts, add_special_tokens=False)
        self._documents = [prefix + encoding.ids for encoding in encodings if encoding.ids]
        self._prefix_length = len(prefix)
        self._num_tokens = sum(len(encoding.ids) for encoding in encodings)
        self._num_bytes = sum(len(text.encode("utf-8")) for text in texts)
        if self._num_tokens == 0:
            raise ValueError(f"TextBitsPerByte {self.name!r}: the texts hold no tokens")
        self._windows = {}

    def evaluate(self, model: torch.nn.Module, context: EvaluationContext) -> dict[str, float]:
        """{"loss": nats per token, "bits_per_byte": ...} of the texts."""
        block_size = model.config.block_size
        window = min(context.seq_len, block_size) if context.seq_len else block_size
        if window not in self._windows:
            first_targets = [self._prefix_length] * len(self._documents)
            self._windows[window] = rolling_windows(self._documents, first_targets, window)
        scores = score_windows(model, self._windows[window], self.batch_size, context.device)
        total_nats = -float(scores.log_likelihood.sum())
        return {
            "loss": total_nats / self._num_tokens,
            "bits_per_byte": total_nats / math.log(2) / self._num_bytes,
        }
