"""DDP and FSDP2 on 2 CPU processes (gloo) give the single-process losses; sharded checkpoints load in 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_pretrain.checkpointing import read_checkpoint

SCRIPT = Path(__file__).parent / "scripts" / "distributed_run.py"
ROOT = SCRIPT.parents[2]


def run(tmp_path: Path, strategy: str, *extra: str) -> tuple[list[float], dict[str, torch.Tensor]]:
    output = tmp_path / f"{strategy}.json"
    command = [sys.executable, str(SCRIPT), "--strategy", strategy, "--output", str(output), *extra]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    record = json.loads(output.read_text())
    assert record["world_size"] == (1 if strategy == "single" else 2)
    return record["losses"], torch.load(output.with_suffix(".weights.pt"))


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[float], dict[str, torch.Tensor]]:
    return run(tmp_path_factory.mktemp("single"), "single")


def assert_equivalent(reference, other) -> None:
    (expected_losses, expected_weights), (losses, weights) = reference, other
    assert losses == pytest.approx(expected_losses, abs=1e-5, rel=0)
    assert weights.keys() == expected_weights.keys()
    # Summation order differs across processes; Adam divides by sqrt(v), which magnifies float32
    # rounding in the smallest gradients, so the weights get a looser bound than the losses.
    for name, value in expected_weights.items():
        difference = (weights[name] - value).abs().max().item()
        assert difference < 5e-5, f"{name} differs by {difference:.2e}"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_match_one(single, tmp_path: Path, strategy: str):
    assert_equivalent(single, run(tmp_path, strategy))


def test_fsdp2_with_activation_checkpointing_matches_one_process(single, tmp_path: Path):
    assert_equivalent(single, run(tmp_path, "fsdp2", "--activation_checkpointing_every", "1"))


def test_sharded_checkpoint_from_two_processes_loads_in_one(tmp_path: Path):
    directory = tmp_path / "sharded.ckpt"
    _, weights = run(tmp_path, "fsdp2", "--checkpoint", str(directory))
    assert directory.is_dir() and len(list(directory.glob("*.distcp"))) == 2
    checkpoint = read_checkpoint(directory)
    assert checkpoint["global_step"] == 5
    for name, value in weights.items():
        assert torch.equal(checkpoint["state_dict"][f"model.{name}"], value), name

    from lit_pretrain.generate_cli import load_checkpoint

    module, _ = load_checkpoint(directory)
    assert torch.equal(module.model.wte.weight, weights["wte.weight"])


@pytest.mark.parametrize("trainer_config", ["cpu-fsdp2", pytest.param("cpu-ddp", marks=pytest.mark.slow)])
def test_two_process_recipes_train_checkpoint_and_resume(
    small_corpus: Path, tmp_path: Path, trainer_config: str
):
    from tests.resume_runs import run_fit
    from tests.test_train import fit_args

    args = fit_args(small_corpus, tmp_path, "--config", f"configs/trainer/{trainer_config}.yaml")
    run_fit([*args, "--trainer.max_steps", "3"])
    output = run_fit([*args, "--trainer.max_steps", "6", "--ckpt_path", "last"])
    assert output.count("[resume] resuming from") == 1 and "step-0000003.ckpt" in output
    checkpoints = tmp_path / "checkpoints"
    last = (checkpoints / "last.ckpt").resolve()
    assert last.name == "step-0000006.ckpt"
    assert last.is_dir() == (trainer_config == "cpu-fsdp2"), (
        "FSDP2 writes one shard per rank into a directory"
    )
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")], "no temporary leftovers"
    assert read_checkpoint(last)["global_step"] == 6


@pytest.mark.slow
def test_resuming_with_another_world_size_is_refused(small_corpus: Path, tmp_path: Path):
    from tests.resume_runs import fit_command
    from tests.test_train import fit_args

    args = fit_args(small_corpus, tmp_path, "--trainer.max_steps", "3")
    subprocess.run(fit_command(args), cwd=ROOT, check=True, capture_output=True, timeout=600)
    resumed = [
        *args,
        "--config",
        "configs/trainer/cpu-ddp.yaml",
        "--trainer.max_steps",
        "6",
        "--ckpt_path",
        "last",
    ]
    completed = subprocess.run(fit_command(resumed), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode != 0
    assert (
        "world_size: checkpoint 1, now 2" in completed.stderr
        and "--data.elastic_resume true" in completed.stderr
    )
