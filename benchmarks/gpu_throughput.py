"""Training throughput on one GPU: tokens/s, TFLOP/s and MFU, with and without compile and activation
checkpointing, through the real LightningModule and Trainer (bf16-mixed, synthetic tokens).

    python benchmarks/gpu_throughput.py --output gpu_throughput.json          # on a GPU
    python benchmarks/gpu_throughput.py --dry-run --output gpu_dry_run.json   # anywhere: debug models, CPU
    python benchmarks/gpu_throughput.py --models gpt2-124m --compile on       # a subset

Needs only torch and lightning (not litdata or jsonargparse), so it runs in a stock GPU image. The JSON
is rewritten after every configuration: a run cut short still leaves what it measured.

MFU is against the device's dense bf16 peak (H100 SXM: 989 TFLOP/s), with the 6N + attention FLOPs of
`model/flops.py`. Goals (issue 5): >= 40% for gpt2-124m, >= 50% for tinyllama-1.1b.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lit_pretrain.model import ModelConfig, training_flops_per_token  # noqa: E402
from lit_pretrain.parallel.config import ParallelConfig  # noqa: E402
from lit_pretrain.training.module import LitPretrain  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


def device_peak_flops() -> float | None:
    """Dense bf16 peak of the current CUDA device, if known."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16.items() if key in name), None)


class StepTimer(L.Callback):
    """Wall time of the steps after `warmup`, synchronising the GPU at both ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        """Start the clock at the first timed step."""
        if trainer.global_step == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        """Stop the clock."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def measure(
    model_name: str, seq_len: int, batch: int, steps: int, warmup: int, compile_: bool, every: int, dry: bool
):
    """One configuration's throughput."""
    config = ModelConfig.from_name(model_name, block_size=max(seq_len, 8))
    windows = torch.randint(0, config.vocab_size, ((steps + warmup) * batch, seq_len + 1))
    module = LitPretrain(
        model_name=model_name,
        model_overrides={"block_size": config.block_size},
        warmup_steps=10,
        parallel=ParallelConfig(compile=compile_, activation_checkpointing_every=every),
    )
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu" if dry else "cuda",
        devices=1,
        precision="32-true" if dry else "bf16-mixed",
        max_steps=steps + warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, DataLoader(windows, batch_size=batch, num_workers=2, pin_memory=not dry))
    seconds = (timer.end - timer.start) / steps
    tokens_per_second = batch * seq_len / seconds
    flops_per_second = tokens_per_second * training_flops_per_token(config, seq_len)
    peak = device_peak_flops()
    return {
        "model": model_name,
        "compile": compile_,
        "activation_checkpointing_every": every,
        "seq_len": seq_len,
        "micro_batch_size": batch,
        "step_ms": 1000 * seconds,
        "tokens_per_second": tokens_per_second,
        "tflops": flops_per_second / 1e12,
        "mfu": flops_per_second / peak if peak else None,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }


def main() -> None:
    """Measure every configuration, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="gpu_throughput.json")
    parser.add_argument("--dry-run", action="store_true", help="debug models on CPU: checks the script runs")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps (compilation happens here)")
    parser.add_argument("--models", nargs="+", default=None, help="a subset of the models (default: all)")
    parser.add_argument("--compile", choices=["off", "on", "both"], default="both")
    parser.add_argument("--activation_checkpointing", choices=["off", "on", "both"], default="both")
    args = parser.parse_args()
    if args.dry_run:
        runs = [("gpt2-debug", 32, 2), ("llama-debug", 32, 2)]
        args.steps, args.warmup = min(args.steps, 3), min(args.warmup, 2)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --dry-run to check the script on CPU")
        runs = [("gpt2-124m", 1024, 16), ("tinyllama-1.1b", 2048, 8)]
    if args.models:
        unknown = set(args.models) - {name for name, _, _ in runs}
        if unknown:
            raise SystemExit(
                f"unknown --models {sorted(unknown)}: choose from {[name for name, _, _ in runs]}"
            )
        runs = [run for run in runs if run[0] in args.models]
    choices = {"off": (False,), "on": (True,), "both": (False, True)}
    # Compiling on CPU takes minutes and says nothing about GPU speed.
    compiles = (False,) if args.dry_run else choices[args.compile]
    everies = tuple(int(on) for on in choices[args.activation_checkpointing])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    output = {"date": date.today().isoformat(), "device": device, "dry_run": args.dry_run, "runs": []}
    for (model_name, seq_len, batch), compile_, every in itertools.product(runs, compiles, everies):
        row = measure(model_name, seq_len, batch, args.steps, args.warmup, compile_, every, args.dry_run)
        output["runs"].append(row)
        Path(args.output).write_text(json.dumps(output, indent=2) + "\n")
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
        print(
            f"{model_name:<16} compile={row['compile']!s:<5} ac_every={every} {row['tokens_per_second']:>12,.0f} tok/s "
            f"{row['tflops']:8.2f} TFLOP/s  MFU {mfu}",
            flush=True,
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
