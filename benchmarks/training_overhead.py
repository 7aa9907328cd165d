"""Time per training step: the real `lit-pretrain fit` path against a bare PyTorch loop, in one process.

Both sides train the same model from the same initial weights, on the same batches from the same
litdata loader, with the same AdamW, LR schedule and gradient clipping. The Lightning side is the whole
CLI path (LightningModule, DataModule, every default callback: throughput and MFU, memory, per-source
tokens, loss guard, progress lines, TensorBoard logging, checkpoint callback). Rounds alternate raw and
Lightning; the ratio is the median of the paired rounds. Two configurations: `tiny` (the `make pretrain`
model, a few hundred ms per step here) and `micro` (a step of a few tens of ms, where per-step host
overhead shows as it would next to a fast GPU step).

    python benchmarks/training_overhead.py --output training_overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lit_pretrain.cli.fit import run_lightning_cli  # noqa: E402
from lit_pretrain.data.datamodule import PretrainDataModule  # noqa: E402
from lit_pretrain.data.prepare import prepare  # noqa: E402
from lit_pretrain.model import GPT, ModelConfig  # noqa: E402
from lit_pretrain.optim.schedules import warmup_cosine  # noqa: E402

SEED = 1337
LEARNING_RATE, MIN_LR, WARMUP, WEIGHT_DECAY, CLIP = 2e-3, 2e-4, 40, 0.1, 1.0
# name -> model overrides of `tiny`, seq_len, micro-batch size, timed steps per run.
CONFIGURATIONS = {
    "tiny": ({}, 256, 8, 40),
    "micro": (
        {"n_layer": 2, "n_head": 2, "n_kv_head": 1, "n_embd": 64, "intermediate_size": 172},
        128,
        4,
        200,
    ),
}


class StepClock(L.Callback):
    """Wall time from the end of step `skip` to the end of the last step (the timed window)."""

    def __init__(self, skip: int) -> None:
        self.skip = skip
        self.start: float | None = None
        self.end: float | None = None
        self.steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Start the clock after the warm-up steps; stop it at every step end."""
        now = time.perf_counter()
        if trainer.global_step == self.skip:
            self.start = now
        elif trainer.global_step > self.skip:
            self.end, self.steps = now, trainer.global_step - self.skip


def lightning_step_ms(data_dir: Path, run_dir: Path, args: argparse.Namespace, name: str) -> float:
    """Mean ms per step of `lit-pretrain fit` over the timed window."""
    overrides, seq_len, batch_size, steps = CONFIGURATIONS[name]
    steps = args.steps or steps
    shutil.rmtree(run_dir, ignore_errors=True)
    clock = StepClock(args.warmup_steps)
    cli_args = [
        "fit",
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--data.data_dir",
        str(data_dir),
        "--model.model_overrides",
        json.dumps(overrides),
        "--data.seq_len",
        str(seq_len),
        "--data.micro_batch_size",
        str(batch_size),
        "--data.num_workers",
        str(args.num_workers),
        "--trainer.max_steps",
        str(args.warmup_steps + steps),
        "--trainer.limit_val_batches",
        "0",
        "--trainer.default_root_dir",
        str(run_dir),
        "--model.lr_decay_steps",
        "560",
    ]
    run_lightning_cli(cli_args, extra_callbacks=[clock])
    return 1000 * (clock.end - clock.start) / clock.steps


def raw_step_ms(data_dir: Path, args: argparse.Namespace, name: str) -> float:
    """Mean ms per step of a bare loop: same model, data, optimizer, schedule and clipping."""
    overrides, seq_len, batch_size, steps = CONFIGURATIONS[name]
    steps = args.steps or steps
    torch.manual_seed(SEED)
    model = GPT(ModelConfig.from_name("tiny", **overrides))
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LEARNING_RATE,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, WARMUP, 560, LEARNING_RATE, MIN_LR) / LEARNING_RATE
    )
    datamodule = PretrainDataModule(
        str(data_dir), seq_len=seq_len, micro_batch_size=batch_size, num_workers=args.num_workers
    )
    datamodule.setup("fit")
    model.train()
    start = None
    total = args.warmup_steps + steps
    for step, batch in enumerate(datamodule.train_dataloader()):
        tokens = batch["tokens"].long()
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step + 1 == args.warmup_steps:
            start = time.perf_counter()
        if step + 1 == total:
            break
    return 1000 * (time.perf_counter() - start) / steps


def measure(name: str, data_dir: Path, work: Path, args: argparse.Namespace) -> dict:
    """Paired rounds of one configuration: medians and per-round values."""
    raw, lightning = [], []
    for round_index in range(args.rounds):
        # Alternate which side goes first, so neither always runs on a warmer (or more tired) machine.
        if round_index % 2:
            lightning.append(lightning_step_ms(data_dir, work / "run", args, name))
            raw.append(raw_step_ms(data_dir, args, name))
        else:
            raw.append(raw_step_ms(data_dir, args, name))
            lightning.append(lightning_step_ms(data_dir, work / "run", args, name))
    ratios = [lit / bare for lit, bare in zip(lightning, raw, strict=True)]
    overrides, seq_len, batch_size, steps = CONFIGURATIONS[name]
    return {
        "model": f"tiny with {overrides}" if overrides else "tiny",
        "tokens_per_step": seq_len * batch_size,
        "timed_steps": args.steps or steps,
        "lightning_step_ms": statistics.median(lightning),
        "raw_step_ms": statistics.median(raw),
        "ratio": statistics.median(ratios),
        "lightning_step_ms_per_round": lightning,
        "raw_step_ms_per_round": raw,
        "ratio_per_round": ratios,
    }


def main() -> None:
    """Prepare a small corpus, run the rounds, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="training_overhead.json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--configurations", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS)
    )
    parser.add_argument("--warmup_steps", type=int, default=5, help="untimed steps first")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per run (default: the configuration's)"
    )
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--max_documents", type=int, default=400, help="per source, for the corpus")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="overhead-bench-"))
    data_dir = work / "data"
    prepare(
        ["python-stdlib"],
        data_dir,
        vocab_size=8192,
        val_fraction=0.1,
        max_documents_per_source=args.max_documents,
    )
    results = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
        "configurations": {name: measure(name, data_dir, work, args) for name in args.configurations},
    }
    print(f"\n{'configuration':<16}{'raw ms':>10}{'fit ms':>10}{'ratio':>8}   ratio in each round")
    for name, row in results["configurations"].items():
        rounds = ", ".join(f"{r:.3f}" for r in row["ratio_per_round"])
        print(
            f"{name:<16}{row['raw_step_ms']:>10.2f}{row['lightning_step_ms']:>10.2f}{row['ratio']:>8.3f}   {rounds}"
        )
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
