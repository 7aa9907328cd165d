"""Global gradient norm and clipping for any mix of whole and sharded (DTensor) parameters.

`torch.nn.utils.clip_grad_norm_` stacks the per-group norms into one tensor, which fails once DTensors
live on different meshes: under FSDP2 + tensor parallelism the blocks' linear weights are sharded over
(data_parallel, tensor_parallel) while norms and embeddings are sharded over data_parallel only.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.distributed.tensor import DTensor


def _gradients(parameters: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return [p.grad for p in parameters if p.grad is not None]


def total_grad_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor | None:
    """The 2-norm of all gradients taken together (a float32 scalar), or None when there are none."""
    by_mesh: dict[object, list[torch.Tensor]] = {}
    for grad in _gradients(parameters):
        by_mesh.setdefault(grad.device_mesh if isinstance(grad, DTensor) else None, []).append(grad)
    if not by_mesh:
        return None
    squares = []
    for grads in by_mesh.values():
        norm = torch.nn.utils.get_total_norm(grads)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()  # the shards' partial norms combined (one reduction per mesh dim)
        squares.append(norm.float() ** 2)
    return torch.stack(squares).sum().sqrt()


def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor | None:
    """Scale the gradients so that their global 2-norm is at most `max_norm`; return the norm before."""
    parameters = list(parameters)
    norm = total_grad_norm(parameters)
    if norm is None:
        return None
    # The same formula as torch.nn.utils.clip_grad_norm_, with no host sync.
    coefficient = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for grad in _gradients(parameters):
        local = grad.to_local() if isinstance(grad, DTensor) else grad  # the scale applies shard by shard
        groups.setdefault((local.device, local.dtype), []).append(local)
    for (device, dtype), grads in groups.items():
        torch._foreach_mul_(grads, coefficient.to(device=device, dtype=dtype))
    return norm
