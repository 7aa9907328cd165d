"""DDP, FSDP2, TP (2 CPU processes, gloo) and FSDP2 + TP (4) give the single-process run; sharded checkpoints load in 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_pretrain.checkpoint.loading import load_model, read_checkpoint
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "tests" / "helpers" / "scripts" / "distributed_run.py"


PROCESSES = {"single": 1, "ddp": 2, "fsdp2": 2, "tp": 2, "fsdp2-tp": 4}
# Below the first steps' gradient norm (about 0.85), so clipping is active and must agree too.
CLIP = "0.5"


def run(tmp_path: Path, strategy: str, *extra: str) -> dict:
    """Rank 0's record of a run: per-step losses and gradient norms, initial and final weights."""
    output = tmp_path / f"{strategy}.json"
    command = [sys.executable, str(SCRIPT), "--strategy", strategy, "--output", str(output), *extra]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    record = json.loads(output.read_text())
    assert record["world_size"] == PROCESSES[strategy]
    record["weights"] = torch.load(output.with_suffix(".weights.pt"))
    record["initial"] = torch.load(output.with_suffix(".initial.pt"))
    return record


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run(tmp_path_factory.mktemp("single"), "single", "--gradient_clip_val", CLIP)


def assert_equivalent(reference: dict, other: dict) -> None:
    for name, value in reference["initial"].items():
        assert torch.equal(other["initial"][name], value), f"initial {name} differs"
    assert other["losses"] == pytest.approx(reference["losses"], abs=1e-5, rel=0)
    assert other["grad_norms"] == pytest.approx(reference["grad_norms"], abs=1e-5, rel=0)
    expected_weights, weights = reference["weights"], other["weights"]
    assert weights.keys() == expected_weights.keys()
    # Summation order differs across processes; Adam divides by sqrt(v), which magnifies float32
    # rounding in the smallest gradients, so the weights get a looser bound than the losses.
    for name, value in expected_weights.items():
        difference = (weights[name] - value).abs().max().item()
        assert difference < 5e-5, f"{name} differs by {difference:.2e}"


def test_the_reference_run_clips(single):
    assert min(single["grad_norms"]) > float(CLIP)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2", "tp"])
def test_two_processes_match_one(single, tmp_path: Path, strategy: str):
    assert_equivalent(single, run(tmp_path, strategy, "--gradient_clip_val", CLIP))


def test_fsdp2_with_activation_checkpointing_matches_one_process(single, tmp_path: Path):
    run_ = run(tmp_path, "fsdp2", "--activation_checkpointing_every", "1", "--gradient_clip_val", CLIP)
    assert_equivalent(single, run_)


@pytest.mark.slow
def test_fsdp2_with_tensor_parallel_on_four_processes_matches_one(single, tmp_path: Path):
    assert_equivalent(single, run(tmp_path, "fsdp2-tp", "--gradient_clip_val", CLIP))


def test_sharded_checkpoint_from_two_processes_loads_in_one(tmp_path: Path):
    directory = tmp_path / "sharded.ckpt"
    weights = run(tmp_path, "fsdp2", "--checkpoint", str(directory))["weights"]
    assert directory.is_dir() and len(list(directory.glob("*.distcp"))) == 2
    checkpoint = read_checkpoint(directory)
    assert checkpoint["global_step"] == 5
    for name, value in weights.items():
        assert torch.equal(checkpoint["state_dict"][f"model.{name}"], value), name

    # The one loader reads only the model's keys from the shards, straight into a bare GPT.
    loaded = load_model(directory)
    assert loaded.global_step == 5
    for name, value in weights.items():
        assert torch.equal(loaded.model.state_dict()[name], value), name


@pytest.mark.parametrize("trainer_config", ["cpu-fsdp2", pytest.param("cpu-ddp", marks=pytest.mark.slow)])
def test_two_process_recipes_train_checkpoint_and_resume(
    small_corpus: Path, tmp_path: Path, trainer_config: str
):
    from tests.helpers.runs import fit_args, run_fit

    args = fit_args(small_corpus, tmp_path, "--config", f"configs/trainer/{trainer_config}.yaml")
    run_fit([*args, "--trainer.max_steps", "3"])
    output = run_fit([*args, "--trainer.max_steps", "6", "--ckpt_path", "last"])
    assert output.count("] resuming from") == 1 and "step-0000003.ckpt" in output
    checkpoints = tmp_path / "checkpoints"
    last = (checkpoints / "last.ckpt").resolve()
    assert last.name == "step-0000006.ckpt"
    assert last.is_dir() == (trainer_config != "cpu-ddp"), (
        "sharded runs write one file per rank into a directory"
    )
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")], "no temporary leftovers"
    assert read_checkpoint(last)["global_step"] == 6


