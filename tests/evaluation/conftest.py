"""Real models for the evaluation tests: small lit-pretrain checkpoints (random and uniform) and a tiny
Hugging Face Llama, all with the small corpus's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from lit_pretrain.model import GPT, ModelConfig
from tests.helpers.models import TEST_MODEL_OVERRIDES

EOS = "<|endoftext|>"


def save_checkpoint(model: GPT, path: Path, data_dir: Path) -> Path:
    """`model` as a checkpoint file in the layout `lit-pretrain fit` writes (what `load_model` reads)."""
    torch.save(
        {
            "state_dict": {f"model.{key}": value for key, value in model.state_dict().items()},
            "hyper_parameters": {"model_name": "tiny", "model_overrides": TEST_MODEL_OVERRIDES},
            "global_step": 0,
            "tokenizer_json": (data_dir / "tokenizer.json").read_text(),
            "data_manifest": json.loads((data_dir / "manifest.json").read_text()),
        },
        path,
    )
    return path


def tiny_model(seed: int = 0) -> GPT:
    """The tiny test model with weights drawn from `seed`."""
    torch.manual_seed(seed)
    return GPT(ModelConfig.from_name("tiny", **TEST_MODEL_OVERRIDES)).eval()


@pytest.fixture(scope="session")
def corpus_tokenizer(small_corpus: Path) -> Tokenizer:
    return Tokenizer.from_file(str(small_corpus / "tokenizer.json"))


@pytest.fixture(scope="session")
def random_checkpoint(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tiny_model(), tmp_path_factory.mktemp("random") / "random.ckpt", small_corpus)


@pytest.fixture(scope="session")
def uniform_checkpoint(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All weights zero: the logits are 0, every token has probability 1 / vocab_size."""
    model = tiny_model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
    return save_checkpoint(model, tmp_path_factory.mktemp("uniform") / "uniform.ckpt", small_corpus)


def make_hf_dir(directory: Path, data_dir: Path, max_position_embeddings: int = 48) -> Path:
    """A tiny random `LlamaForCausalLM` with the corpus's tokenizer, saved as safetensors."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=0,
        bos_token_id=None,
        pad_token_id=None,
    )
    LlamaForCausalLM(config).eval().save_pretrained(directory, safe_serialization=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(data_dir / "tokenizer.json")), eos_token=EOS
    )
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def hf_dir(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face model whose context (48) is shorter than some shipped tasks' choices."""
    return make_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-llama", small_corpus)


# What a user writes in a run's YAML config to follow a shipped task during training.
IN_LOOP_CONFIG = """\
trainer:
  callbacks:
    - class_path: lit_pretrain.callbacks.evaluation.InLoopEvaluation
      init_args:
        every_n_steps: 3
        evaluators:
          - class_path: lit_pretrain.evaluation.in_loop.MultipleChoiceTask
            init_args: {task: stdlib_code_next_lines, limit: 12}
          - class_path: lit_pretrain.evaluation.in_loop.MultipleChoiceTask
            init_args: {task: stdlib_docstring_next_sentence, limit: 12, name: prose}
"""


@pytest.fixture(scope="session")
def in_loop_run(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """`lit-pretrain fit` for 6 steps (checkpoints and evaluations after 3 and 6) with two shipped tasks."""
    from lit_pretrain.cli.fit import run_lightning_cli
    from tests.helpers.runs import fit_args

    run_dir = tmp_path_factory.mktemp("in-loop")
    config = run_dir / "tasks.yaml"
    config.write_text(IN_LOOP_CONFIG)
    cli = run_lightning_cli(fit_args(small_corpus, run_dir, "--config", str(config)))
    return run_dir, cli
