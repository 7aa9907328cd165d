"""LayerStatistics: per-parameter norms at the right steps, equal to norms computed directly, DTensors too."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_pretrain.callbacks.layer_stats import LayerStatistics, parameter_tag, squared_norms
from lit_pretrain.data.datamodule import PretrainDataModule
from lit_pretrain.training.module import LitPretrain
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.runs import scalars


@pytest.fixture(scope="module")
def run(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Six steps of the test model, statistics every 2nd step with histograms, gradients clipped at 1."""
    run_dir = tmp_path_factory.mktemp("layer-stats")
    module = LitPretrain(model_name="tiny", model_overrides=TEST_MODEL_OVERRIDES, warmup_steps=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=6,
        logger=TensorBoardLogger(run_dir, name="tensorboard"),
        log_every_n_steps=1,
        # Below the norms of these steps (about 1.4), so clipping changes the gradients.
        gradient_clip_val=1.0,
        callbacks=[LayerStatistics(every_n_steps=2, histograms=True)],
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, PretrainDataModule(str(small_corpus), seq_len=32, micro_batch_size=4, num_workers=0))
    return run_dir, [name for name, _ in module.model.named_parameters()]


def test_every_parameter_has_both_norms_at_every_second_step(run):
    run_dir, names = run
    logged = scalars(run_dir)
    assert {tag for tag in logged if tag.startswith(("grad_norm/", "weight_norm/"))} == {
        f"{kind}/{name}" for kind in ("grad_norm", "weight_norm") for name in names
    }
    # The 2nd, 4th and 6th optimizer steps, at the logger steps of their train/loss (one less).
    for name in names:
        assert [step for step, _ in logged[f"grad_norm/{name}"]] == [1, 3, 5]
        assert [step for step, _ in logged[f"weight_norm/{name}"]] == [1, 3, 5]
    assert [step for step, _ in logged["train/loss"]] == [0, 1, 2, 3, 4, 5]


def test_the_gradient_norms_are_taken_before_clipping(run):
    run_dir, names = run
    logged = scalars(run_dir)
    global_norms = dict(logged["train/grad_norm"])  # LitPretrain's norm before clipping
    for step in (1, 3, 5):
        per_parameter = [dict(logged[f"grad_norm/{name}"])[step] for name in names]
        combined = math.sqrt(sum(norm**2 for norm in per_parameter))
        assert combined == pytest.approx(global_norms[step], rel=1e-5)
        assert combined > 1.0, "clipped gradients would have norm 1"


def test_histograms_of_weights_and_gradients(run):
    run_dir, names = run
    (event_file,) = run_dir.glob("tensorboard/**/events.out.tfevents.*")
    accumulator = EventAccumulator(str(event_file), size_guidance={"histograms": 0})
    accumulator.Reload()
    assert set(accumulator.Tags()["histograms"]) == {
        f"{kind}/{name}" for kind in ("weights", "grads") for name in names
    }
    assert [event.step for event in accumulator.Histograms("grads/wte.weight")] == [1, 3, 5]


class _RecordingLogger:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, float], int]] = []
        self.histograms: list[tuple[str, torch.Tensor, int]] = []
        self.experiment = SimpleNamespace(
            add_histogram=lambda tag, values, step: self.histograms.append((tag, values, step))
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.calls.append((metrics, step))


def _known_module() -> SimpleNamespace:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
    model[0].weight.grad = torch.tensor([[1.0, 2.0], [2.0, 4.0]])  # norm 5
    model[0].bias.grad = torch.tensor([-12.0, 0.0])
    model[1].weight.grad = None  # not used this step: left out
    model[1].bias.grad = torch.zeros(2)
    return SimpleNamespace(model=model)


def test_norms_of_known_gradients_and_weights_at_the_chosen_steps():
    module, logger = _known_module(), _RecordingLogger()
    callback = LayerStatistics(every_n_steps=5, histograms=True)
    for step in range(10):
        trainer = SimpleNamespace(global_step=step, is_global_zero=True, loggers=[logger])
        callback.on_before_optimizer_step(trainer, module, optimizer=None)
    assert [step for _, step in logger.calls] == [4, 9], "the 5th and 10th optimizer steps"
    metrics = logger.calls[0][0]
    assert metrics["grad_norm/0.weight"] == pytest.approx(5.0)
    assert metrics["grad_norm/0.bias"] == pytest.approx(12.0)
    assert metrics["grad_norm/1.bias"] == 0.0
    assert "grad_norm/1.weight" not in metrics
    assert metrics["weight_norm/0.weight"] == pytest.approx(5.0)
    assert metrics["weight_norm/1.weight"] == pytest.approx(math.sqrt(2))  # LayerNorm starts at ones
    assert metrics["weight_norm/0.bias"] == pytest.approx(module.model[0].bias.norm().item())
    tags = {tag for tag, _, step in logger.histograms if step == 4}
    assert "grads/0.weight" in tags and "grads/1.weight" not in tags and "weights/1.weight" in tags


def test_other_ranks_compute_but_do_not_write():
    module, logger = _known_module(), _RecordingLogger()
    trainer = SimpleNamespace(global_step=0, is_global_zero=False, loggers=[logger])
    LayerStatistics(every_n_steps=1, histograms=True).on_before_optimizer_step(trainer, module, None)
    assert logger.calls == [] and logger.histograms == []


def test_activation_checkpointing_wrappers_are_left_out_of_the_tags():
    assert parameter_tag("blocks.0._checkpoint_wrapped_module.attn.q.weight") == "blocks.0.attn.q.weight"
    assert parameter_tag("wte.weight") == "wte.weight"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sharded_norms(rank: int, port: int, world_size: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        mesh = init_device_mesh("cpu", (world_size,))
        generator = torch.Generator().manual_seed(0)
        full = [torch.randn(shape, generator=generator) for shape in [(5, 3), (4, 7), (3,), (6, 2), (1, 3)]]
        tensors = [
            distribute_tensor(full[0], mesh, [Shard(0)]),  # uneven: 3 rows and 2
            distribute_tensor(full[1], mesh, [Shard(1)]),
            distribute_tensor(full[2], mesh, [Replicate()]),
            full[3],  # a plain tensor beside them
            distribute_tensor(full[4], mesh, [Shard(0)]),  # one rank holds nothing
        ]
        # A pending sum: each rank holds half of the values.
        partial = DTensor.from_local(full[3] / 2, mesh, [Partial()], run_check=False)
        result = squared_norms([*tensors, partial])
        expected = torch.stack([t.norm() ** 2 for t in full] + [full[3].norm() ** 2])
        torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-6)
    finally:
        dist.destroy_process_group()


def test_squared_norms_of_dtensors_are_of_the_full_tensors():
    mp.spawn(_sharded_norms, args=(_free_port(), 2), nprocs=2, join=True)


def test_squared_norms_of_plain_tensors():
    tensors = [torch.tensor([3.0, 4.0]), torch.ones(2, 2, dtype=torch.bfloat16)]
    assert squared_norms(tensors).tolist() == [25.0, 4.0]
    assert squared_norms([]).numel() == 0