@pytest.mark.slow  # make test stays under 10 min on 2 cores; runs in make test-slow
def test_tensor_parallel_recipe_resumes_and_matches_one_process(small_corpus: Path, tmp_path: Path):
    """Both TP ranks read the same litdata windows and draw the same dropout masks: the single-process losses."""
    from tests.helpers.runs import resume_args, run_fit, step_losses

    straight, split = tmp_path / "straight", tmp_path / "split"
    run_fit(resume_args(small_corpus, straight))  # 6 steps, dropout on
    recipe = ("--config", "configs/trainer/cpu-tp.yaml", "--trainer.log_every_n_steps", "1")
    args = resume_args(small_corpus, split, *recipe)
    run_fit([*args, "--trainer.max_steps", "3"])
    output = run_fit([*args, "--ckpt_path", "last"])
    assert "step-0000003.ckpt" in output
    (expected,), (first, resumed) = step_losses(straight), step_losses(split)
    assert sorted(first) == [0, 1, 2] and sorted(resumed) == [3, 4, 5]
    losses = {**first, **resumed}
    assert [losses[step] for step in range(6)] == pytest.approx(
        [expected[step] for step in range(6)], abs=1e-5
    )
    last = (split / "checkpoints" / "last.ckpt").resolve()
    assert last.is_dir(), "sharded: one file per rank"
    # A tensor-parallel checkpoint reads back whole in one process, for generation or init_from.
    loaded = load_model(last)
    assert loaded.global_step == 6
    assert loaded.model.blocks[0].attn.q.weight.shape == (64, 64), "whole, not one rank's half"


@pytest.mark.slow
def test_resuming_with_another_world_size_is_refused(small_corpus: Path, tmp_path: Path):
    from tests.helpers.runs import fit_args, fit_command

    args = fit_args(small_corpus, tmp_path, "--trainer.max_steps", "3")
    subprocess.run(fit_command(args), cwd=REPO_ROOT, check=True, capture_output=True, timeout=600)
    resumed = [
        *args,
        "--config",
        "configs/trainer/cpu-ddp.yaml",
        "--trainer.max_steps",
        "6",
        "--ckpt_path",
        "last",
    ]
    completed = subprocess.run(
        fit_command(resumed), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode != 0
    assert (
        "data_parallel_size: checkpoint 1, now 2" in completed.stderr
        and "--data.elastic_resume true" in completed.stderr
    )


@pytest.mark.slow
def test_ddp_resume_of_a_weighted_mixture_with_workers_is_exact(tmp_path: Path):
    """Lightning saves rank 0's loader state and every rank restores it: exact, because every rank and
    worker draws its sources from the same seeded sequence, so their per-source counts agree."""
    from tests.helpers.runs import make_two_source_corpus, resume_args, run_fit, step_losses

    corpus = make_two_source_corpus(tmp_path)
    recipe = ("--config", "configs/trainer/cpu-ddp.yaml", "--trainer.log_every_n_steps", "1")
    extra = (*recipe, "--data.num_workers", "2")
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_fit(resume_args(corpus, straight, *extra, "--trainer.max_steps", "8"))
    run_fit(resume_args(corpus, split, *extra, "--trainer.max_steps", "4"))
    run_fit(resume_args(corpus, split, *extra, "--trainer.max_steps", "8", "--ckpt_path", "last"))
    (expected,), (first, resumed) = step_losses(straight), step_losses(split)
    assert sorted(resumed) == [4, 5, 6, 7]
    assert {**first, **resumed} == expected, "rank 1's data reaches rank 0's loss through the gradients"


@pytest.mark.slow
def test_a_tensor_parallel_checkpoint_resumes_with_another_tensor_parallel_size(
    small_corpus: Path, tmp_path: Path
):
    """The fingerprint holds the data-parallel size only: TP 2 on 2 processes resumes as TP 1 on 1."""
    from tests.helpers.runs import resume_args, run_fit, step_losses

    straight, split = tmp_path / "straight", tmp_path / "split"
    run_fit(resume_args(small_corpus, straight))
    recipe = ("--config", "configs/trainer/cpu-tp.yaml", "--trainer.log_every_n_steps", "1")
    run_fit(resume_args(small_corpus, split, *recipe, "--trainer.max_steps", "3"))
    one_process = ("--trainer.devices", "1", "--trainer.strategy.init_args.tensor_parallel_size", "1")
    run_fit(resume_args(small_corpus, split, *recipe, *one_process, "--ckpt_path", "last"))
    (expected,), (first, resumed) = step_losses(straight), step_losses(split)
    assert sorted(resumed) == [3, 4, 5]
    losses = {**first, **resumed}
    assert [losses[step] for step in range(6)] == pytest.approx(
        [expected[step] for step in range(6)], abs=1e-5
    )


def test_a_tensor_parallel_size_that_does_not_divide_the_heads_is_a_clear_error(
    small_corpus: Path, tmp_path: Path
):
    from tests.helpers.runs import fit_args, fit_command

    overrides = json.dumps(dict(TEST_MODEL_OVERRIDES, n_kv_head=1))
    args = fit_args(small_corpus, tmp_path, "--config", "configs/trainer/cpu-tp.yaml")
    args += ["--model.model_overrides", overrides, "--trainer.max_steps", "1"]
    completed = subprocess.run(fit_command(args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode != 0
    assert "tensor_parallel_size 2 must divide the model's n_kv_head (1)" in completed.stderr
