"""Safe loading: a checkpoint that would run code when unpickled is refused everywhere, and never runs it.

Also `--ckpt_path last` skipping a newest checkpoint that does not load (docs/checkpoints.md, "Safe loading").
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from lit_pretrain.checkpoint.atomic import AtomicCheckpointIO
from lit_pretrain.checkpoint.loading import (
    DCP_METADATA,
    SHARDED_METADATA,
    TRUST_VARIABLE,
    UnsafeCheckpointError,
    load_model,
    read_checkpoint,
    read_metadata,
    read_model_weights,
    verify_checkpoint,
)
from lit_pretrain.checkpoint.naming import find_last_checkpoint
from lit_pretrain.cli import main
from lit_pretrain.cli.logs import configure_logging
from lit_pretrain.training.module import LitPretrain
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.paths import REPO_ROOT
from tests.helpers.runs import fit_args, step_losses

LEGACY = REPO_ROOT / "tests" / "fixtures" / "legacy" / "llama-step2-1722c56.ckpt"
REFUSED = rf"refused to load .*\((\S+: )?unpickling it needs (builtins\.)?exec\)\. .*can run code.*{TRUST_VARIABLE}=1"


class RunsCode:
    """Unpickling this calls `exec`, which writes `marker`: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code from the checkpoint ran')",)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "code-ran"


@pytest.fixture
def step3(three_step_run: Path) -> Path:
    return three_step_run / "checkpoints" / "step-0000003.ckpt"


@pytest.fixture
def crafted(step3: Path, tmp_path: Path, marker: Path) -> Path:
    """A real checkpoint with one extra hyperparameter whose unpickling runs code."""
    checkpoint = torch.load(step3, weights_only=True)
    checkpoint["hyper_parameters"]["note"] = RunsCode(marker)
    path = tmp_path / "crafted" / "step-0000003.ckpt"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    return path


def sharded_copy(step3: Path, directory: Path, optimizer_lr: object = 2e-3) -> Path:
    """`step3` as a sharded (DCP) directory laid out like Lightning's: shards, `.metadata`, `meta.pt`."""
    checkpoint = torch.load(step3, weights_only=True)
    state = {
        "state_dict": checkpoint.pop("state_dict"),
        "optimizer_0": {"param_groups": [{"lr": optimizer_lr}]},
    }
    checkpoint.pop("optimizer_states")
    dcp.save(state, checkpoint_id=directory, no_dist=True)
    torch.save(checkpoint, directory / SHARDED_METADATA)
    return directory


@pytest.mark.parametrize(
    "load",
    [
        load_model,
        read_metadata,
        read_checkpoint,
        verify_checkpoint,
        lambda path: read_model_weights(path, load_model(LEGACY).config),
        lambda path: AtomicCheckpointIO().load_checkpoint(path),  # what Lightning resumes with
    ],
    ids=["load_model", "read_metadata", "read_checkpoint", "verify", "read_model_weights", "resume_io"],
)
def test_a_file_that_would_run_code_is_refused_and_the_code_never_runs(crafted: Path, marker: Path, load):
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        load(crafted)
    assert not marker.exists()


def test_init_from_refuses_it(small_corpus: Path, crafted: Path, marker: Path, tmp_path: Path):
    module = LitPretrain(model_name="tiny", model_overrides=TEST_MODEL_OVERRIDES, init_from=str(crafted))
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        module.configure_model()
    args = fit_args(small_corpus, tmp_path / "run", "--model.init_from", str(crafted))
    with pytest.raises(SystemExit, match=f"lit-pretrain fit: error: {REFUSED}"):
        main(args)
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints").exists(), "no step ran"


def test_resuming_from_it_is_refused(small_corpus: Path, crafted: Path, marker: Path, tmp_path: Path):
    # LightningCLI 2.6.6 reads a --ckpt_path file's hyperparameters first, with torch.load(weights_only=True).
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        main(fit_args(small_corpus, tmp_path / "run", "--ckpt_path", str(crafted)))
    assert not marker.exists()


