"""Allocate a model built on the meta device and draw its initial weights as one unsharded process would."""

from __future__ import annotations

import torch

from lit_pretrain.model.gpt import GPT


def materialize(model: GPT, device: torch.device | str, seed: int) -> None:
    """Allocate a model built on the meta device and initialise it as one unsharded process would.

    Each parameter is drawn in full, one at a time and in a fixed order, from a generator seeded with
    `seed`; a sharded (FSDP2 or tensor-parallel) parameter keeps only its own part. The initial weights
    then depend only on the seed, not on the number of processes, and the largest temporary is one
    full parameter rather than the whole model.
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    model.to_empty(device=device)  # GPT.to_empty keeps a tied embedding tied
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            full = torch.empty(parameter.shape, dtype=parameter.dtype, device=device)
            model.init_parameter_(name, full, generator)
            if isinstance(parameter, DTensor):
                # src_data_rank=None: every rank slices its own part of the identical full tensor.
                full = distribute_tensor(
                    full, parameter.device_mesh, parameter.placements, src_data_rank=None
                )
            parameter.copy_(full)
        model.reset_buffers()
