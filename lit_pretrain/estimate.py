"""`lit-pretrain estimate`: parameters, memory per device, FLOPs per step and time to a token budget.

Reads the same YAML files as `fit` (later files win) without building anything, so it runs anywhere:
plan a 64-GPU run from a laptop. Memory is an estimate (about +-20%): allocator fragmentation, CUDA
context and communication buffers come on top.
"""

from __future__ import annotations

import argparse
import math
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
    global_batch = int(
        data.get("global_batch_size") or micro_batch * world * int(trainer.get("accumulate_grad_batches", 1))
    )
    strategy = _strategy_name(trainer.get("strategy"))
    precision = str(trainer.get("precision", "32-true"))
    parameters = num_parameters(model)

    # Bytes per parameter: weights, gradients, AdamW's two moments. "-true" precisions keep everything
    # in that dtype; mixed precision (and FSDP2's policy) keeps fp32 weights, gradients and moments.
    low = precision.startswith(("bf16-true", "16-true"))
    weight_bytes, grad_bytes, optimizer_bytes = (2, 2, 4) if low else (4, 4, 8)
    shards = world if strategy == "fsdp2" else 1
    per_device = {
        "weights_gib": parameters * weight_bytes / shards / GIB,
        "gradients_gib": parameters * grad_bytes / shards / GIB,
        "optimizer_gib": parameters * optimizer_bytes / shards / GIB,
    }
    # Activations kept for the backward, per layer, with fused attention (no seq^2 term) in 16-bit:
    # about 34 * seq * batch * n_embd bytes (Korthikanti et al., 2022). A recomputed block keeps its input.
    activation_bytes = 2 if (precision.startswith(("bf16", "16")) or parallel.get("fsdp_param_dtype")) else 4
    per_layer = 34 * seq_len * micro_batch * model.n_embd * activation_bytes / 2
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
        "gradient_accumulation": global_batch / (micro_batch * world),
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
        f"{result['strategy']} on {result['devices']} x {result['gpu']}, {result['precision']}; "
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
