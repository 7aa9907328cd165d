"""Parameters, memory per device, FLOPs per step and time to a token budget of one training run.

Takes plain values (the model's `ModelConfig`, the batch shape, Lightning's precision, the strategy and its
parallel sizes, the device); `lit-pretrain estimate` (lit_pretrain/cli/estimate.py) reads them from the
same config files and overrides as `fit`. Nothing is built, so it runs anywhere: plan a 64-GPU run from
a laptop. Memory is an estimate (about +-20%): allocator fragmentation, CUDA context and communication
buffers come on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from lit_pretrain.data.datamodule import accumulation_steps
from lit_pretrain.model import ModelConfig, num_parameters, training_flops_per_token
from lit_pretrain.parallel.devices import DEVICES, compute_precision, find_device
from lit_pretrain.parallel.layout import check_tensor_parallel_divides

# How the states are laid out: one device; DDP (every rank holds everything); Lightning's FSDP (v1: states
# sharded over every rank); FSDP2 through ModelParallelStrategy (sharded over the data-parallel ranks,
# blocks split further by tensor parallelism).
STRATEGIES = ("single", "ddp", "fsdp", "fsdp2")
GIB = 2**30


@dataclass(frozen=True)
class MemoryPerDevice:
    """GiB one device holds for training; the total leaves out the CUDA context and fragmentation."""

    weights: float
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        """Everything above together."""
        return self.weights + self.gradients + self.optimizer + self.activations


@dataclass(frozen=True)
class Estimate:
    """The numbers of one run; see `estimate`."""

    model: str
    parameters: int
    strategy: str  # a STRATEGIES entry, or "fsdp2+tp" with tensor parallelism
    precision: str  # Lightning's
    compute_precision: str  # the matmuls' (a key of lit_pretrain.parallel.devices.PRECISIONS)
    device: str  # a key of lit_pretrain.parallel.devices.DEVICES
    devices: int  # data_parallel_size x tensor_parallel_size
    data_parallel_size: int
    tensor_parallel_size: int
    seq_len: int
    micro_batch_size: int
    global_batch_size: int
    gradient_accumulation: int
    tokens_per_step: int
    flops_per_step: int
    memory: MemoryPerDevice
    peak_flops_per_device: float
    mfu: float
    seconds_per_step: float
    tokens_per_second: float
    max_tokens: int | None = None
    steps_to_max_tokens: int | None = None
    hours_to_max_tokens: float | None = None
    notes: tuple[str, ...] = ()


def estimate(
    model: ModelConfig,
    *,
    seq_len: int,
    micro_batch_size: int,
    global_batch_size: int | None = None,
    accumulate_grad_batches: int = 1,
    precision: str = "bf16-mixed",
    strategy: str = "single",
    data_parallel_size: int = 1,
    tensor_parallel_size: int = 1,
    fsdp_param_dtype: str | None = None,
    float8: bool = False,
    activation_checkpointing_every: int = 0,
    device: str = "h100-sxm",
    mfu: float = 0.4,
    max_tokens: int | None = None,
) -> Estimate:
    """Memory per device, FLOPs per step and time for `model` trained on `data_parallel_size` x
    `tensor_parallel_size` devices.

    `global_batch_size` (sequences per optimizer step) sets the gradient accumulation as `fit` does
    (it must be a multiple of micro_batch_size x data_parallel_size); without it,
    `accumulate_grad_batches` applies. `fsdp_param_dtype` and `float8` are `model.parallel`'s; the first
    counts under FSDP2 only. `device` is a key of `DEVICES` or a driver's device name; `mfu` the model
    FLOPs utilisation to assume, relative to the device's dense peak at the run's matmul precision.
    """
    notes: list[str] = []
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if seq_len < 1 or micro_batch_size < 1:
        raise ValueError(
            f"seq_len and micro_batch_size must be positive, got {seq_len} and {micro_batch_size}"
        )
    if seq_len > model.block_size:
        raise ValueError(f"data.seq_len {seq_len} exceeds the model's block_size {model.block_size}")
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    if tensor_parallel_size > 1 and strategy != "fsdp2":
        raise ValueError(
            f"tensor parallelism needs the fsdp2 strategy (ModelParallelStrategy), not {strategy}"
        )
    world = data_parallel_size * tensor_parallel_size
    if strategy == "single" and world != 1:
        raise ValueError(f"strategy single runs on one device, not {world}")
    check_tensor_parallel_divides(model, tensor_parallel_size)
    if global_batch_size is not None:
        accumulation = accumulation_steps(global_batch_size, micro_batch_size, data_parallel_size)
    else:
        accumulation = accumulate_grad_batches
        global_batch_size = micro_batch_size * data_parallel_size * accumulation

    found = find_device(device)
    if found is None:
        raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
    param_dtype = fsdp_param_dtype if strategy == "fsdp2" else None
    compute = compute_precision(precision, param_dtype, float8)
    peak = found.peak_flops(compute)
    if peak is None and float8:
        compute = compute_precision(precision, param_dtype)
        peak = found.peak_flops(compute)
        notes.append(
            f"float8: {found.key} has no fp8 units, so training skips it there: estimated in {compute}"
        )
    if peak is None:
        raise ValueError(f"{found.key} has no {compute} peak in lit_pretrain/parallel/devices.py")

    parameters = num_parameters(model)
    # Bytes per parameter: weights, gradients, AdamW's two moments. "-true" 16-bit precisions keep
    # everything in that dtype; mixed precision (and FSDP2's policy) keeps fp32 weights, gradients and moments.
    low = str(precision) in ("bf16-true", "16-true")
    weight_bytes, grad_bytes, optimizer_bytes = (2, 2, 4) if low else (4, 4, 8)
    # FSDP shards everything over the data-parallel ranks; tensor parallelism splits the blocks further
    # (embeddings, norms and the head stay whole within a tensor-parallel group).
    shards = 1 if strategy in ("single", "ddp") else data_parallel_size
    per_block = num_parameters(replace(model, n_layer=2)) - num_parameters(replace(model, n_layer=1))
    block_parameters = per_block * model.n_layer
    per_rank = (parameters - block_parameters) / shards + block_parameters / (shards * tensor_parallel_size)
    # Activations kept for the backward, per layer, with fused attention (no seq^2 term), in 16-bit:
    # about (10 + 24 / tp) * seq * batch * n_embd bytes (Korthikanti et al., 2022, without sequence
    # parallelism); twice that when the matmuls run in fp32. A recomputed block keeps its input.
    activation_bytes = 4 if compute in ("fp32", "tf32") else 2
    tokens = seq_len * micro_batch_size
    per_layer = (10 + 24 / tensor_parallel_size) * tokens * model.n_embd * activation_bytes / 2
    recomputed = (
        math.ceil(model.n_layer / activation_checkpointing_every) if activation_checkpointing_every else 0
    )
    kept_input = 2 * tokens * model.n_embd * activation_bytes / 2
    layers = (model.n_layer - recomputed) * per_layer + recomputed * kept_input
    logits = 2 * tokens * model.vocab_size * 4  # fp32 logits and their gradient
    memory = MemoryPerDevice(
        weights=per_rank * weight_bytes / GIB,
        gradients=per_rank * grad_bytes / GIB,
        optimizer=per_rank * optimizer_bytes / GIB,
        activations=(layers + logits) / GIB,
    )

    tokens_per_step = global_batch_size * seq_len
    flops_per_step = training_flops_per_token(model, seq_len) * tokens_per_step
    seconds_per_step = flops_per_step / (world * peak * mfu)
    steps = hours = None
    if max_tokens is not None:
        steps = math.ceil(max_tokens / tokens_per_step)
        hours = max_tokens / (tokens_per_step / seconds_per_step) / 3600
    return Estimate(
        model=model.name,
        parameters=parameters,
        strategy="fsdp2+tp" if tensor_parallel_size > 1 else strategy,
        precision=str(precision),
        compute_precision=compute,
        device=found.key,
        devices=world,
        data_parallel_size=data_parallel_size,
        tensor_parallel_size=tensor_parallel_size,
        seq_len=seq_len,
        micro_batch_size=micro_batch_size,
        global_batch_size=global_batch_size,
        gradient_accumulation=accumulation,
        tokens_per_step=tokens_per_step,
        flops_per_step=flops_per_step,
        memory=memory,
        peak_flops_per_device=peak,
        mfu=mfu,
        seconds_per_step=seconds_per_step,
        tokens_per_second=tokens_per_step / seconds_per_step,
        max_tokens=max_tokens,
        steps_to_max_tokens=steps,
        hours_to_max_tokens=hours,
        notes=tuple(notes),
    )


def format_estimate(result: Estimate) -> str:
    """The estimate as a short report."""
    lines = [
        f"model {result.model}: {result.parameters / 1e6:,.1f}M parameters",
        f"{result.strategy} on {result.devices} x {result.device} (data parallel {result.data_parallel_size}, "
        f"tensor parallel {result.tensor_parallel_size}), {result.precision}: {result.compute_precision} "
        f"matmuls, peak {result.peak_flops_per_device / 1e12:,.1f} TFLOP/s per device",
        f"global batch {result.global_batch_size} x {result.seq_len} = {result.tokens_per_step:,} tokens per "
        f"step (micro-batch {result.micro_batch_size}, accumulation {result.gradient_accumulation})",
        "memory per device (GiB):",
    ]
    memory = result.memory
    for name in ("weights", "gradients", "optimizer", "activations", "total"):
        lines.append(f"  {name:<12}{getattr(memory, name):10.2f}")
    lines.append(f"FLOPs per step: {result.flops_per_step:.3e}")
    lines.append(
        f"at {result.mfu:.0%} MFU: {result.seconds_per_step:.3f} s per step, "
        f"{result.tokens_per_second:,.0f} tokens/s"
    )
    if result.max_tokens is not None:
        lines.append(
            f"time to {result.max_tokens:,} tokens: {result.hours_to_max_tokens:,.1f} h "
            f"({result.steps_to_max_tokens:,} steps)"
        )
    return "\n".join([*result.notes, *lines])
