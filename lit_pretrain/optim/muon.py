"""Muon (Newton-Schulz orthogonalised momentum) for the blocks' hidden matrices and AdamW for the rest,
as one optimizer, as in modded-nanogpt (Keller Jordan, https://kellerjordan.github.io/posts/muon/).

Muon gets the two-dimensional weights inside the transformer blocks (attention and MLP projections).
AdamW keeps the embedding, the lm head (tied or not), the norms and any biases: Muon is meant for hidden
layers, and its orthogonalised update suits neither a lookup table nor the output classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.tensor import DTensor, Replicate

# torch's own Newton-Schulz iteration (Keller Jordan's quintic coefficients, in bfloat16) and its
# per-shape learning-rate adjustment: private names (fenced in _compat), but the point is to run exactly
# torch's arithmetic.
from lit_pretrain._compat.torch_muon import adjust_lr as _adjust_lr
from lit_pretrain._compat.torch_muon import zeropower_via_newtonschulz as _zeropower_via_newtonschulz
from lit_pretrain.optim.adamw import AdamWConfig, adamw, lr_scheduler, parameter_groups

OPTIMIZERS = ("adamw", "muon")


@dataclass(frozen=True)
class MuonConfig:
    """Muon's `--model.*` settings; weight decay is AdamW's `--model.weight_decay`."""

    lr: float = 0.02
    momentum: float = 0.95

    def __post_init__(self) -> None:
        if not self.lr >= 0:
            raise ValueError(f"--model.muon_lr must be 0 or more, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"--model.muon_momentum must be in [0, 1), got {self.momentum}")


def orthogonalise(update: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
    """Newton-Schulz of the whole matrix; a sharded (DTensor) update comes back sharded as it was.

    The iteration needs the full matrix (its Gram products mix every row with every column), so a shard is
    all-gathered, every rank orthogonalises the same full matrix, and each keeps its own shard of the
    result: exactly what one process computes, for the memory of one full matrix at a time and one
    all-gather per matrix per step. (A distributed Newton-Schulz would save that memory, not the traffic.)
    """
    coefficients, steps, eps = group["ns_coefficients"], group["ns_steps"], group["eps"]
    if not isinstance(update, DTensor):
        return _zeropower_via_newtonschulz(update, coefficients, steps, eps)
    full = _zeropower_via_newtonschulz(update.full_tensor(), coefficients, steps, eps)
    mesh = update.device_mesh
    replicated = DTensor.from_local(full, mesh, [Replicate()] * mesh.ndim, run_check=False)
    return replicated.redistribute(mesh, update.placements)  # slicing a replicated tensor: no traffic


def run_closure(closure: Callable[[], float] | None) -> float | None:
    """The loss of an optimizer closure (forward and backward, run with gradients on), if there is one."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class Muon(torch.optim.Muon):
    """torch's Muon, also for DTensor parameters (FSDP2, tensor parallelism): see `orthogonalise`.

    On plain tensors it does torch.optim.Muon's arithmetic (tests/optim/test_muon.py checks it bit for
    bit); the step is written out only because torch's hands the sharded matrix to Newton-Schulz as it is.
    A parameter without a gradient (LossGuard's skipped step) is left alone, momentum included.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One Muon step for every parameter that has a gradient."""
        loss = run_closure(closure)
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            buffers: list[torch.Tensor] = []
            self._init_group(group, params, grads, buffers)
            lr, momentum = group["lr"], group["momentum"]
            for param, grad, buffer in zip(params, grads, buffers, strict=True):
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalise(update, group)
                param.mul_(1 - lr * group["weight_decay"])  # decoupled decay at the unadjusted rate
                param.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], param.shape))
        return loss


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer made of an AdamW and a `Muon`: Lightning sees a single optimizer, so automatic
    optimization, gradient accumulation and clipping, the loss guard, the LR scheduler and checkpoints
    (plain and sharded, through `state_dict`) work as with AdamW alone.

    Its param groups are the parts' own group dicts (AdamW's first, so `param_groups[0]["lr"]` is still
    AdamW's rate) and its `state` is the parts' state, so whatever sets a rate or loads a state sets it
    for the part that uses it.
    """

    def __init__(self, adamw_part: torch.optim.AdamW, muon_part: Muon) -> None:
        self._parts = (adamw_part, muon_part)
        self._adamw_groups = len(adamw_part.param_groups)
        super().__init__([*adamw_part.param_groups, *muon_part.param_groups], defaults={})
        self._link()

    def _link(self) -> None:
        # load_state_dict replaces the group dicts and the state: point the parts at the new ones.
        adamw_part, muon_part = self._parts
        adamw_part.param_groups = self.param_groups[: self._adamw_groups]
        muon_part.param_groups = self.param_groups[self._adamw_groups :]
        adamw_part.state = muon_part.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as any optimizer does, then hand the loaded groups and state to the parts."""
        super().load_state_dict(state_dict)
        self._link()

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Run the closure once (forward, backward, clipping, loss guard), then step both parts."""
        loss = run_closure(closure)
        for part in self._parts:
            part.step()
        return loss


def muon_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters Muon trains: the two-dimensional weights inside `model.blocks`."""
    return [p for p in model.blocks.parameters() if p.ndim == 2 and p.requires_grad]


def build_muon_adamw(
    model: torch.nn.Module, config: AdamWConfig, muon: MuonConfig, decay_steps: int
) -> tuple[MuonWithAdamW, torch.optim.lr_scheduler.LambdaLR]:
    """Muon for the blocks' matrices, AdamW for the rest, and one schedule scaling both base rates."""
    hidden = {id(p) for p in muon_parameters(model)}
    rest = [p for p in model.parameters() if id(p) not in hidden]
    muon_part = Muon(
        muon_parameters(model), lr=muon.lr, momentum=muon.momentum, weight_decay=config.weight_decay
    )
    groups = parameter_groups(rest, config.weight_decay, model.wte.weight, config.embedding_lr)
    optimizer = MuonWithAdamW(adamw(groups, config), muon_part)
    return optimizer, lr_scheduler(optimizer, config, decay_steps)
