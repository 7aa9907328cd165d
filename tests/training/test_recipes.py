"""The modern-recipe switches through `lit-pretrain fit`: Muon + WSD + z-loss + batch-size warmup logs
what they say and resumes exactly; a changed optimizer or a bad setting is refused with the flag's name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lit_pretrain.training.module import LitPretrain
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.runs import assert_same_training_state, load, resume_args, run_fit, scalars, step_losses

RECIPE = (
    *("--model.optimizer", "muon", "--model.z_loss", "1e-3"),
    # WSD over 6 steps, the last half decaying: the decay starts at step 3, where the resumed run starts.
    *("--model.lr_schedule", "wsd", "--model.lr_decay_steps", "6", "--model.decay_fraction", "0.5"),
    # Micro-batches of 4 windows of 32 tokens: 1 row, then more as 256 tokens are reached.
    *("--model.batch_size_warmup_tokens", "256", "--model.batch_size_warmup_start", "0.25"),
)


@pytest.fixture(scope="module")
def straight(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("recipe-straight")
    run_fit(resume_args(small_corpus, run_dir, *RECIPE, "--trainer.max_steps", "6"))
    return run_dir


def test_recipe_logs_its_schedule_batch_ramp_and_z_loss(straight: Path):
    logged = scalars(straight)
    tokens = [0.0] + [value for _, value in logged["train/tokens_seen"]]
    # rows = floor(4 * (0.25 + 0.75 * seen / 256)): 1 row (32 tokens) until 96 seen, then 2, 2, 3.
    assert [b - a for a, b in zip(tokens, tokens[1:], strict=False)] == [32, 32, 32, 64, 64, 96]
    # tiny.yaml: 2e-3 down to 2e-4; warmup 2; stable; linear decay over steps 3, 4, 5.
    lrs = [value for _, value in logged["train/lr"]]
    assert lrs == pytest.approx([1e-3, 2e-3, 2e-3, 2e-3, 1.4e-3, 8e-4], rel=1e-6)
    z_losses = [value for _, value in logged["train/z_loss"]]
    # Near initialisation log Z is about log(512) = 6.24: the term is about 1e-3 * 6.24^2 = 0.039.
    assert len(z_losses) == 6 and all(0.03 < z < 0.05 for z in z_losses)
    assert all(5.5 < loss < 6.5 for _, loss in logged["train/loss"]), "the cross-entropy alone"


@pytest.mark.slow
def test_recipe_resumes_exactly_and_refuses_another_optimizer(
    small_corpus: Path, straight: Path, tmp_path: Path
):
    run_fit(resume_args(small_corpus, tmp_path, *RECIPE, "--trainer.max_steps", "3"))
    run_fit(resume_args(small_corpus, tmp_path, *RECIPE, "--trainer.max_steps", "6", "--ckpt_path", "last"))
    (expected,), (first, resumed) = step_losses(straight), step_losses(tmp_path)
    assert sorted(first) == [0, 1, 2] and sorted(resumed) == [3, 4, 5]
    assert {**first, **resumed} == expected, "bit for bit"
    final = "checkpoints/step-0000006.ckpt"
    saved = load(straight / final)
    assert_same_training_state(saved, load(tmp_path / final))
    assert len(saved["optimizer_states"][0]["param_groups"]) == 3, "AdamW's two groups and Muon's"

    with pytest.raises(
        AssertionError, match="trained with --model.optimizer muon and this run asks for adamw"
    ):
        run_fit(
            resume_args(small_corpus, tmp_path, *RECIPE, "--model.optimizer", "adamw", "--ckpt_path", "last")
        )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"optimizer": "sgd"}, "--model.optimizer must be one of adamw, muon"),
        ({"muon_lr": -0.1}, "--model.muon_lr must be 0 or more"),
        ({"muon_momentum": 1.5}, "--model.muon_momentum must be in"),
        ({"lr_schedule": "linear"}, "--model.lr_schedule must be one of cosine, wsd"),
        ({"decay_fraction": 1.5}, "--model.decay_fraction must be between 0 and 1"),
        ({"decay_shape": "exp"}, "--model.decay_shape must be one of linear, cosine, sqrt"),
        ({"z_loss": -1.0}, "--model.z_loss must be 0"),
        ({"z_loss": float("nan")}, "--model.z_loss must be 0"),
        ({"batch_size_warmup_tokens": -5}, "--model.batch_size_warmup_tokens must be 0"),
        ({"batch_size_warmup_start": 2.0}, "--model.batch_size_warmup_start must be between 0 and 1"),
    ],
)
def test_settings_are_validated_at_construction(setting: dict, message: str):
    with pytest.raises(ValueError, match=message):
        LitPretrain(model_overrides=TEST_MODEL_OVERRIDES, **setting)


@pytest.mark.slow
def test_batch_size_warmup_with_one_row_micro_batches_is_refused(small_corpus: Path, tmp_path: Path):
    args = resume_args(small_corpus, tmp_path, "--model.batch_size_warmup_tokens", "100")
    with pytest.raises(AssertionError, match="batch_size_warmup_tokens trains on the first rows .* needs"):
        run_fit([*args, "--data.micro_batch_size", "1"])


def test_z_loss_adds_its_gradient_and_leaves_the_logged_loss_alone():
    """One step in process with and without z-loss: the same logged cross-entropy, gradients apart by the
    gradient of z_loss * mean(logsumexp(logits)^2)."""
    tokens = torch.randint(0, 512, (4, 17), generator=torch.Generator().manual_seed(0))
    results = {}
    for z_loss in (0.0, 0.1):
        torch.manual_seed(0)
        module = LitPretrain(model_overrides=TEST_MODEL_OVERRIDES, z_loss=z_loss)
        module.configure_model()
        module.model.zero_grad()
        cross_entropy, z_term = module._losses(tokens, z_loss)
        (cross_entropy if z_term is None else cross_entropy + z_term).backward()
        results[z_loss] = (cross_entropy.item(), module.model.wte.weight.grad.clone(), module)
    (ce_plain, grad_plain, module), (ce_z, grad_z, _) = results[0.0], results[0.1]
    assert ce_z == ce_plain
    module.model.zero_grad()
    (0.1 * module.model(tokens[:, :-1]).float().logsumexp(-1).square().mean()).backward()
    torch.testing.assert_close(grad_z - grad_plain, module.model.wte.weight.grad, rtol=1e-4, atol=1e-7)
    assert json.dumps(module.hparams["batch_size_warmup_tokens"]) == "0", "a plain int in checkpoints"


@pytest.mark.slow
def test_recipe_under_fsdp2_resumes_exactly_from_a_sharded_checkpoint(small_corpus: Path, tmp_path: Path):
    """Muon's state (DTensor momentum) goes through the sharded checkpoint and comes back bit for bit."""
    fsdp2 = (*RECIPE, "--config", "configs/trainer/cpu-fsdp2.yaml", "--trainer.log_every_n_steps", "1")
    fsdp2 = (*fsdp2, "--trainer.limit_val_batches", "0")
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_fit(resume_args(small_corpus, straight, *fsdp2, "--trainer.max_steps", "6"))
    run_fit(resume_args(small_corpus, split, *fsdp2, "--trainer.max_steps", "3"))
    run_fit(resume_args(small_corpus, split, *fsdp2, "--trainer.max_steps", "6", "--ckpt_path", "last"))
    (expected,), (first, resumed) = step_losses(straight), step_losses(split)
    assert sorted(resumed) == [3, 4, 5] and {**first, **resumed} == expected
    assert (split / "checkpoints" / "step-0000006.ckpt").is_dir(), "sharded"
