"""In-loop evaluation: built from YAML by `lit-pretrain fit`, logged at the right steps, training unchanged,
and TextBitsPerByte equal to the loss and bits per byte computed independently."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from lit_pretrain.callbacks.evaluation import (
    EvaluationContext,
    InLoopEvaluation,
    InLoopEvaluator,
    TextBitsPerByte,
    evaluation_mode,
)
from lit_pretrain.cli.fit import run_lightning_cli
from lit_pretrain.data.datamodule import PretrainDataModule
from lit_pretrain.model import GPT, ModelConfig
from lit_pretrain.training.module import LitPretrain
from tests.helpers.evaluation import cpu_context
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.reference import reference_forward
from tests.helpers.runs import fit_args, scalars

# What a user writes in a run's YAML config.
EVALUATION_CONFIG = """\
trainer:
  callbacks:
    - class_path: lit_pretrain.callbacks.evaluation.InLoopEvaluation
      init_args:
        every_n_steps: 3
        evaluators:
          - class_path: lit_pretrain.callbacks.evaluation.TextBitsPerByte
            init_args:
              texts: ["def f(): pass"]
"""


@pytest.fixture(scope="module")
def cli_run(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """`lit-pretrain fit` for 6 steps (validation after 3 and 6) with the evaluation from a YAML file."""
    run_dir = tmp_path_factory.mktemp("evaluation")
    config = run_dir / "evaluation.yaml"
    config.write_text(EVALUATION_CONFIG)
    cli = run_lightning_cli(fit_args(small_corpus, run_dir, "--config", str(config)))
    return run_dir, cli


def test_a_yaml_config_builds_the_evaluation(cli_run):
    _, cli = cli_run
    (evaluation,) = [c for c in cli.trainer.callbacks if isinstance(c, InLoopEvaluation)]
    (evaluator,) = evaluation.evaluators
    assert isinstance(evaluator, TextBitsPerByte) and evaluator.texts == ["def f(): pass"]
    assert evaluation.every_n_steps == 3 and evaluation.at_end


def test_metrics_are_logged_with_the_validation_of_the_same_weights(cli_run):
    run_dir, _ = cli_run
    logged = scalars(run_dir)
    # After the 3rd and the 6th (last) optimizer step, at the logger steps of val/loss for those weights.
    assert [step for step, _ in logged["eval/heldout_text/bits_per_byte"]] == [2, 5]
    assert [step for step, _ in logged["eval/heldout_text/loss"]] == [2, 5]
    assert [step for step, _ in logged["val/loss"]] == [2, 5]


def test_bits_per_byte_and_loss_agree(cli_run, small_corpus: Path):
    run_dir, cli = cli_run
    logged = scalars(run_dir)
    tokens = len(Tokenizer.from_file(str(small_corpus / "tokenizer.json")).encode("def f(): pass").ids)
    for (_, loss), (_, bits_per_byte) in zip(
        logged["eval/heldout_text/loss"], logged["eval/heldout_text/bits_per_byte"], strict=True
    ):
        assert 0 < loss < 10
        assert bits_per_byte == pytest.approx(loss * tokens / math.log(2) / len(b"def f(): pass"), rel=1e-6)
    # Also in the callback metrics, for a checkpoint or early stopping to monitor.
    final = float(cli.trainer.callback_metrics["eval/heldout_text/bits_per_byte"])
    assert final == pytest.approx(logged["eval/heldout_text/bits_per_byte"][-1][1], rel=1e-6)


def test_the_command_line_form_builds_it_too(small_corpus: Path, tmp_path: Path):
    callback = {
        "class_path": "lit_pretrain.callbacks.evaluation.InLoopEvaluation",
        "init_args": {
            "evaluators": [
                {
                    "class_path": "lit_pretrain.callbacks.evaluation.TextBitsPerByte",
                    "init_args": {"texts": ["def f(): pass"]},
                }
            ]
        },
    }
    args = fit_args(small_corpus, tmp_path)[1:]  # no subcommand when the CLI does not run
    cli = run_lightning_cli([*args, f"--trainer.callbacks+={json.dumps(callback)}"], run=False)
    (evaluation,) = [c for c in cli.trainer.callbacks if isinstance(c, InLoopEvaluation)]
    assert evaluation.every_n_steps == 1000 and evaluation.evaluators[0].texts == ["def f(): pass"]


class _NoisyEvaluator(InLoopEvaluator):
    """Draws from every global generator, as a careless evaluator might."""

    name = "noise"

    def evaluate(self, model: torch.nn.Module, context: EvaluationContext) -> dict[str, float]:
        assert not model.training and not torch.is_grad_enabled()
        return {"value": float(torch.rand(())) + random.random() + float(np.random.rand())}


class _Probe(L.Callback):
    """Records the global generators at each batch end; with `before`, checks they are unchanged since then."""

    def __init__(self, before: _Probe | None = None) -> None:
        self.before = before
        self.states: list[tuple] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        state = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
        self.states.append(state)
        self.losses.append(float(outputs["loss"]))
        if self.before is not None:
            expected = self.before.states[-1]
            assert torch.equal(state[0], expected[0]) and state[1] == expected[1]
            assert np.array_equal(state[2], expected[2])
            assert all(module.training for module in pl_module.model.modules()), "train mode restored"


def _train(small_corpus: Path, callbacks: list[L.Callback]) -> None:
    # Dropout: the training losses depend on the global generators.
    overrides = dict(TEST_MODEL_OVERRIDES, dropout=0.1)
    module = LitPretrain(model_name="tiny", model_overrides=overrides, warmup_steps=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=5,
        logger=False,
        callbacks=callbacks,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, PretrainDataModule(str(small_corpus), seq_len=32, micro_batch_size=4, num_workers=0))


def test_training_is_the_same_with_and_without_the_evaluation(small_corpus: Path):
    before = _Probe()
    evaluation = InLoopEvaluation(
        [_NoisyEvaluator(), TextBitsPerByte(texts=["def f(): pass"])], every_n_steps=2
    )
    after = _Probe(before)
    _train(small_corpus, [before, evaluation, after])
    baseline = _Probe()
    _train(small_corpus, [baseline])
    assert after.losses == baseline.losses and len(baseline.losses) == 5


def independent_loss_sum(model: GPT, sequence: list[int], first_target: int, window: int) -> float:
    """Summed -log p of sequence[first_target:], each token read after the tokens before it in its window of
    inputs (windows of `window` inputs from the start), with float64 logits from the formulas."""
    total = 0.0
    for position in range(first_target, len(sequence)):
        start = (position - 1) // window * window  # the window holding the input that predicts it
        inputs = torch.tensor(sequence[start:position])[None]
        logits = reference_forward(model, inputs)[0, -1]
        total -= torch.log_softmax(logits, dim=-1)[sequence[position]].item()
    return total


TEXTS = ["def f(): pass", "naïve café, 東京\n" * 3 + "x = 1", "y"]


@pytest.mark.parametrize("bos_id, seq_len", [(None, None), (7, 5)])
def test_text_bits_per_byte_equals_an_independent_computation(small_corpus: Path, bos_id, seq_len):
    tokenizer = Tokenizer.from_file(str(small_corpus / "tokenizer.json"))
    torch.manual_seed(0)
    model = GPT(ModelConfig.from_name("tiny", **dict(TEST_MODEL_OVERRIDES, block_size=8))).eval()
    context = cpu_context(tokenizer, bos_id, seq_len)
    evaluator = TextBitsPerByte(texts=TEXTS, batch_size=3)
    evaluator.setup(context)
    with torch.no_grad():
        result = evaluator.evaluate(model, context)

    window = seq_len or 8
    eos = tokenizer.token_to_id("<|endoftext|>")
    prefix = [eos] + ([bos_id] if bos_id is not None else [])
    total, tokens = 0.0, 0
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        total += independent_loss_sum(model, prefix + ids, len(prefix), window)
        tokens += len(ids)
    assert tokens > 3 * window, "several windows"
    num_bytes = sum(len(text.encode("utf-8")) for text in TEXTS)
    assert num_bytes > sum(len(text) for text in TEXTS), "multi-byte characters"
    assert result["loss"] == pytest.approx(total / tokens, rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(total / math.log(2) / num_bytes, rel=1e-5)


def test_a_text_file_scores_like_the_same_text(small_corpus: Path, tmp_path: Path):
    tokenizer = Tokenizer.from_file(str(small_corpus / "tokenizer.json"))
    (tmp_path / "heldout.txt").write_text(TEXTS[1], encoding="utf-8")
    model = GPT(ModelConfig.from_name("tiny", **TEST_MODEL_OVERRIDES)).eval()
    results = []
    for evaluator in (TextBitsPerByte(path=str(tmp_path / "heldout.txt")), TextBitsPerByte(texts=[TEXTS[1]])):
        evaluator.setup(cpu_context(tokenizer))
        with torch.no_grad():
            results.append(evaluator.evaluate(model, cpu_context(tokenizer)))
    assert results[0] == results[1]


def test_bad_evaluator_settings_are_refused(small_corpus: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="either texts or path"):
        TextBitsPerByte()
    with pytest.raises(ValueError, match="either texts or path"):
        TextBitsPerByte(texts=["a"], path="a.txt")
    with pytest.raises(ValueError, match="needs the run's tokenizer"):
        TextBitsPerByte(texts=["a"]).setup(cpu_context(None))
    tokenizer = Tokenizer.from_file(str(small_corpus / "tokenizer.json"))
    with pytest.raises(FileNotFoundError, match="no text file"):
        TextBitsPerByte(path=str(tmp_path / "missing.txt")).setup(cpu_context(tokenizer))
    with pytest.raises(ValueError, match="hold no tokens"):
        TextBitsPerByte(texts=[""]).setup(cpu_context(tokenizer))
    with pytest.raises(ValueError, match="repeated: heldout_text"):
        InLoopEvaluation([TextBitsPerByte(texts=["a"]), TextBitsPerByte(texts=["b"])])
    with pytest.raises(ValueError, match="every_n_steps"):
        InLoopEvaluation([], every_n_steps=0)


def test_evaluation_mode_restores_each_module_s_own_mode():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    model[1].eval()  # frozen by its owner: must stay in eval mode
    with evaluation_mode(model):
        assert not any(module.training for module in model.modules()) and not torch.is_grad_enabled()
    assert model.training and model[0].training and not model[1].training and torch.is_grad_enabled()
