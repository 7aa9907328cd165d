"""Train the test model a few steps on fixed data, single-process, DDP, FSDP2, TP or FSDP2 + TP; write rank 0's record.

Run by tests/test_distributed.py in a subprocess; Lightning starts the other processes itself. Every
data-parallel rank sees its share of each global batch, so the global batch matches the single run;
tensor-parallel ranks of one group see the same data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lit_pretrain.parallel.config import ParallelConfig  # noqa: E402
from lit_pretrain.parallel.gradients import total_grad_norm  # noqa: E402
from lit_pretrain.training.module import LitPretrain  # noqa: E402
from tests.helpers.models import TEST_MODEL_OVERRIDES  # noqa: E402

GLOBAL_BATCH = 8


class InterleavedSampler(torch.utils.data.Sampler):
    """Data-parallel rank r of w gets items r, r + w, r + 2w, ...: the same global batches as one process."""

    def __init__(self, size: int, tensor_parallel_size: int) -> None:
        self.size = size
        self.tensor_parallel_size = tensor_parallel_size

    def __iter__(self):
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        rank, world = (
            (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
        )
        # Lightning's mesh is (data_parallel, tensor_parallel): consecutive ranks form one TP group.
        tp = self.tensor_parallel_size
        return iter(range(rank // tp, self.size, world // tp))

    def __len__(self) -> int:
        return self.size


class RecordingLitPretrain(LitPretrain):
    """Records the loss over the whole global batch (all ranks) at every step."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.global_losses: list[float] = []
        self.initial_weights: dict[str, torch.Tensor] = {}
        self.grad_norms: list[float] = []

    def on_train_start(self) -> None:
        self.initial_weights = full_weights(self.model)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.grad_norms.append(float(total_grad_norm(parameters)))  # before clipping, as logged
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def training_step(self, batch, batch_idx: int):
        loss = super().training_step(batch, batch_idx)
        self.global_losses.append(float(self.all_gather(loss.detach()).mean()))
        return loss


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter in full, on the CPU (a collective when the model is sharded)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    # Copies: unsharded, the state dict holds the live parameters, which training goes on to change.
    return {name: value.clone() for name, value in get_model_state_dict(model, options=options).items()}


# strategy: (processes, data-parallel size, tensor-parallel size); None: not a ModelParallelStrategy
LAYOUTS = {
    "single": (1, None, None),
    "ddp": (2, None, None),
    "fsdp2": (2, 2, 1),
    "tp": (2, 1, 2),
    "fsdp2-tp": (4, 2, 2),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=sorted(LAYOUTS), required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--activation_checkpointing_every", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="save a checkpoint here at the end")
    parser.add_argument("--gradient_clip_val", type=float, default=None)
    args = parser.parse_args()

    L.seed_everything(1234)
    devices, data_parallel, tensor_parallel = LAYOUTS[args.strategy]
    windows = torch.randint(
        0, 512, (GLOBAL_BATCH * args.steps, 33), generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(
        windows,
        batch_size=GLOBAL_BATCH // (data_parallel or devices),
        sampler=InterleavedSampler(len(windows), tensor_parallel or 1),
    )
    if args.strategy == "single":
        strategy = "auto"
    elif args.strategy == "ddp":
        strategy = DDPStrategy(process_group_backend="gloo")
    else:
        strategy = ModelParallelStrategy(
            data_parallel_size=data_parallel, tensor_parallel_size=tensor_parallel
        )
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
        gradient_clip_val=args.gradient_clip_val,
    )
    trainer.fit(module, loader)
    if args.checkpoint:
        trainer.save_checkpoint(args.checkpoint)
    weights = full_weights(module.model)
    if trainer.is_global_zero:
        torch.save(weights, Path(args.output).with_suffix(".weights.pt"))
        torch.save(module.initial_weights, Path(args.output).with_suffix(".initial.pt"))
        Path(args.output).write_text(
            json.dumps(
                {
                    "losses": module.global_losses,
                    "grad_norms": module.grad_norms,
                    "world_size": trainer.world_size,
                }
            )
        )


if __name__ == "__main__":
    main()
