"""Apply sharding, activation checkpointing and compilation to a `GPT` from outside (as torchtitan does).

`model/` stays plain PyTorch. `LitPretrain.configure_model` builds the model and calls `parallelize` with
the strategy's device mesh (FSDP2 through Lightning's `ModelParallelStrategy`) or none (single device,
DDP). The order is fixed: activation checkpointing, compile, then FSDP2, so that each block is sharded
as one unit around whatever wraps it.
"""

from __future__ import annotations

import warnings

import torch

from lit_pretrain.model.gpt import GPT
from lit_pretrain.parallel.config import DTYPES, ParallelConfig
from lit_pretrain.parallel.layout import check_tensor_parallel_divides


def parallelize(model: GPT, config: ParallelConfig, device_mesh=None) -> GPT:
    """Wrap `model` in place for the mesh (None: no sharding) and return it."""
    names = device_mesh.mesh_dim_names if device_mesh is not None else ()
    tensor_parallel = "tensor_parallel" in names and device_mesh["tensor_parallel"].size() > 1
    if tensor_parallel:
        if config.float8:
            raise NotImplementedError(
                "float8 with tensor parallelism is not supported yet: use tensor_parallel_size 1 or float8 false"
            )
        apply_tensor_parallel(model, device_mesh["tensor_parallel"])
    if config.float8:
        apply_float8(model)
    if config.activation_checkpointing_every:
        apply_activation_checkpointing(model, config.activation_checkpointing_every)
    if config.compile:
        for block in model.blocks:
            block.compile(fullgraph=True)  # in place: parameter names and checkpoints stay the same
    if "data_parallel" in names:
        apply_fsdp(model, device_mesh["data_parallel"], config)
    return model


def apply_tensor_parallel(model: GPT, mesh) -> None:
    """Megatron-style tensor parallelism inside each block: heads and MLP columns split over `mesh`.

    q, k, v and the MLP's input projections are split by output columns, the two output projections by
    input rows, so each block costs one all-reduce forward (and one backward) per sub-layer. Embeddings,
    norms and the head stay whole on every rank (FSDP2 shards them over the data-parallel ranks).

    QK-norm's weights (one of head_size, shared by all heads) are replicated DTensors applied to each
    rank's heads: the heads dimension plays the part of SequenceParallel's sharded sequence dimension, so
    their gradients, each rank's partial sums over its own heads, are all-reduced. The document mask and
    the soft-capped logits are computed from replicated tensors and need nothing.
    """
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    config = model.config
    check_tensor_parallel_divides(config, mesh.size())
    # The sub-layer's input becomes one replicated DTensor, so its gradient is all-reduced once, not
    # once per projection that reads it.
    plan = {
        # (x, cos, sin, input_pos, attn_mask): only x is an activation to prepare.
        "attn": PrepareModuleInput(
            input_layouts=(Replicate(), None, None, None, None),
            desired_input_layouts=(Replicate(), None, None, None, None),
        ),
        "attn.q": ColwiseParallel(),
        "attn.k": ColwiseParallel(),
        "attn.v": ColwiseParallel(),
        "attn.proj": RowwiseParallel(),
        "mlp": PrepareModuleInput(input_layouts=(Replicate(),), desired_input_layouts=(Replicate(),)),
        "mlp.proj": RowwiseParallel(),
    }
    inputs = ("gate", "up") if config.mlp == "swiglu" else ("fc",)
    plan.update({f"mlp.{name}": ColwiseParallel() for name in inputs})
    if config.qk_norm:
        # q and k are [batch, heads, time, head_size] with this rank's heads: sharded along dim 1.
        for name in ("attn.q_norm", "attn.k_norm"):
            plan[name] = SequenceParallel(sequence_dim=1, use_local_output=True)
    for block in model.blocks:
        parallelize_module(block, mesh, plan)


def float8_unavailable_reason() -> str | None:
    """Why float8 training cannot run here, or None when it can."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if torch.cuda.get_device_capability() < (8, 9):
        return f"{torch.cuda.get_device_name()} has no float8 tensor cores (compute capability 8.9+ needed)"
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return "torchao is not installed (pip install torchao)"
    return None


def apply_float8(model: GPT) -> bool:
    """Swap the blocks' linear layers for torchao float8 ones; warn and do nothing where unsupported."""
    reason = float8_unavailable_reason()
    if reason is not None:
        warnings.warn(
            f"float8 training skipped: {reason}; training in the configured precision", stacklevel=2
        )
        return False
    from torchao.float8 import convert_to_float8_training

    def in_blocks(module: torch.nn.Module, name: str) -> bool:
        # float8 matmuls need both dimensions divisible by 16; the head and embeddings stay as they are.
        shape = getattr(module, "weight", torch.empty(0)).shape
        return name.startswith("blocks.") and len(shape) == 2 and shape[0] % 16 == 0 and shape[1] % 16 == 0

    convert_to_float8_training(model, module_filter_fn=in_blocks)
    return True


def apply_activation_checkpointing(model: GPT, every: int) -> None:
    """Recompute the activations of every `every`-th block in the backward pass instead of storing them."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for index, block in enumerate(model.blocks):
        if index % every == 0:
            model.blocks[index] = checkpoint_wrapper(block, preserve_rng_state=True)


def apply_fsdp(model: GPT, mesh, config: ParallelConfig) -> None:
    """FSDP2: shard each block as one unit, then the rest (embeddings, final norm, head)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(
        param_dtype=DTYPES[config.fsdp_param_dtype] if config.fsdp_param_dtype else None,
        reduce_dtype=DTYPES[config.fsdp_reduce_dtype],
    )
    for index, block in enumerate(model.blocks):
        # The last block's parameters are needed again right away by the backward: keep them.
        last = index == len(model.blocks) - 1
        fully_shard(
            block,
            mesh=mesh,
            reshard_after_forward=config.fsdp_reshard_after_forward and not last,
            mp_policy=policy,
        )
    fully_shard(model, mesh=mesh, reshard_after_forward=config.fsdp_reshard_after_forward, mp_policy=policy)
