"""Export to and import from Hugging Face `transformers`, checked with the real library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import AddedToken, Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_pretrain.checkpoint.loading import load_model
from lit_pretrain.cli import main
from lit_pretrain.inference.generation import generate
from lit_pretrain.interop.export import export_checkpoint, write_hf_tokenizer
from lit_pretrain.interop.huggingface import family, read_hf_model, to_hf_state_dict
from lit_pretrain.model import ModelConfig
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.runs import fit_args, run_fit

LLAMA = {**TEST_MODEL_OVERRIDES, "tie_embeddings": False}  # grouped-query attention (4 heads, 2 K/V), untied
GPT2 = {"vocab_size": 512}  # the gpt2-debug preset: LayerNorm, learned positions, GELU, biases, tied
CODE = 'def main(argv):\n    """Parse argv."""\n    return {"x": [1, 2.5]}  # done\n'
PROSE = "The quick brown fox — naïve café — jumps over the lazy dog.\n\nSecond paragraph, with ümlauts."


def _train(corpus: Path, run_dir: Path, model_name: str, overrides: dict, *extra: str) -> Path:
    args = fit_args(
        corpus, run_dir, "--model.model_name", model_name, "--model.model_overrides", json.dumps(overrides)
    )
    run_fit([*args, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", *extra])
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def checkpoints(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two trained checkpoints: Llama-style (GQA, untied) and GPT-2-style (tied)."""
    root = tmp_path_factory.mktemp("hf")
    return {
        "llama": _train(small_corpus, root / "llama", "tiny", LLAMA),
        "gpt2": _train(small_corpus, root / "gpt2", "gpt2-debug", GPT2),
    }


