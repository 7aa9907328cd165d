"""Two "nodes" of two CPU processes each on one machine (gloo), started by torchrun or as Slurm tasks.

The equivalence tests train on the prose source alone, with windows as long as the test model's context
and a global batch that takes the whole split: every optimizer step reads every window once, so the four
processes' global batches hold the same windows as the one process's whatever way litdata shares them
out, and the logged losses (means over the global batch) must agree; every step after the first starts a
new epoch, which is what showed that litdata's per-node reshuffle duplicated windows (the datamodule now
lays the data out as one node; the fast in-process test checks each epoch's windows). The resumption tests compare a four-process run stopped and resumed with an uninterrupted four-process run,
on the shared test corpus, and check that each save is written once.

Launches (tests/helpers/launchers.py): torchrun runs `python -m lit_pretrain.cli fit ...` on each of two
agents; the Slurm tasks run the `lit-pretrain` console script with the SLURM_* variables srun would set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest
import torch

from lit_pretrain.checkpoint.loading import load_model, read_checkpoint
from tests.helpers.fault_injection import FAULT_RECORD_ENV, RANK_FAULT_ENV
from tests.helpers.launchers import (
    failure_report,
    free_slurm_job_id,
    recorded_layout,
    run_slurm_tasks,
    run_torchrun_nodes,
    slurm_task_env,
)
from tests.helpers.runs import (
    first_step_wall_times,
    fit_args,
    load,
    resume_args,
    scalars,
    step_losses,
    uninterrupted_losses,
)

NODES, PER_NODE = 2, 2
WORLD = NODES * PER_NODE
# The test model's block_size: each window is one full context of 64 tokens (inputs and shifted targets).
SEQ_LEN = 63
STEPS = 4


def two_nodes(trainer_config: str) -> list[str]:
    """`fit` arguments for 2 nodes of 2 processes with one of the CPU trainer configs."""
    return [
        *("--config", f"configs/trainer/{trainer_config}.yaml"),
        *("--trainer.num_nodes", str(NODES), "--trainer.devices", str(PER_NODE)),
    ]


def record_layout(directory: Path) -> list[str]:
    """`fit` arguments that add `RecordLayout`, writing into `directory`."""
    callback = {
        "class_path": "tests.helpers.launchers.RecordLayout",
        "init_args": {"output_dir": str(directory)},
    }
    return ["--trainer.callbacks+", json.dumps(callback)]


def prose_windows(corpus: Path) -> tuple[str, int]:
    """The corpus's prose source and how many training windows of SEQ_LEN + 1 tokens it holds."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    (name,) = [name for name, source in manifest["sources"].items() if not source["is_code"]]
    # litdata's TokensLoader cuts windows within chunks: count them chunk by chunk.
    index = json.loads((corpus / "train" / name / "index.json").read_text())
    return name, sum(chunk["dim"] // (SEQ_LEN + 1) for chunk in index["chunks"])


def whole_split_args(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    """`fit` arguments whose every optimizer step reads the whole prose training split once.

    The micro-batch is a quarter of the split's windows and the global batch four of them, so one
    process accumulates four micro-batches and four processes read one each. The few windows past a
    multiple of four (fewer than one micro-batch) are dropped by every layout alike.
    """
    prose, windows = prose_windows(corpus)
    micro_batch = windows // WORLD
    assert micro_batch >= WORLD, f"the prose split has only {windows} windows"
    manifest = json.loads((corpus / "manifest.json").read_text())
    weights = {name: int(name == prose) for name in manifest["sources"]}
    return fit_args(
        corpus,
        run_dir,
        *("--data.weights", json.dumps(weights), "--data.seq_len", str(SEQ_LEN)),
        *("--data.micro_batch_size", str(micro_batch), "--data.global_batch_size", str(WORLD * micro_batch)),
        *("--trainer.max_steps", str(STEPS), "--trainer.limit_val_batches", "0"),
        *extra,
    )


@pytest.fixture(scope="module")
def one_process(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """Per-step losses of one process reading the whole prose split at every step."""
    run_dir = tmp_path_factory.mktemp("one-process")
    return uninterrupted_losses(whole_split_args(small_corpus, run_dir), run_dir, STEPS)


def assert_all_succeeded(codes: list[int], log_dir: Path) -> None:
    """Every process exited with 0; otherwise show every rank's log tail."""
    assert codes == [0] * len(codes), f"exit codes {codes}\n{failure_report(log_dir)}"


def assert_two_nodes(layout: list[dict], environment: str, main_address: str = "127.0.0.1") -> None:
    """Four processes in one group, ranks 0-1 on node 0 and 2-3 on node 1, as `environment` set them."""
    assert [r["environment"] for r in layout] == [environment] * WORLD
    assert [(r["global_rank"], r["node_rank"], r["local_rank"]) for r in layout] == [
        (0, 0, 0),
        (1, 0, 1),
        (2, 1, 0),
        (3, 1, 1),
    ]
    assert {(r["world_size"], r["num_nodes"], r["process_group_size"]) for r in layout} == {
        (WORLD, NODES, WORLD)
    }
    assert {r["main_address"] for r in layout} == {main_address}
    assert len({r["main_port"] for r in layout}) == 1


def assert_saved_once(run_dir: Path, steps: range, sharded: bool) -> None:
    """One checkpoint per save and `last.ckpt`, nothing else: no copy from node 1, no temporary leftovers.

    A sharded save is one directory holding one shard per rank (written by each rank, renamed by rank 0).
    """
    saves = [f"step-{step:07d}.ckpt" for step in steps]
    directory = run_dir / "checkpoints"
    assert sorted(p.name for p in directory.iterdir()) == ["last.ckpt", *saves]
    assert (directory / "last.ckpt").resolve().name == saves[-1]
    shards = sorted([".metadata", "meta.pt", *(f"__{rank}_0.distcp" for rank in range(WORLD))])
    for name in saves:
        if sharded:
            assert sorted(p.name for p in (directory / name).iterdir()) == shards, name
        else:
            assert (directory / name).is_file(), name


def test_the_slurm_task_environment_is_read_by_lightning_as_two_nodes():
    """What `run_slurm_tasks` gives each task, read by Lightning's own SLURMEnvironment."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    for procid in range(WORLD):
        with mock.patch.dict(os.environ, slurm_task_env(procid, "712345"), clear=True):
            assert SLURMEnvironment.detect()
            environment = SLURMEnvironment()
            environment.validate_settings(num_devices=PER_NODE, num_nodes=NODES)
            assert environment.world_size() == WORLD
            assert environment.global_rank() == procid
            assert (environment.node_rank(), environment.local_rank()) == divmod(procid, PER_NODE)
            # The first host of "127.0.0.[1-2]"; the port is 15000 + the job id's last four digits.
            assert environment.main_address == "127.0.0.1"
            assert environment.main_port == 15000 + 2345


def test_on_two_nodes_each_epoch_gives_every_window_to_one_rank(small_corpus: Path, monkeypatch):
    """Four ranks on two nodes read, in every epoch, what one process reads: each window once, even shares.

    The ranks' trainer is a real Trainer for 2 nodes of 2 devices, given each global rank in turn.
    """
    import lightning as L
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.strategies import DDPStrategy

    from lit_pretrain.data.batches import batch_windows
    from lit_pretrain.data.datamodule import PretrainDataModule

    prose, windows = prose_windows(small_corpus)
    micro_batch = windows // WORLD
    manifest = json.loads((small_corpus / "manifest.json").read_text())
    weights = {name: int(name == prose) for name in manifest["sources"]}

    def epochs(trainer: L.Trainer, batch: int, count: int = 3) -> list[list[tuple[int, ...]]]:
        datamodule = PretrainDataModule(
            str(small_corpus), weights=weights, seq_len=SEQ_LEN, micro_batch_size=batch
        )
        datamodule.trainer = trainer
        loader = datamodule.train_dataloader()
        return [[tuple(w.tolist()) for b in loader for w in batch_windows(b)] for _ in range(count)]

    common = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False}
    expected = [sorted(epoch) for epoch in epochs(L.Trainer(devices=1, **common), WORLD * micro_batch)]
    ranks = L.Trainer(
        devices=PER_NODE, num_nodes=NODES, strategy=DDPStrategy(process_group_backend="gloo"), **common
    )
    # Setting a rank sets the process-wide rank_zero_only.rank too: restored for the tests that follow.
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    read = []
    for rank in range(WORLD):
        ranks.strategy.cluster_environment.set_global_rank(rank)
        read.append(epochs(ranks, micro_batch))
    for epoch, one_process in enumerate(expected):
        assert [len(by_rank[epoch]) for by_rank in read] == [micro_batch] * WORLD, f"epoch {epoch + 1}"
        assert sorted(w for by_rank in read for w in by_rank[epoch]) == one_process, f"epoch {epoch + 1}"


@pytest.mark.slow
def test_two_torchrun_nodes_with_ddp_match_one_process(small_corpus: Path, one_process, tmp_path: Path):
    """torchrun with a c10d rendezvous on 127.0.0.1 (the form docs/scaling.md shows), DDP."""
    args = whole_split_args(
        small_corpus, tmp_path, *two_nodes("cpu-ddp"), *record_layout(tmp_path / "layout")
    )
    assert_all_succeeded(run_torchrun_nodes(args, tmp_path / "logs", rendezvous="c10d"), tmp_path / "logs")
    # The c10d rendezvous hands the workers the address of the agent that became node 0, by its name.
    layout = recorded_layout(tmp_path / "layout")
    assert_two_nodes(layout, "TorchElasticEnvironment", main_address=layout[0]["main_address"])
    assert_saved_once(tmp_path, range(3, STEPS + 1), sharded=False)
    (losses,) = step_losses(tmp_path)
    assert [losses[step] for step in range(STEPS)] == pytest.approx(
        [one_process[step] for step in range(STEPS)], abs=1e-5, rel=0
    )


@pytest.mark.slow
def test_two_torchrun_nodes_with_fsdp2_match_one_process(small_corpus: Path, one_process, tmp_path: Path):
    """torchrun with a static rendezvous (--master-addr/--master-port, node ranks as given), FSDP2."""
    args = whole_split_args(
        small_corpus, tmp_path, *two_nodes("cpu-fsdp2"), *record_layout(tmp_path / "layout")
    )
    assert_all_succeeded(run_torchrun_nodes(args, tmp_path / "logs", rendezvous="static"), tmp_path / "logs")
    assert_two_nodes(recorded_layout(tmp_path / "layout"), "TorchElasticEnvironment")
    assert_saved_once(tmp_path, range(3, STEPS + 1), sharded=True)
    (losses,) = step_losses(tmp_path)
    assert [losses[step] for step in range(STEPS)] == pytest.approx(
        [one_process[step] for step in range(STEPS)], abs=1e-5, rel=0
    )


def slurm_fit(args: list[str], log_dir: Path, job_id: str | None = None) -> str:
    """Run `args` as the four tasks of a two-node Slurm step; every task's output, joined."""
    assert_all_succeeded(run_slurm_tasks(args, log_dir, NODES, PER_NODE, job_id=job_id), log_dir)
    return "\n".join(log.read_text() for log in sorted(log_dir.glob("task*.log")))


def stopped_and_resumed(corpus: Path, tmp_path: Path, trainer_config: str, *extra: str) -> tuple[Path, Path]:
    """A 6-step run, and the same run stopped after 3 steps and resumed with `--ckpt_path last`, as Slurm tasks.

    Both validate once, after step 4 (two batches of each source, shared out over the four ranks).
    """
    straight, split = tmp_path / "straight", tmp_path / "split"
    recipe = (*two_nodes(trainer_config), *extra)
    slurm_fit(resume_args(corpus, straight, *recipe), tmp_path / "logs-straight")
    slurm_fit([*resume_args(corpus, split, *recipe), "--trainer.max_steps", "3"], tmp_path / "logs-first")
    resume = [*resume_args(corpus, split, *recipe, *record_layout(split / "layout")), "--ckpt_path", "last"]
    job_id = free_slurm_job_id()
    output = slurm_fit(resume, tmp_path / "logs-resumed", job_id)
    assert output.count("] resuming from") == 1 and "step-0000003.ckpt" in output, "said once, by rank 0"
    assert "`srun` command is available" not in output
    layout = recorded_layout(split / "layout")
    assert_two_nodes(layout, "SLURMEnvironment")
    assert layout[0]["main_port"] == 15000 + int(job_id[-4:]), "Lightning's port rule for Slurm jobs"

    (expected,), (first, resumed) = step_losses(straight), step_losses(split)
    assert sorted(first) == [0, 1, 2] and sorted(resumed) == [3, 4, 5]
    logged, expected_logged = scalars(split), scalars(straight)
    # Every optimizer step counts the four ranks' micro-batches of 4 windows of 32 tokens.
    assert (
        logged["train/tokens_seen"][-1] == expected_logged["train/tokens_seen"][-1] == (5, 6 * WORLD * 4 * 32)
    )
    validation = [name for name in expected_logged if name.startswith("val/") and name.endswith("/loss")]
    assert "val/loss" in validation and len(validation) == 3, "the mean and each source's"
    if trainer_config == "cpu-ddp":  # see test_slurm_tasks_with_ddp_checkpoint_once_and_resume_exactly
        losses = {**first, **resumed}
        assert [losses[step] for step in range(6)] == pytest.approx([expected[s] for s in range(6)], abs=1e-6)
        for name in validation:
            assert [v for _, v in logged[name]] == pytest.approx(
                [v for _, v in expected_logged[name]], abs=1e-6
            )
    else:
        assert {**first, **resumed} == expected, "bitwise: the resumed run is the uninterrupted one"
        assert {name: logged[name] for name in validation} == {
            name: expected_logged[name] for name in validation
        }
    return straight, split


def assert_close_training_state(expected: dict, actual: dict) -> None:
    """`assert_same_training_state` up to float32 summation order: weights and Adam moments, same step."""
    assert (actual["global_step"], actual["tokens_seen"]) == (
        expected["global_step"],
        expected["tokens_seen"],
    )
    torch.testing.assert_close(actual["state_dict"], expected["state_dict"], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(
        actual["optimizer_states"][0]["state"], expected["optimizer_states"][0]["state"], rtol=1e-4, atol=1e-7
    )


@pytest.mark.slow
def test_slurm_tasks_with_ddp_checkpoint_once_and_resume_exactly(small_corpus: Path, tmp_path: Path):
    """Exact up to the last bit of a few sums: DDP's first step after a resume sums gradients in another order.

    Gloo's ring all-reduce sums each element over the ranks in an order set by its offset in DDP's
    gradient bucket, and DDP rebuilds its buckets after its first step, in the order gradients arrived:
    the resumed run's first step uses the initial buckets where the uninterrupted run used rebuilt ones.
    A sum of two is the same in either order, so two-process resumes stay bitwise; with four the weights
    after the first resumed step differ by about 1e-8 (the same on one node of four processes). FSDP2
    has no bucket rebuild and resumes bitwise (the test below).
    """
    saves = tmp_path / "saves.log"
    io = {
        "class_path": "tests.helpers.launchers.RecordingCheckpointIO",
        "init_args": {"log_path": str(saves)},
    }
    straight, split = stopped_and_resumed(
        small_corpus, tmp_path, "cpu-ddp", "--trainer.plugins", json.dumps([io])
    )
    for run_dir in (straight, split):
        assert_saved_once(run_dir, range(1, 7), sharded=False)
    # Each of the 12 saves of the three launches was written by global rank 0 alone, once.
    writes = saves.read_text().splitlines()
    assert len(writes) == 12 and len(set(writes)) == 12
    assert {line.split()[0] for line in writes} == {"0"}, "no other rank (node 1's local rank 0) writes"
    assert_close_training_state(
        load(straight / "checkpoints" / "last.ckpt"), load(split / "checkpoints" / "last.ckpt")
    )
    assert read_checkpoint(split / "checkpoints" / "last.ckpt")["global_step"] == 6


@pytest.mark.slow
def test_slurm_tasks_with_fsdp2_checkpoint_once_and_resume_exactly(small_corpus: Path, tmp_path: Path):
    """Bitwise: the same losses, validation losses and weights as the uninterrupted run."""
    straight, split = stopped_and_resumed(small_corpus, tmp_path, "cpu-fsdp2")
    for run_dir in (straight, split):
        assert_saved_once(run_dir, range(1, 7), sharded=True)
    # Read back whole in one process, without a process group: the same weights.
    expected, resumed = (read_checkpoint(d / "checkpoints" / "last.ckpt") for d in (straight, split))
    assert resumed["global_step"] == expected["global_step"] == 6
    for name, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name
    assert load_model(split / "checkpoints" / "last.ckpt").global_step == 6


@pytest.mark.slow
def test_two_torchrun_nodes_come_back_by_themselves_after_a_rank_of_the_second_node_dies(
    small_corpus: Path, tmp_path: Path
):
    """`torchrun --max-restarts 1` on both nodes (c10d): rank 3, on node 1, is SIGKILLed at step 4 of the
    first attempt; both agents start their workers again, which resume from step 4 and finish."""
    watchdog = {
        "class_path": "lit_pretrain.callbacks.rank_watchdog.RankWatchdog",
        "init_args": {"timeout_s": 5, "interval_s": 0.5},
    }
    args = [
        *resume_args(
            small_corpus, tmp_path, *two_nodes("cpu-ddp"), "--trainer.callbacks+", json.dumps(watchdog)
        ),
        *("--ckpt_path", "last"),
    ]
    record = tmp_path / "faults.jsonl"
    env = {RANK_FAULT_ENV: "3:4:kill", FAULT_RECORD_ENV: str(record)}
    # torchrun's shared store would hand the restarted ranks the dead attempt's addresses (cli/fit.py).
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    codes = run_torchrun_nodes(
        args, tmp_path / "logs", module="tests.helpers.fault_injection", max_restarts=1, env=env
    )
    assert_all_succeeded(codes, tmp_path / "logs")
    output = "\n".join(log.read_text() for log in sorted((tmp_path / "logs").glob("node*.log")))
    faults = [json.loads(line) for line in record.read_text().splitlines()]
    assert [f["rank"] for f in faults if f["event"] == "fault"] == [3]
    assert output.count("no complete checkpoint in") == 1, "the first attempt starts fresh (rank 0 says it)"
    assert output.count(f"resuming from {tmp_path / 'checkpoints' / 'step-0000004.ckpt'}") == 1
    first, resumed = step_losses(tmp_path)
    assert sorted(first) == [0, 1, 2, 3] and sorted(resumed) == [4, 5]
    # Rank 0 watches every rank: it names rank 3 as lost, not ranks 1 and 2, whose collectives broke with
    # it; ranks that watch only rank 0 report its verdict.
    errors = [line for line in output.splitlines() if "[rank_watchdog] error:" in line]
    assert errors and all("rank 3 (host " in error and " was lost" in error for error in errors), errors
    (fault,) = [f for f in faults if f["event"] == "fault"]
    _, restarted = first_step_wall_times(tmp_path)
    back = restarted - fault["time"]
    print(
        f"\nMEASURED two torchrun nodes: rank 3 SIGKILLed -> the restarted job's first step {back:.1f} s later"
    )
    assert back < 90
