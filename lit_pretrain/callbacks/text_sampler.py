"""`TextSampler`: continuations of fixed prompts during training, to TensorBoard, W&B and the log."""

from __future__ import annotations

import logging
import re
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from tokenizers import Tokenizer

from lit_pretrain.callbacks.evaluation import document_ids, evaluation_mode, logger_step, network
from lit_pretrain.data.datamodule import data_spec
from lit_pretrain.inference.generation import generate
from lit_pretrain.optim.accumulation import ends_optimizer_step

log = logging.getLogger(__name__)


def markdown_code_block(text: str) -> str:
    """`text` as a fenced Markdown code block, shown verbatim (TensorBoard renders text as Markdown).

    The fence is longer than any run of backticks in the text, so no line of it can close the block.
    """
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


class TextSampler(L.Callback):
    """Samples a continuation of each prompt every `every_n_steps` optimizer steps and when training ends.

    Prompts are encoded with the run's tokenizer (so the data must be a `PretrainDataModule`; with other data
    the sampler warns once and does nothing) and continued by `inference.generation.generate` for up to
    `max_new_tokens` tokens, stopping at the end-of-document token, with the model in eval mode and autograd
    off (its modes are restored after). Tokens are drawn from a `torch.Generator` of the sampler's own,
    seeded with `seed` before each prompt: samples at two steps differ only because the model changed, and
    the global random generators training draws from (dropout) are never touched.

    It runs on every rank, since a sharded model (FSDP2, tensor parallel) needs all of them in each forward
    pass; the ranks compute the same logits and draw the same tokens. Only global rank 0 writes: to every
    logger whose experiment is a TensorBoard `SummaryWriter` (`samples/<i>` text, as a Markdown code block),
    to every logger with a `log_text` method (W&B: a `samples` table) and one INFO log line per prompt.
    Samples are written at the logger step of the weights that wrote them (`evaluation.logger_step`), the
    step `val/*` uses for the same weights; the log line and the W&B table say the optimizer steps taken.
    """

    def __init__(
        self,
        prompts: list[str],
        every_n_steps: int = 500,
        max_new_tokens: int = 64,
        temperature: float = 0.8,
        top_k: int | None = 50,
        seed: int = 0,
    ) -> None:
        if not prompts:
            raise ValueError("TextSampler: give at least one prompt")
        if every_n_steps < 1:
            raise ValueError(f"TextSampler: every_n_steps must be at least 1, got {every_n_steps}")
        if max_new_tokens < 1:
            raise ValueError(f"TextSampler: max_new_tokens must be at least 1, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"TextSampler: temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"TextSampler: top_k must be positive or null, got {top_k}")
        self.prompts = list(prompts)
        self.every_n_steps = every_n_steps
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_k = top_k
        self.seed = seed
        self._tokenizer: Tokenizer | None = None
        self._prompt_ids: list[torch.Tensor] = []
        self._eos_id: int | None = None
        self._last_sampled_step: int | None = None
        self._warned = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Encode the prompts with the run's tokenizer; refuse a prompt that has no tokens."""
        if stage != "fit":
            return
        self._last_sampled_step = None
        spec = data_spec(trainer)
        if spec is None:
            self._tokenizer = None
            if not self._warned:
                rank_zero_warn(
                    "TextSampler: the run's data is not a PretrainDataModule, so there is no tokenizer: "
                    "no samples will be written"
                )
                self._warned = True
            return
        tokenizer = Tokenizer.from_str(spec.tokenizer_json)
        prompt_ids = []
        for prompt in self.prompts:
            ids = tokenizer.encode(prompt, add_special_tokens=False).ids
            if not ids:
                raise ValueError(f"TextSampler: prompt {prompt!r} encodes to no tokens; give it some text")
            prompt_ids.append(torch.tensor(ids, dtype=torch.long))
        self._tokenizer, self._prompt_ids = tokenizer, prompt_ids
        self._eos_id = document_ids(spec, tokenizer)[0]

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Sample after every `every_n_steps`-th optimizer step."""
        if self._tokenizer is None or not ends_optimizer_step(batch_idx, trainer.accumulate_grad_batches):
            return
        if trainer.global_step % self.every_n_steps == 0:
            self.sample(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Sample the final weights, unless the last step was just sampled."""
        if self._tokenizer is not None and self._last_sampled_step != trainer.global_step:
            self.sample(trainer, pl_module)

    def sample(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list[str]:
        """Continue every prompt now (on every rank); rank 0 writes the texts. Returns them."""
        self._last_sampled_step = trainer.global_step
        model = network(pl_module)
        generator = torch.Generator(device=trainer.strategy.root_device)
        texts = []
        with evaluation_mode(model), trainer.precision_plugin.forward_context():
            for prompt in self._prompt_ids:
                generator.manual_seed(self.seed)
                tokens = generate(
                    model,
                    prompt,
                    self.max_new_tokens,
                    temperature=self.temperature,
                    top_k=self.top_k,
                    eos_id=self._eos_id,
                    generator=generator,
                )
                texts.append(self._tokenizer.decode(tokens.tolist(), skip_special_tokens=True))
        if trainer.is_global_zero:
            self._write(trainer, texts)
        return texts

    def _write(self, trainer: L.Trainer, texts: list[str]) -> None:
        steps, step = trainer.global_step, logger_step(trainer)
        for logger in trainer.loggers:
            experiment = logger.experiment
            if callable(getattr(experiment, "add_text", None)):  # torch's or tensorboardX's SummaryWriter
                for index, text in enumerate(texts):
                    experiment.add_text(f"samples/{index}", markdown_code_block(text), step)
            if callable(getattr(logger, "log_text", None)):  # WandbLogger: one table per sampling
                rows = [[steps, prompt, text] for prompt, text in zip(self.prompts, texts, strict=True)]
                logger.log_text(key="samples", columns=["steps", "prompt", "sample"], data=rows, step=step)
        for index, text in enumerate(texts):
            # repr: one line per sample, whatever the text holds.
            log.info("after %d optimizer steps, sample %d: %r", steps, index, text)
