"""`LayerStatistics`: per-parameter gradient and weight norms (and optionally histograms) every N steps."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard

# What activation checkpointing's wrapper inserts into parameter names (parallel/apply.py): left out of
# the tags, so that they are the same with and without it.
_WRAPPER_INFIX = "._checkpoint_wrapped_module"


def squared_norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Squared 2-norms of whole tensors (float32, 1-D, in order, on the device), DTensors included.

    A DTensor's norm is of the full tensor: the shards' squared norms are summed across the mesh
    dimensions it is sharded over, in one reduction per group of DTensors that share a mesh and placements.
    Collective: every rank of those meshes must call it with the same tensors.
    """
    if not tensors:
        return torch.zeros(0)
    squares: list[torch.Tensor | None] = [None] * len(tensors)
    groups: dict[tuple, list[int]] = {}
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, DTensor):
            squares[index] = torch.linalg.vector_norm(tensor.detach(), dtype=torch.float32) ** 2
        elif all(isinstance(p, Shard | Replicate) for p in tensor.placements):
            groups.setdefault((tensor.device_mesh, tuple(tensor.placements)), []).append(index)
        else:  # a pending (Partial) reduction: DTensor's own norm does it
            norm = torch.linalg.vector_norm(tensor.detach(), dtype=torch.float32).full_tensor()
            squares[index] = norm**2
    for (mesh, placements), indices in groups.items():
        local = torch.stack(
            [
                torch.linalg.vector_norm(tensors[i].detach().to_local(), dtype=torch.float32) ** 2
                for i in indices
            ]
        )
        # Sharded dimensions hold disjoint parts whose squares add up; replicated ones hold copies.
        partial = [Partial("sum") if isinstance(p, Shard) else Replicate() for p in placements]
        full = DTensor.from_local(local, mesh, partial, run_check=False).full_tensor()
        for position, index in enumerate(indices):
            squares[index] = full[position]
    device = squares[0].device
    return torch.stack([square.to(device) for square in squares])


def parameter_tag(name: str) -> str:
    """A parameter's name as the model defines it (activation checkpointing's wrapper left out)."""
    return name.replace(_WRAPPER_INFIX, "")


def whole_tensor(tensor: torch.Tensor) -> torch.Tensor | None:
    """The whole tensor held by this process (a replicated DTensor's local copy); None for a shard."""
    if not isinstance(tensor, DTensor):
        return tensor
    if all(isinstance(p, Replicate) for p in tensor.placements):
        return tensor.to_local()
    return None


class LayerStatistics(L.Callback):
    """Logs `grad_norm/<parameter>` and `weight_norm/<parameter>` every `every_n_steps` optimizer steps.

    Gradient norms are taken before clipping (and after a GradScaler unscaled them), per parameter of
    `pl_module.model` (names as `named_parameters()` gives them, dots kept). All norms are computed on the
    device and reach the host in one transfer; other steps cost nothing. Parameters may be DTensors (FSDP2,
    tensor parallel): their norms are of the full tensors, which takes collectives, so every rank must run
    this callback (Lightning calls it on every rank). A parameter without a gradient is left out of
    `grad_norm/`. A step whose loss is not finite has its gradient norms logged as they are (NaN or inf) when
    this callback runs before the hook that drops such gradients (`LossGuard`; listed callbacks run first).

    With `histograms`, global rank 0 also writes TensorBoard histograms `weights/<parameter>` and
    `grads/<parameter>` to loggers whose experiment has `add_histogram`, for whole tensors only: a sharded
    DTensor's full values are on no single rank, so those parameters get no histogram.

    The values go straight to the loggers on global rank 0 at the step Lightning writes the same step's
    `train/loss` and `train/grad_norm` (not through `LightningModule.log`, which would re-write them at every
    later logged step until the next time they are computed).
    """

    def __init__(self, every_n_steps: int = 100, histograms: bool = False) -> None:
        if every_n_steps < 1:
            raise ValueError(f"LayerStatistics: every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.histograms = histograms

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """On every `every_n_steps`-th optimizer step, log each parameter's gradient and weight norm."""
        # In Lightning 2.6.6 this hook runs after the step's last backward and before gradient clipping,
        # while trainer.global_step still counts the steps before this one: the step about to be taken is
        # global_step + 1, and "every n-th step" tests that number, as log_every_n_steps does. Lightning writes
        # this step's train/* metrics at logger step global_step (its count of steps taken before it), so the
        # norms go to the same step and line up with train/grad_norm.
        step = trainer.global_step
        if (step + 1) % self.every_n_steps != 0:
            return
        model = getattr(pl_module, "model", None)
        model = model if isinstance(model, torch.nn.Module) else pl_module
        named = [(parameter_tag(name), parameter) for name, parameter in model.named_parameters()]
        with_grads = [(name, parameter) for name, parameter in named if parameter.grad is not None]
        squares = torch.cat(
            [squared_norms([p for _, p in named]), squared_norms([p.grad for _, p in with_grads])]
        )
        norms = squares.sqrt().tolist()  # the one device-to-host transfer
        metrics = {f"weight_norm/{name}": norm for (name, _), norm in zip(named, norms, strict=False)}
        grad_norms = norms[len(named) :]
        metrics.update(
            {f"grad_norm/{name}": norm for (name, _), norm in zip(with_grads, grad_norms, strict=True)}
        )
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if self.histograms:
            self._write_histograms(trainer, named, step)

    def _write_histograms(
        self, trainer: L.Trainer, named: list[tuple[str, torch.nn.Parameter]], step: int
    ) -> None:
        writers = [
            logger.experiment
            for logger in trainer.loggers
            if callable(getattr(logger.experiment, "add_histogram", None))
        ]
        if not writers:
            return
        for name, parameter in named:
            for kind, tensor in (("weights", parameter), ("grads", parameter.grad)):
                whole = whole_tensor(tensor) if tensor is not None else None
                if whole is None:
                    continue
                values = whole.detach().float().cpu()
                for writer in writers:
                    writer.add_histogram(f"{kind}/{name}", values, step)