@pytest.fixture(scope="module")
def exported(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each checkpoint exported in float32 through the CLI."""
    root = tmp_path_factory.mktemp("exported")
    for name, checkpoint in checkpoints.items():
        main(["export", "--checkpoint", str(checkpoint), "--output_dir", str(root / name)])
    return {name: root / name for name in checkpoints}


@pytest.mark.parametrize("name, hf_class", [("llama", "LlamaForCausalLM"), ("gpt2", "GPT2LMHeadModel")])
def test_exported_logits_and_greedy_tokens_equal_ours(checkpoints, exported, name: str, hf_class: str):
    ours = load_model(checkpoints[name])
    theirs = AutoModelForCausalLM.from_pretrained(exported[name], local_files_only=True).eval()
    assert type(theirs).__name__ == hf_class
    assert theirs.config.tie_word_embeddings == ours.config.tie_embeddings
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for _ in range(3):
        tokens = torch.randint(0, ours.config.vocab_size, (4, ours.config.block_size), generator=generator)
        with torch.no_grad():
            difference = (theirs(tokens).logits - ours.model(tokens)).abs().max().item()
        worst = max(worst, difference)
    assert worst <= 1e-4, f"{name}: max |logits difference| {worst:.2e}"

    prompt = torch.tensor(Tokenizer.from_str(ours.tokenizer_json).encode(CODE[:20]).ids)
    expected = generate(ours.model, prompt, 24, temperature=0)
    with torch.no_grad():
        produced = theirs.generate(prompt[None], max_new_tokens=24, do_sample=False)[0]
    assert produced.tolist() == expected.tolist()


def test_the_exported_directory_holds_what_transformers_needs(checkpoints, exported):
    directory = exported["llama"]
    assert {p.name for p in directory.iterdir()} == {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 2
    assert (
        config["eos_token_id"] == 0
        and json.loads((directory / "generation_config.json").read_text())["eos_token_id"] == 0
    )
    weights = load_file(directory / "model.safetensors")
    assert "lm_head.weight" in weights and all(t.dtype == torch.float32 for t in weights.values())
    gpt2 = load_file(exported["gpt2"] / "model.safetensors")
    assert "lm_head.weight" not in gpt2, "a tied head is stored once"


def test_sharded_bfloat16_export_loads(checkpoints, tmp_path: Path):
    directory = export_checkpoint(
        checkpoints["llama"], tmp_path / "out", dtype="bfloat16", max_shard_size="100KB"
    )
    shards = sorted(p.name for p in directory.glob("model-*.safetensors"))
    assert len(shards) > 1 and (directory / "model.safetensors.index.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
    assert next(model.parameters()).dtype == torch.bfloat16
    ours = load_model(checkpoints["llama"])
    assert torch.equal(model.lm_head.weight.float(), ours.model.lm_head.weight.to(torch.bfloat16).float())


@pytest.mark.parametrize("text", [CODE, PROSE])
def test_the_exported_tokenizer_encodes_like_ours(checkpoints, exported, text: str):
    ours = Tokenizer.from_str(load_model(checkpoints["llama"]).tokenizer_json)
    theirs = AutoTokenizer.from_pretrained(exported["llama"], local_files_only=True)
    ids = ours.encode(text).ids
    assert theirs(text)["input_ids"] == ids, "no BOS in this data: nothing is added"
    assert theirs(text, add_special_tokens=False)["input_ids"] == ids
    assert theirs.decode(ids) == text and theirs.eos_token == "<|endoftext|>" and theirs.eos_token_id == 0


def test_a_bos_used_in_training_starts_every_encoded_text(checkpoints, tmp_path: Path):
    tokenizer = Tokenizer.from_str(load_model(checkpoints["llama"]).tokenizer_json)
    tokenizer.add_special_tokens([AddedToken("<|startoftext|>", special=True)])
    bos_id = tokenizer.token_to_id("<|startoftext|>")
    config = ModelConfig.from_name("tiny", **{**LLAMA, "vocab_size": tokenizer.get_vocab_size()})
    write_hf_tokenizer(tokenizer.to_str(), tmp_path, config, eos_id=0, bos_id=bos_id)
    theirs = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    ids = tokenizer.encode(PROSE, add_special_tokens=False).ids
    assert theirs(PROSE)["input_ids"] == [bos_id, *ids]
    assert theirs(PROSE, add_special_tokens=False)["input_ids"] == ids
    assert (theirs.bos_token, theirs.eos_token, theirs.pad_token) == (
        "<|startoftext|>",
        "<|endoftext|>",
        "<|endoftext|>",
    )
    assert theirs.decode([bos_id, *ids], skip_special_tokens=True) == PROSE


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_import_reads_back_exactly_what_was_exported(checkpoints, exported, name: str):
    config, weights, _ = read_hf_model(exported[name])
    ours = load_model(checkpoints[name])
    assert {k: v for k, v in vars(config).items() if k != "name"} == {
        k: v for k, v in vars(ours.config).items() if k != "name"
    }
    for key, tensor in ours.model.state_dict().items():
        assert torch.equal(weights[key], tensor), key


def test_export_import_export_through_training_gives_identical_tensors(
    small_corpus: Path, exported, tmp_path: Path
):
    # One step at learning rate 0 through `fit --model.init_from HF_DIR`: AdamW then changes nothing, so
    # the checkpoint holds the imported weights as training stored them.
    checkpoint = _train(
        small_corpus,
        tmp_path / "run",
        "tiny",
        {"dropout": 0.0},
        "--model.init_from",
        str(exported["llama"]),
        "--model.learning_rate",
        "0",
        "--model.min_lr",
        "0",
        "--trainer.max_steps",
        "1",
    )
    again = export_checkpoint(checkpoint, tmp_path / "again")
    first, second = load_file(exported["llama"] / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert json.loads((again / "config.json").read_text())["num_key_value_heads"] == 2


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"norm": "layernorm"}, "norm='layernorm'"),
        ({"mlp": "gelu"}, "mlp='gelu'"),
        ({"position": "learned"}, "position='learned'"),
    ],
)
def test_a_model_transformers_cannot_express_is_refused_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"no transformers class expresses .*{field}"):
        family(ModelConfig.from_name("tiny", **overrides))


def test_grouped_query_attention_cannot_be_exported_as_gpt2():
    with pytest.raises(
        ValueError, match="n_kv_head 2 != n_head 4: GPT-2 in transformers has no grouped-query"
    ):
        family(ModelConfig.from_name("gpt2-debug", n_kv_head=2))


def test_unsupported_or_pickled_hugging_face_models_are_refused(exported, tmp_path: Path):
    mistral = tmp_path / "mistral"
    mistral.mkdir()
    (mistral / "config.json").write_text(
        json.dumps({"architectures": ["MistralForCausalLM"], "model_type": "mistral"})
    )
    with pytest.raises(ValueError, match="architecture 'MistralForCausalLM' is not supported"):
        read_hf_model(mistral)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((exported["llama"] / "config.json").read_text())
    config, weights, _ = read_hf_model(exported["llama"])
    torch.save(to_hf_state_dict(config, weights), pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="holds only pickled weights .* only safetensors are read"):
        read_hf_model(pickled)
    assert read_hf_model(pickled, allow_pickle=True)[1].keys() == weights.keys()


def test_export_errors_are_one_line(tmp_path: Path, exported):
    with pytest.raises(SystemExit, match="lit-pretrain export: error: no checkpoint at"):
        main(["export", "--checkpoint", str(tmp_path / "missing.ckpt"), "--output_dir", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=f"lit-pretrain export: error: {exported['llama']} is not empty"):
        main(["export", "--checkpoint", str(exported["llama"]), "--output_dir", str(exported["llama"])])


@pytest.mark.slow
def test_a_sharded_fsdp2_checkpoint_exports_without_its_optimizer_state(small_corpus: Path, tmp_path: Path):
    checkpoint = _train(
        small_corpus, tmp_path / "run", "tiny", LLAMA, "--config", "configs/trainer/cpu-fsdp2.yaml"
    )
    assert checkpoint.resolve().is_dir(), "two processes wrote a sharded checkpoint directory"
    directory = export_checkpoint(checkpoint, tmp_path / "out")
    ours = load_model(checkpoint)
    theirs = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    tokens = torch.randint(
        0, ours.config.vocab_size, (2, ours.config.block_size), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        assert (theirs(tokens).logits - ours.model(tokens)).abs().max().item() <= 1e-4


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"qk_norm": True}, "qk_norm=True cannot be exported: it normalises q and k per head"),
        ({"logit_softcap": 30.0}, "logit_softcap=30.0 cannot be exported: it soft-caps the logits"),
        ({"mlp": "relu2"}, "no transformers class expresses .*mlp='relu2'"),
    ],
)
@pytest.mark.parametrize("preset", ["tiny", "gpt2-debug"])
def test_switches_transformers_cannot_compute_are_refused_naming_them(preset, overrides, message):
    with pytest.raises(ValueError, match=message):
        family(ModelConfig.from_name(preset, **overrides))


@pytest.mark.parametrize("preset", ["tiny", "gpt2-debug"])
def test_training_time_switches_export_as_the_plain_architecture(preset):
    """zero_init_proj and document masking (with restarted positions) do not change the architecture: the
    exported model computes what ours does on one document."""
    from lit_pretrain.interop.huggingface import to_hf_config
    from lit_pretrain.model import GPT

    switches = dict(zero_init_proj=True, document_mask=True, eos_token_id=0, document_positions=True)
    config = ModelConfig.from_name(preset, **{**TEST_MODEL_OVERRIDES, "n_kv_head": 4}, **switches)
    torch.manual_seed(0)
    ours = GPT(config).eval()
    with torch.no_grad():
        for block in ours.blocks:  # as after training: the projections are no longer zero
            block.attn.proj.weight.normal_(std=0.05)
            block.mlp.proj.weight.normal_(std=0.05)
    hf_config = to_hf_config(config, eos_id=0)
    theirs = AutoModelForCausalLM.from_config(hf_config).eval()
    missing, unexpected = theirs.load_state_dict(to_hf_state_dict(config, ours.state_dict()), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    document = torch.randint(
        1, config.vocab_size, (2, config.block_size), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        difference = (theirs(document).logits - ours(document)).abs().max().item()
    assert difference <= 1e-4
