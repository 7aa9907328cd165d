"""Train the test model a few steps on fixed data, single-process, DDP or FSDP2; write rank 0's record.

Run by tests/test_distributed.py in a subprocess; Lightning starts the second process itself. Every
process sees half of each global batch (DistributedSampler), so the global batch matches the single run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lit_pretrain.module import LitPretrain  # noqa: E402
from lit_pretrain.parallelize import ParallelConfig  # noqa: E402
from tests.conftest import TEST_MODEL_OVERRIDES  # noqa: E402

GLOBAL_BATCH = 8


class InterleavedSampler(torch.utils.data.Sampler):
    """Rank r of w gets items r, r + w, r + 2w, ...: the same global batches as one process, in order."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __iter__(self):
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world = (
            (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
        )
        return iter(range(rank, self.size, world))

    def __len__(self) -> int:
        return self.size


class RecordingLitPretrain(LitPretrain):
    """Records the loss over the whole global batch (all ranks) at every step."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.global_losses: list[float] = []

    def training_step(self, batch, batch_idx: int):
        loss = super().training_step(batch, batch_idx)
        self.global_losses.append(float(self.all_gather(loss.detach()).mean()))
        return loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=["single", "ddp", "fsdp2"], required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--activation_checkpointing_every", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="save a checkpoint here at the end")
    args = parser.parse_args()

    L.seed_everything(1234)
    devices = 1 if args.strategy == "single" else 2
    windows = torch.randint(
        0, 512, (GLOBAL_BATCH * args.steps, 33), generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(windows, batch_size=GLOBAL_BATCH // devices, sampler=InterleavedSampler(len(windows)))
    strategy = {
        "single": "auto",
        "ddp": DDPStrategy(process_group_backend="gloo"),
        "fsdp2": ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
    }[args.strategy]
    module = RecordingLitPretrain(
        model_name="tiny",
        model_overrides=TEST_MODEL_OVERRIDES,
        warmup_steps=2,
        learning_rate=1e-3,
        parallel=ParallelConfig(activation_checkpointing_every=args.activation_checkpointing_every),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, loader)
    if args.checkpoint:
        trainer.save_checkpoint(args.checkpoint)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    weights = get_model_state_dict(
        module.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if trainer.is_global_zero:
        torch.save(weights, Path(args.output).with_suffix(".weights.pt"))
        Path(args.output).write_text(
            json.dumps({"losses": module.global_losses, "world_size": trainer.world_size})
        )


if __name__ == "__main__":
    main()
