"""`lit-pretrain estimate`: parameters, memory per device, FLOPs per step and time to a token budget.

Reads the same YAML files as `fit` (later files win) without building anything, so it runs anywhere:
plan a 64-GPU run from a laptop. Memory is an estimate (about +-20%): allocator fragmentation, CUDA
context and communication buffers come on top.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from lit_pretrain.model import ModelConfig, num_parameters, training_flops_per_token

# Dense bf16 peak FLOP/s per device (no sparsity).
PEAK_FLOPS = {"h100-sxm": 989e12, "h100-pcie": 756e12, "h200": 989e12, "a100": 312e12, "l40s": 362e12}
GIB = 2**30


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of two config dicts, `update` winning."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _strategy_name(strategy: Any) -> str:
    if isinstance(strategy, dict):
        strategy = strategy.get("class_path", "")
    strategy = str(strategy or "auto").lower()
    if "modelparallel" in strategy or "fsdp" in strategy:
        return "fsdp2"
    return "ddp" if "ddp" in strategy else "single"


def parallel_layout(strategy: Any, devices: int, num_nodes: int) -> tuple[int, int]:
    """(data-parallel, tensor-parallel) sizes, resolving "auto" as `AtomicModelParallelStrategy` does."""
    world = devices * num_nodes
    class_path = strategy.get("class_path", "") if isinstance(strategy, dict) else str(strategy or "")
    if "modelparallel" not in class_path.lower():
        return world, 1  # DDP, or Lightning's FSDP (v1): every rank is a data-parallel rank
    init_args = strategy.get("init_args", {}) if isinstance(strategy, dict) else {}
    data_parallel = init_args.get("data_parallel_size", "auto")
    tensor_parallel = init_args.get("tensor_parallel_size", "auto")
    if data_parallel == "auto" and tensor_parallel == "auto":
        # Lightning's default: tensor parallelism within a node, data parallelism across nodes.
        data_parallel, tensor_parallel = num_nodes, devices
    elif data_parallel == "auto":
        data_parallel = world // int(tensor_parallel)
    elif tensor_parallel == "auto":
        tensor_parallel = world // int(data_parallel)
    data_parallel, tensor_parallel = int(data_parallel), int(tensor_parallel)
    if data_parallel * tensor_parallel != world:
        raise ValueError(
            f"data_parallel_size {data_parallel} x tensor_parallel_size {tensor_parallel} must equal "
            f"devices x num_nodes = {world}"
        )
    return data_parallel, tensor_parallel


def estimate(
    config: dict[str, Any], devices: int, gpu: str, mfu: float, max_tokens: int | None
) -> dict[str, Any]:
    """Numbers for one run described by a merged `fit` config."""
    model_section, data, trainer = config.get("model", {}), config.get("data", {}), config.get("trainer", {})
    model = ModelConfig.from_name(
        model_section.get("model_name", "tiny"), **(model_section.get("model_overrides") or {})
    )
    parallel = model_section.get("parallel") or {}
    seq_len = int(data.get("seq_len", 256))
    micro_batch = int(data.get("micro_batch_size", 8))
    world = devices * int(trainer.get("num_nodes", 1) or 1)
    data_parallel, tensor_parallel = parallel_layout(
        trainer.get("strategy"), devices, int(trainer.get("num_nodes", 1) or 1)
    )
    global_batch = int(
        data.get("global_batch_size")
        or micro_batch * data_parallel * int(trainer.get("accumulate_grad_batches", 1))
    )
    strategy = _strategy_name(trainer.get("strategy"))
    if tensor_parallel > 1:
        strategy = "fsdp2+tp"
        for name in ("n_head", "n_kv_head", "intermediate_size"):
            if getattr(model, name) % tensor_parallel:
                raise ValueError(
                    f"tensor_parallel_size {tensor_parallel} must divide {name} ({getattr(model, name)})"
                )
    precision = str(trainer.get("precision", "32-true"))
    parameters = num_parameters(model)

    # Bytes per parameter: weights, gradients, AdamW's two moments. "-true" precisions keep everything
    # in that dtype; mixed precision (and FSDP2's policy) keeps fp32 weights, gradients and moments.
    low = precision.startswith(("bf16-true", "16-true"))
    weight_bytes, grad_bytes, optimizer_bytes = (2, 2, 4) if low else (4, 4, 8)
    # FSDP2 shards everything over the data-parallel ranks; tensor parallelism splits the blocks further
    # (embeddings, norms and the head stay whole within a tensor-parallel group).
    sharded = strategy.startswith("fsdp2")
    per_block = num_parameters(replace(model, n_layer=2)) - num_parameters(replace(model, n_layer=1))
    block_parameters = per_block * model.n_layer
    per_rank = (parameters - block_parameters) / (data_parallel if sharded else 1) + block_parameters / (
        data_parallel * tensor_parallel if sharded else 1
    )
    per_device = {
        "weights_gib": per_rank * weight_bytes / GIB,
        "gradients_gib": per_rank * grad_bytes / GIB,
        "optimizer_gib": per_rank * optimizer_bytes / GIB,
    }
    # Activations kept for the backward, per layer, with fused attention (no seq^2 term) in 16-bit:
    # about (10 + 24 / tp) * seq * batch * n_embd bytes (Korthikanti et al., 2022, without sequence
    # parallelism). A recomputed block keeps its input.
    activation_bytes = 2 if (precision.startswith(("bf16", "16")) or parallel.get("fsdp_param_dtype")) else 4
    per_layer = (10 + 24 / tensor_parallel) * seq_len * micro_batch * model.n_embd * activation_bytes / 2
    every = int(parallel.get("activation_checkpointing_every", 0) or 0)
    recomputed = math.ceil(model.n_layer / every) if every else 0
    kept_input = 2 * seq_len * micro_batch * model.n_embd * activation_bytes / 2
    layers = (model.n_layer - recomputed) * per_layer + recomputed * kept_input
    logits = 2 * seq_len * micro_batch * model.vocab_size * 4  # fp32 logits and their gradient
    per_device["activations_gib"] = (layers + logits) / GIB
    per_device["total_gib"] = sum(per_device.values())

    flops_per_token = training_flops_per_token(model, seq_len)
    tokens_per_step = global_batch * seq_len
    result: dict[str, Any] = {
        "model": model.name,
        "parameters": parameters,
        "strategy": strategy,
        "precision": precision,
        "devices": world,
        "seq_len": seq_len,
        "micro_batch_size": micro_batch,
        "global_batch_size": global_batch,
        "data_parallel_size": data_parallel,
        "tensor_parallel_size": tensor_parallel,
        "gradient_accumulation": global_batch / (micro_batch * data_parallel),
        "tokens_per_step": tokens_per_step,
        "flops_per_step": flops_per_token * tokens_per_step,
        "memory_per_device": per_device,
        "gpu": gpu,
        "mfu": mfu,
    }
    peak = PEAK_FLOPS[gpu]
    seconds_per_step = result["flops_per_step"] / (world * peak * mfu)
    result["seconds_per_step"] = seconds_per_step
    result["tokens_per_second"] = tokens_per_step / seconds_per_step
    budget = max_tokens or model_section.get("max_tokens")
    if budget:
        result["max_tokens"] = int(budget)
        result["hours_to_max_tokens"] = int(budget) / result["tokens_per_second"] / 3600
    return result


def print_estimate(result: dict[str, Any]) -> None:
    """The estimate as a short report."""
    print(f"model {result['model']}: {result['parameters'] / 1e6:,.1f}M parameters")
    print(
        f"{result['strategy']} on {result['devices']} x {result['gpu']} "
        f"(data parallel {result['data_parallel_size']}, tensor parallel {result['tensor_parallel_size']}), "
        f"{result['precision']}; "
        f"global batch {result['global_batch_size']} x {result['seq_len']} = {result['tokens_per_step']:,} "
        f"tokens per step (micro-batch {result['micro_batch_size']}, accumulation "
        f"{result['gradient_accumulation']:g})"
    )
    print("memory per device (GiB):")
    for key, value in result["memory_per_device"].items():
        print(f"  {key.removesuffix('_gib'):<12}{value:10.2f}")
    print(f"FLOPs per step: {result['flops_per_step']:.3e}")
    print(
        f"at {result['mfu']:.0%} MFU: {result['seconds_per_step']:.3f} s per step, "
        f"{result['tokens_per_second']:,.0f} tokens/s"
    )
    if "hours_to_max_tokens" in result:
        print(f"time to {result['max_tokens']:,} tokens: {result['hours_to_max_tokens']:.1f} h")


def main(argv: list[str]) -> None:
    """Parse `argv`, merge the configs and print the estimate."""
    parser = argparse.ArgumentParser(prog="lit-pretrain estimate", description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append", required=True, help="a fit YAML; repeat to compose")
    parser.add_argument(
        "--devices", type=int, default=None, help="devices per node (default: trainer.devices)"
    )
    parser.add_argument("--gpu", choices=sorted(PEAK_FLOPS), default="h100-sxm")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation to assume")
    parser.add_argument(
        "--max_tokens", type=int, default=None, help="token budget (default: model.max_tokens)"
    )
    args = parser.parse_args(argv)
    config: dict[str, Any] = {}
    for path in args.config:
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    devices = args.devices or config.get("trainer", {}).get("devices", 1)
    if not isinstance(devices, int) or devices < 1:
        raise SystemExit(f"trainer.devices is {devices!r}: pass --devices N (devices per node)")
    print_estimate(estimate(config, devices, args.gpu, args.mfu, args.max_tokens))
