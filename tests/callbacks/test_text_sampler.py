"""TextSampler: samples in TensorBoard at the right steps, continuing their prompts, without changing training."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.plugins.precision import Precision
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugin_util import markdown_to_safe_html

from lit_pretrain.callbacks.text_sampler import TextSampler, markdown_code_block
from lit_pretrain.cli.fit import run_lightning_cli
from lit_pretrain.data.datamodule import PretrainDataModule
from lit_pretrain.model import GPT, ModelConfig
from lit_pretrain.training.module import LitPretrain
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.runs import fit_args

PROMPTS = ["def ", "import os\n"]
SAMPLER_CONFIG = """\
trainer:
  callbacks:
    - class_path: lit_pretrain.callbacks.text_sampler.TextSampler
      init_args:
        prompts: ["def ", "import os\\n"]
        every_n_steps: 4
        max_new_tokens: 16
"""


@contextmanager
def records_of(logger_name: str) -> Iterator[list[logging.LogRecord]]:
    """The INFO records one logger emits inside the block (whatever the CLI did to propagation)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def cli_run(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """`lit-pretrain fit` for 6 steps with the sampler from a YAML config: samples after steps 4 and 6."""
    run_dir = tmp_path_factory.mktemp("sampler")
    config = run_dir / "sampler.yaml"
    config.write_text(SAMPLER_CONFIG)
    with records_of("lit_pretrain.callbacks.text_sampler") as records:
        run_lightning_cli(fit_args(small_corpus, run_dir, "--config", str(config)))
    return run_dir, records


def samples(run_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """Every text summary in the run's event files: markdown by step, by tag."""
    found: dict[str, list[tuple[int, str]]] = {}
    for event_file in sorted(run_dir.glob("tensorboard/**/events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file), size_guidance={"tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            for event in accumulator.Tensors(tag):
                text = event.tensor_proto.string_val[0].decode()
                found.setdefault(tag, []).append((event.step, text))
    return found


def code_block_text(markdown: str) -> str:
    first, rest = markdown.split("\n", 1)
    assert set(first) == {"`"} and rest.endswith("\n" + first)
    return rest[: -len(first) - 1]


def test_samples_are_in_tensorboard_at_the_sampled_steps(cli_run):
    run_dir, _ = cli_run
    found = samples(run_dir)
    # torch's SummaryWriter appends /text_summary to the tag.
    assert set(found) == {"samples/0/text_summary", "samples/1/text_summary"}
    # After the 4th step (every_n_steps) and the 6th (the end), at the logger steps val/loss uses.
    for tag in found:
        assert [step for step, _ in found[tag]] == [3, 5]


def test_samples_continue_their_prompts(cli_run):
    run_dir, _ = cli_run
    for index, prompt in enumerate(PROMPTS):
        for _, markdown in samples(run_dir)[f"samples/{index}/text_summary"]:
            text = code_block_text(markdown)
            assert text.startswith(prompt) and len(text) > len(prompt)


def test_one_log_line_per_prompt_and_sampling(cli_run):
    _, records = cli_run
    messages = [record.getMessage() for record in records]
    assert len(messages) == 4 and all("\n" not in message for message in messages)
    assert messages[0].startswith("after 4 optimizer steps, sample 0: 'def ")
    assert messages[3].startswith("after 6 optimizer steps, sample 1: 'import os\\n")


class _RngProbe(L.Callback):
    """Records the global generators' states at each batch end; `check` compares with another probe's."""

    def __init__(self, before: _RngProbe | None = None) -> None:
        self.before = before
        self.states: list[tuple] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        state = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
        self.states.append(state)
        if self.before is not None:
            expected = self.before.states[-1]
            assert torch.equal(state[0], expected[0]) and state[1] == expected[1]
            assert np.array_equal(state[2], expected[2])


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


class _CountingSampler(TextSampler):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sampled_at: list[int] = []

    def sample(self, trainer, pl_module):
        self.sampled_at.append(trainer.global_step)
        return super().sample(trainer, pl_module)


def _train(small_corpus: Path, callbacks: list[L.Callback]) -> list[float]:
    losses = _Losses()
    # Dropout: the training losses depend on the global generators.
    overrides = dict(TEST_MODEL_OVERRIDES, dropout=0.1)
    module = LitPretrain(model_name="tiny", model_overrides=overrides, warmup_steps=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=5,
        logger=False,
        callbacks=[*callbacks, losses],
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, PretrainDataModule(str(small_corpus), seq_len=32, micro_batch_size=4, num_workers=0))
    return losses.losses


def test_training_is_the_same_with_and_without_the_sampler(small_corpus: Path):
    before = _RngProbe()
    sampler = _CountingSampler(PROMPTS, every_n_steps=2, max_new_tokens=8, temperature=1.0, top_k=None)
    with_sampler = _train(small_corpus, [before, sampler, _RngProbe(before)])
    assert sampler.sampled_at == [2, 4, 5], "sampled with temperature 1, between the two probes"
    without = _train(small_corpus, [])
    assert with_sampler == without and len(without) == 5


def _setup(sampler: TextSampler, datamodule) -> None:
    sampler.setup(SimpleNamespace(datamodule=datamodule), None, "fit")


def test_a_prompt_without_tokens_is_refused_at_setup(small_corpus: Path):
    sampler = TextSampler(["def ", ""])
    with pytest.raises(ValueError, match="prompt '' encodes to no tokens"):
        _setup(sampler, PretrainDataModule(str(small_corpus), seq_len=32))


def test_without_a_data_spec_it_warns_once_and_does_nothing():
    sampler = TextSampler(["def "], every_n_steps=1)
    with pytest.warns(UserWarning, match="no tokenizer") as warnings:
        _setup(sampler, None)
        _setup(sampler, None)
    assert len(warnings) == 1
    trainer = SimpleNamespace(global_step=1, accumulate_grad_batches=1)
    sampler.on_train_batch_end(trainer, None, None, None, 0)
    sampler.on_train_end(trainer, None)


@pytest.mark.parametrize(
    "kwargs",
    [{"prompts": []}, {"every_n_steps": 0}, {"max_new_tokens": 0}, {"temperature": -1.0}, {"top_k": 0}],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="TextSampler"):
        TextSampler(**{"prompts": ["x"], **kwargs})


class _WandbLike:
    def __init__(self) -> None:
        self.experiment = SimpleNamespace()  # no add_text
        self.tables: list[dict] = []

    def log_text(self, **kwargs) -> None:
        self.tables.append(kwargs)


def test_sample_writes_to_each_kind_of_logger_and_restores_train_mode(small_corpus: Path):
    sampler = TextSampler(["def "], max_new_tokens=8, seed=3)
    _setup(sampler, PretrainDataModule(str(small_corpus), seq_len=32))
    texts: list[tuple] = []
    tensorboard = SimpleNamespace(experiment=SimpleNamespace(add_text=lambda *args: texts.append(args)))
    wandb = _WandbLike()
    trainer = SimpleNamespace(
        global_step=8,
        is_global_zero=True,
        loggers=[tensorboard, wandb],
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
        precision_plugin=Precision(),
    )
    model = GPT(ModelConfig.from_name("tiny", **TEST_MODEL_OVERRIDES)).train()
    rng = torch.get_rng_state()
    first = sampler.sample(trainer, SimpleNamespace(model=model))
    assert torch.equal(torch.get_rng_state(), rng), "the sampler's own generator, not the global one"
    assert model.training and all(module.training for module in model.modules())
    assert sampler.sample(trainer, SimpleNamespace(model=model)) == first, "reseeded for every sampling"
    assert texts[0] == ("samples/0", markdown_code_block(first[0]), 7)
    assert wandb.tables[0] == {
        "key": "samples",
        "columns": ["steps", "prompt", "sample"],
        "data": [[8, "def ", first[0]]],
        "step": 7,
    }
    trainer.is_global_zero = False
    sampler.sample(trainer, SimpleNamespace(model=model))
    assert len(texts) == 2 and len(wandb.tables) == 2, "only global rank 0 writes"


def test_tensorboard_shows_the_text_verbatim_in_a_code_block():
    text = "x = `a`\n```python\n<script>alert(1)</script> **not bold**\n````"
    html = markdown_to_safe_html(markdown_code_block(text))
    assert html.startswith("<pre><code>") and "<strong>" not in html and "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; **not bold**" in html and "````" in html