def test_the_override_loads_a_trusted_file(
    crafted: Path, step3: Path, marker: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    configure_logging()
    monkeypatch.setenv(TRUST_VARIABLE, "1")
    loaded = load_model(crafted)
    assert marker.exists(), "trusted: unpickled in full, so its code ran (that is what trusting means)"
    assert "needs full unpickling (unpickling it needs exec)" in capsys.readouterr().out
    expected = load_model(step3)
    for key, value in expected.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_this_projects_checkpoints_load_with_weights_only(step3: Path):
    """A fresh file and the legacy fixture hold only plain values and tensors (sharded: below, test_distributed)."""
    for path in (step3, LEGACY):
        assert {"state_dict", "optimizer_states", "hyper_parameters"} <= set(
            torch.load(path, weights_only=True, mmap=True)
        )


def test_a_sharded_directory_loads_safely(step3: Path, tmp_path: Path):
    directory = sharded_copy(step3, tmp_path / "sharded.ckpt")
    verify_checkpoint(directory)
    whole = read_checkpoint(directory)
    assert whole["global_step"] == 3 and whole["optimizer_0"]["param_groups"][0]["lr"] == 2e-3
    expected = torch.load(step3, weights_only=True)["state_dict"]
    loaded = load_model(directory)
    for key, value in expected.items():
        assert torch.equal(whole["state_dict"][key], value), key
        assert torch.equal(loaded.model.state_dict()[key.removeprefix("model.")], value), key


def test_torch_own_dcp_reader_still_unpickles_metadata_without_restriction(
    step3: Path, tmp_path: Path, marker: Path
):
    """Why the loader reads `.metadata` itself: torch 2.13's FileSystemReader runs `pickle.load` on it.

    When this fails, torch has fixed it: update docs/checkpoints.md ("Safe loading").
    """
    directory = sharded_copy(step3, tmp_path / "sharded.ckpt")
    craft_metadata(directory, marker)
    dcp.FileSystemReader(directory).read_metadata()
    assert marker.exists()


def craft_metadata(directory: Path, marker: Path) -> None:
    with open(directory / DCP_METADATA, "rb") as file:
        metadata = pickle.load(file)  # our own, just written
    metadata.planner_data["note"] = RunsCode(marker)
    with open(directory / DCP_METADATA, "wb") as file:
        pickle.dump(metadata, file)


@pytest.mark.parametrize("load", [load_model, read_metadata, read_checkpoint, verify_checkpoint])
def test_a_sharded_directory_whose_metadata_would_run_code_is_refused(
    step3: Path, tmp_path: Path, marker: Path, load
):
    directory = sharded_copy(step3, tmp_path / "sharded.ckpt")
    craft_metadata(directory, marker)
    with pytest.raises(
        UnsafeCheckpointError, match=rf"refused to load .*{DCP_METADATA}: .*needs builtins\.exec"
    ):
        load(directory)
    assert not marker.exists()


@pytest.mark.parametrize("load", [read_metadata, read_checkpoint, verify_checkpoint])
def test_a_sharded_value_that_would_run_code_is_refused(step3: Path, tmp_path: Path, marker: Path, load):
    """torch's DefaultLoadPlanner (Lightning's resume) reads non-tensor values with weights_only=False."""
    directory = sharded_copy(step3, tmp_path / "sharded.ckpt", optimizer_lr=RunsCode(marker))
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        load(directory)
    assert not marker.exists()


def test_the_fsdp2_strategy_checks_a_directory_before_torch_reads_it(
    step3: Path, tmp_path: Path, marker: Path
):
    """Lightning resumes FSDP2/TP directories with torch's unrestricted DCP reader; the strategy checks first."""
    from lit_pretrain.training.strategy import AtomicModelParallelStrategy

    directory = sharded_copy(step3, tmp_path / "sharded.ckpt")
    craft_metadata(directory, marker)
    with pytest.raises(UnsafeCheckpointError, match="needs builtins\\.exec"):
        AtomicModelParallelStrategy().load_checkpoint(directory)
    valued = sharded_copy(step3, tmp_path / "valued.ckpt", optimizer_lr=RunsCode(marker))
    with pytest.raises(UnsafeCheckpointError, match=REFUSED):
        AtomicModelParallelStrategy().load_checkpoint(valued)
    assert not marker.exists()


def test_the_override_loads_a_trusted_sharded_directory(
    step3: Path, tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
):
    directory = sharded_copy(step3, tmp_path / "sharded.ckpt", optimizer_lr=RunsCode(marker))
    monkeypatch.setenv(TRUST_VARIABLE, "1")
    verify_checkpoint(directory)
    assert not marker.exists(), "a check never runs the file's code, trusted or not"
    whole = read_checkpoint(directory)
    assert marker.exists() and whole["global_step"] == 3
    assert whole["optimizer_0"]["param_groups"][0]["lr"] is None, "what exec returned"


def test_last_skips_newer_checkpoints_that_do_not_load(
    step3: Path, tmp_path: Path, marker: Path, crafted: Path, capsys
):
    configure_logging()
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    shutil.copy(step3, directory / "step-0000003.ckpt")
    data = step3.read_bytes()
    (directory / "step-0000006.ckpt").write_bytes(data[: len(data) // 2])  # cut off mid-write
    sharded = sharded_copy(step3, directory / "step-0000009.ckpt")
    shard = next(sharded.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-100])
    shutil.copy(crafted, directory / "step-0000012.ckpt")

    assert find_last_checkpoint(directory) == directory / "step-0000003.ckpt"
    out = capsys.readouterr().out
    assert f"skipping {directory / 'step-0000012.ckpt'}: it does not load (refused to load" in out
    assert f"skipping {directory / 'step-0000009.ckpt'}: it does not load (" in out and "is truncated" in out
    assert f"skipping {directory / 'step-0000006.ckpt'}: it does not load (PytorchStreamReader" in out
    assert not marker.exists()


def test_last_refuses_to_start_fresh_when_no_checkpoint_loads(tmp_path: Path):
    (tmp_path / "step-0000003.ckpt").write_bytes(b"")
    (tmp_path / "step-0000006.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(
        ValueError, match=r"no step checkpoint in .* loads:\n  step-0000006.ckpt: .*\n  step-"
    ):
        find_last_checkpoint(tmp_path)
    assert find_last_checkpoint(tmp_path / "empty") is None, "no checkpoint at all: a fresh start"


def test_resume_last_skips_a_truncated_newest_checkpoint(small_corpus: Path, tmp_path: Path, capsys):
    main(fit_args(small_corpus, tmp_path))  # 6 steps, checkpoints at 3 and 6
    checkpoints = tmp_path / "checkpoints"
    newest = checkpoints / "step-0000006.ckpt"
    newest.write_bytes(newest.read_bytes()[:100_000])  # a save cut short on a shared filesystem
    capsys.readouterr()

    main([*fit_args(small_corpus, tmp_path), "--ckpt_path", "last"])
    out = capsys.readouterr().out
    assert f"warning: skipping {newest}: it does not load" in out
    assert f"resuming from {checkpoints / 'step-0000003.ckpt'}" in out
    straight, resumed = step_losses(tmp_path)
    assert sorted(resumed) == [3, 4, 5], "continued at step 3"
    assert resumed == {step: loss for step, loss in straight.items() if step >= 3}
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 6


def test_resume_last_with_only_damaged_checkpoints_stops_with_a_clear_error(
    small_corpus: Path, tmp_path: Path
):
    main(fit_args(small_corpus, tmp_path, "--trainer.max_steps", "3"))
    damaged = tmp_path / "checkpoints" / "step-0000003.ckpt"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    with pytest.raises(SystemExit, match=r"fit: error: no step checkpoint in .* loads:\n  step-0000003.ckpt"):
        main([*fit_args(small_corpus, tmp_path), "--ckpt_path", "last"])
    assert sorted(p.name for p in damaged.parent.iterdir()) == ["last.ckpt", "step-0000003.ckpt"]
    assert len(step_losses(tmp_path)) == 1, "no second run started"


@pytest.mark.parametrize(
    "verb, extra",
    [
        ("generate", ["--prompt", "x"]),
        ("export", ["--output_dir", "OUT"]),
        ("evaluate", ["--tasks", "stdlib_code_next_lines"]),
    ],
)
def test_a_truncated_checkpoint_is_a_one_line_error_in_every_verb(
    step3: Path, tmp_path: Path, verb: str, extra
):
    from lit_pretrain.cli import main

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(step3.read_bytes()[: step3.stat().st_size // 2])
    argv = [
        verb,
        "--checkpoint",
        str(truncated),
        *[str(tmp_path / "out") if a == "OUT" else a for a in extra],
    ]
    with pytest.raises(
        SystemExit, match=rf"lit-pretrain {verb}: error: {truncated} does not load .* truncated, corrupted"
    ):
        main(argv)
