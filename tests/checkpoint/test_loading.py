"""The one checkpoint loader: init_from, generation, legacy layouts and files written by older code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lit_pretrain.checkpoint.loading import load_model, read_metadata, read_model_weights
from lit_pretrain.cli import main
from lit_pretrain.model import GPT
from lit_pretrain.training.module import LitPretrain
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import fit_args


def test_init_from_loads_the_weights(small_corpus: Path, three_step_run: Path, capsys):
    source = three_step_run / "checkpoints" / "step-0000003.ckpt"
    validate = fit_args(small_corpus, three_step_run)
    validate[0] = "validate"
    main([*validate, "--ckpt_path", str(source)])
    from_checkpoint = capsys.readouterr().out
    main([*validate, "--model.init_from", str(source)])
    captured = capsys.readouterr()
    from_init = captured.out
    assert f"initialised the model from {source} (step 3)" in captured.out + captured.err
    val_line = [line for line in from_checkpoint.splitlines() if "val/loss" in line]
    assert val_line and val_line == [line for line in from_init.splitlines() if "val/loss" in line]


def test_init_from_a_different_model_is_a_clear_error(
    small_corpus: Path, three_step_run: Path, tmp_path: Path
):
    source = three_step_run / "checkpoints" / "step-0000003.ckpt"
    args = fit_args(small_corpus, tmp_path, "--model.init_from", str(source))
    args[args.index("--model.model_overrides") + 1] = json.dumps(dict(TEST_MODEL_OVERRIDES, n_embd=32))
    with pytest.raises(SystemExit, match=r"holds a different model:\n  n_embd: checkpoint 64, now 32"):
        main(args)


def test_init_from_a_missing_checkpoint_is_a_clear_error(small_corpus: Path, tmp_path: Path):
    with pytest.raises(SystemExit, match="fit: error: --model.init_from .*missing.ckpt: no such checkpoint"):
        main(fit_args(small_corpus, tmp_path, "--model.init_from", str(tmp_path / "missing.ckpt")))


def test_a_checkpoint_with_the_old_fused_qkv_loads_as_weights_but_does_not_resume(
    small_corpus: Path, three_step_run: Path, tmp_path: Path
):
    checkpoint = torch.load(three_step_run / "checkpoints" / "step-0000003.ckpt", weights_only=False)
    expected = dict(checkpoint["state_dict"])
    state = checkpoint["state_dict"]
    for prefix in sorted({key.split(".attn.")[0] for key in state if ".attn.q." in key}):
        parts = [state.pop(f"{prefix}.attn.{name}.weight") for name in "qkv"]
        state[f"{prefix}.attn.qkv.weight"] = torch.cat(parts)  # the layout before the split
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    loaded = load_model(old)
    for key, value in expected.items():
        assert torch.equal(loaded.model.state_dict()[key.removeprefix("model.")], value), key
    with pytest.raises(SystemExit, match="fused qkv projection .* --model.init_from PATH"):
        main(fit_args(small_corpus, tmp_path / "resumed", "--ckpt_path", str(old)))
    # init_from reads the old layout exactly...
    module = LitPretrain(model_name="tiny", model_overrides=TEST_MODEL_OVERRIDES, init_from=str(old))
    module.configure_model()
    for key, value in expected.items():
        assert torch.equal(module.state_dict()[key], value), key
    # ...and a run started from it trains.
    main(fit_args(small_corpus, tmp_path / "init", "--trainer.max_steps", "1", "--model.init_from", str(old)))
    started = torch.load(tmp_path / "init" / "checkpoints" / "step-0000001.ckpt", weights_only=False)
    assert started["global_step"] == 1 and started["hyper_parameters"]["init_from"] == str(old)


LEGACY = REPO_ROOT / "tests" / "fixtures" / "legacy"


def test_a_checkpoint_written_before_the_restructure_still_loads():
    """A file made by the code of commit 1722c56 (tests/fixtures/legacy/make_with_1722c56.py)."""
    path = LEGACY / "llama-step2-1722c56.ckpt"
    expected = torch.load(LEGACY / "llama-step2-1722c56.expected.pt")
    loaded = load_model(path)
    assert loaded.global_step == 2 and loaded.config.n_kv_head == 2 and loaded.tokenizer_json
    with torch.no_grad():
        assert torch.equal(loaded.model(expected["tokens"]), expected["logits"])
    # init_from takes the same weights.
    overrides = read_metadata(path)["hyper_parameters"]["model_overrides"]
    module = LitPretrain(model_name="llama-debug", model_overrides=overrides, init_from=str(path))
    module.configure_model()
    with torch.no_grad():
        assert torch.equal(module.model(expected["tokens"]), expected["logits"])


def test_load_model_puts_weights_on_the_device_and_dtype_asked_for():
    loaded = load_model(LEGACY / "llama-step2-1722c56.ckpt", "cpu", torch.bfloat16)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    assert not loaded.model.training


def test_the_loader_never_touches_the_optimizer_state(tmp_path: Path):
    checkpoint = torch.load(LEGACY / "llama-step2-1722c56.ckpt", weights_only=False)
    checkpoint["optimizer_states"] = "not an optimizer state: reading it would fail"
    path = tmp_path / "weights-only.ckpt"
    torch.save(checkpoint, path)
    assert set(read_model_weights(path, load_model(path).config)) == set(
        GPT(load_model(path).config).state_dict()
    )


def test_a_file_that_is_not_a_lit_pretrain_checkpoint_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="other.ckpt is not a lit-pretrain checkpoint"):
        load_model(path)
