"""Tokens and wall time the modern recipe needs to match the nanoGPT-style baseline, in one run.

Two `lit-pretrain fit` runs, back to back in this process, on the same data, seed and token budget:

- baseline: configs/experiment/baseline-cpu.yaml, the GPT-2 architecture (LayerNorm, learned positions,
  GELU, biases, tied embeddings) at the size of `tiny`, AdamW with warmup + cosine;
- speedrun: configs/experiment/speedrun-cpu.yaml, the modded-nanogpt-style recipe (Muon for the blocks'
  matrices and AdamW for the rest, QK-norm, ReLU², zero-initialised projections, a tied head, a
  warmup-stable-decay schedule).

Both validate every `--val_every` steps on the whole validation split (or on its first `--val_batches`
batches: a subset of 3 batches moved the crossing by 10 steps either way). The validation losses are read back from the runs' TensorBoard event files. The
result is where the speedrun's validation loss first reaches the baseline's final one, interpolated
linearly between validations: in tokens and in training wall time (the fit's time less its validations),
each as a ratio to the baseline's whole run. Goals: tokens ratio <= 0.5, wall-time ratio <= 0.6.

    python benchmarks/recipe_efficiency.py --output recipe_efficiency.json
    python benchmarks/recipe_efficiency.py --quick --output quick.json   # a few steps: a smoke test
    python benchmarks/recipe_efficiency.py -- --data.num_workers 0      # more fit/validate arguments

On a CPU shared with other jobs, OMP_NUM_THREADS=1 avoids each small operation waiting for a second core
(docs/benchmarks.md). The untrained and final losses on the whole validation split are also measured: the
speedrun run is `make pretrain`'s budget, so its final / untrained ratio is the demo's with this recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import lightning as L
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lit_pretrain.cli.fit import run_lightning_cli  # noqa: E402
from lit_pretrain.experiments.report import VAL_LOSS, read_scalars  # noqa: E402

RECIPES = {
    "baseline": ROOT / "configs" / "experiment" / "baseline-cpu.yaml",
    "speedrun": ROOT / "configs" / "experiment" / "speedrun-cpu.yaml",
}
TOKENS_GOAL, WALL_GOAL = 0.5, 0.6


class TrainingClock(L.Callback):
    """Seconds of training (the fit's wall time less its validations) at the end of every optimizer step."""

    def __init__(self) -> None:
        self.start = 0.0
        self.validating_since: float | None = None
        self.validation_seconds = 0.0
        self.seconds_at_step: dict[int, float] = {0: 0.0}

    def on_train_start(self, trainer, pl_module) -> None:
        """Start the clock."""
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Record the training seconds so far against the optimizer step just finished."""
        elapsed = time.perf_counter() - self.start - self.validation_seconds
        self.seconds_at_step[trainer.global_step] = elapsed

    def on_validation_start(self, trainer, pl_module) -> None:
        """Stop counting while validating."""
        self.validating_since = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        """Resume counting."""
        if self.validating_since is not None:
            self.validation_seconds += time.perf_counter() - self.validating_since
            self.validating_since = None


def interpolate(x: float, xs: list[float], ys: list[float]) -> float:
    """ys at x, linearly between the two neighbouring points of the increasing xs (clamped at the ends)."""
    return float(np.interp(x, xs, ys))


def first_crossing(steps: list[float], losses: list[float], target: float) -> float | None:
    """The (fractional) step where the loss curve first reaches `target`, linear between points; None if
    it never does. Before the first point the curve is unknown, so a first point already at or below the
    target is its own step."""
    for index, (step, loss) in enumerate(zip(steps, losses, strict=True)):
        if loss <= target:
            if index == 0:
                return step
            previous_step, previous_loss = steps[index - 1], losses[index - 1]
            return previous_step + (step - previous_step) * (previous_loss - target) / (previous_loss - loss)
    return None


def fit_args(recipe: str, data_dir: str, run_dir: Path, args: argparse.Namespace) -> list[str]:
    """The `lit-pretrain fit` arguments of one recipe: its config, with the benchmark's schedule of
    validations, the shared data and budget, and no checkpoints but the last."""
    return [
        "fit",
        "--config",
        str(RECIPES[recipe]),
        "--data.data_dir",
        data_dir,
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.max_steps",
        str(args.steps),
        "--model.lr_decay_steps",
        str(args.steps),
        "--trainer.val_check_interval",
        str(args.val_every),
        "--trainer.limit_val_batches",
        str(args.val_batches),
        "--checkpoint.every_n_train_steps",
        str(args.steps),
        "--trainer.enable_progress_bar",
        "false",
        *args.extra,
    ]


def validate(recipe: str, run_dir: Path, args: argparse.Namespace, checkpoint: Path | None) -> float:
    """`lit-pretrain validate` of the recipe's model (untrained, or from `checkpoint`) on the whole
    validation split, as `make baseline` and the end of `make pretrain` measure it."""
    cli_args = [
        "validate",
        "--config",
        str(RECIPES[recipe]),
        "--data.data_dir",
        args.data_dir,
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.limit_val_batches",
        str(args.full_val_batches),
        "--trainer.enable_progress_bar",
        "false",
        *args.extra,
        *(["--ckpt_path", str(checkpoint)] if checkpoint else []),
    ]
    cli = run_lightning_cli(cli_args)
    return float(cli.trainer.callback_metrics[VAL_LOSS])


def train(recipe: str, run_dir: Path, args: argparse.Namespace) -> dict:
    """Run one recipe: its validation curve (optimizer steps, tokens, training seconds, loss), throughput,
    and its untrained and final losses on the whole validation split."""
    untrained_full = validate(recipe, run_dir / "untrained", args, None)
    clock = TrainingClock()
    started = time.perf_counter()
    cli = run_lightning_cli(fit_args(recipe, args.data_dir, run_dir / "fit", args), extra_callbacks=[clock])
    fit_seconds = time.perf_counter() - started
    tokens_per_step = cli.datamodule.seq_len * cli.datamodule.micro_batch_size
    points = read_scalars(run_dir / "fit")[VAL_LOSS]
    # A validation after optimizer step s is logged at step s - 1, where train/tokens_seen says s steps'
    # tokens (the training step's logs are written before its optimizer step counts).
    steps = [p.step + 1 for p in points]
    losses = [p.value for p in points]
    clock_steps = sorted(clock.seconds_at_step)
    clock_seconds = [clock.seconds_at_step[s] for s in clock_steps]
    final_step = clock_steps[-1]
    train_seconds = clock_seconds[-1]
    final_full = validate(recipe, run_dir / "final", args, run_dir / "fit" / "checkpoints" / "last.ckpt")
    return {
        "recipe": recipe,
        "config": str(RECIPES[recipe].relative_to(ROOT)),
        "parameters": sum(p.numel() for p in cli.model.parameters()),
        "steps": final_step,
        "tokens_per_step": tokens_per_step,
        "tokens": final_step * tokens_per_step,
        "final_val_loss": losses[-1],
        "train_seconds": train_seconds,
        "fit_seconds": fit_seconds,
        "tokens_per_second": final_step * tokens_per_step / train_seconds,
        "untrained_full_val_loss": untrained_full,
        "final_full_val_loss": final_full,
        "curve": [
            {
                "step": step,
                "tokens": step * tokens_per_step,
                "train_seconds": interpolate(step, clock_steps, clock_seconds),
                "val_loss": loss,
            }
            for step, loss in zip(steps, losses, strict=True)
        ],
    }


def compare(baseline: dict, speedrun: dict) -> dict:
    """Where the speedrun's curve first reaches the baseline's final loss, as ratios to the baseline run."""
    target = baseline["final_val_loss"]
    curve = speedrun["curve"]
    step = first_crossing([p["step"] for p in curve], [p["val_loss"] for p in curve], target)
    result = {"target_val_loss": target, "crossing_step": step}
    if step is None:
        return {**result, "crossing_tokens": None, "tokens_ratio": None, "wall_ratio": None}
    steps = [p["step"] for p in curve]
    seconds = interpolate(step, steps, [p["train_seconds"] for p in curve])
    tokens = step * speedrun["tokens_per_step"]
    return {
        **result,
        "crossing_tokens": tokens,
        "crossing_train_seconds": seconds,
        "tokens_ratio": tokens / baseline["tokens"],
        "wall_ratio": seconds / baseline["train_seconds"],
    }


def print_table(results: dict) -> None:
    """The two runs and the ratios."""
    runs, ratios = results["runs"], results["comparison"]
    print(
        f"\n{'recipe':<10} {'params':>8} {'tokens':>10} {'final val':>10} {'full val':>9} {'of untrained':>12} "
        f"{'train s':>8} {'tokens/s':>9}"
    )
    for run in runs.values():
        fraction = run["final_full_val_loss"] / run["untrained_full_val_loss"]
        print(
            f"{run['recipe']:<10} {run['parameters'] / 1e6:>7.2f}M {run['tokens']:>10,} "
            f"{run['final_val_loss']:>10.4f} {run['final_full_val_loss']:>9.4f} {fraction:>12.3f} "
            f"{run['train_seconds']:>8.1f} {run['tokens_per_second']:>9.0f}"
        )
    if ratios["crossing_step"] is None:
        print(f"\nspeedrun never reached the baseline's final val loss {ratios['target_val_loss']:.4f}")
        return
    print(
        f"\nspeedrun reaches the baseline's final val loss {ratios['target_val_loss']:.4f} at step "
        f"{ratios['crossing_step']:.1f} ({ratios['crossing_tokens']:,.0f} tokens, "
        f"{ratios['crossing_train_seconds']:.1f} s of training)"
    )
    print(
        f"tokens ratio {ratios['tokens_ratio']:.3f} (goal <= {TOKENS_GOAL}), "
        f"wall-time ratio {ratios['wall_ratio']:.3f} (goal <= {WALL_GOAL})"
    )


def plot(results: dict, path: Path) -> None:
    """Both validation curves against tokens and against training seconds, with the target and the crossing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comparison = results["comparison"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for axis, (key, label, scale) in zip(
        axes, (("tokens", "tokens", 1e6), ("train_seconds", "training seconds", 1.0)), strict=True
    ):
        for recipe, run in results["runs"].items():
            points = run["curve"]
            axis.plot(
                [p[key] / scale for p in points], [p["val_loss"] for p in points], marker=".", label=recipe
            )
        axis.axhline(
            comparison["target_val_loss"], color="grey", linestyle="--", linewidth=1, label="baseline final"
        )
        crossing = comparison.get("crossing_tokens" if key == "tokens" else "crossing_train_seconds")
        if crossing is not None:
            axis.axvline(crossing / scale, color="grey", linestyle=":", linewidth=1)
        axis.set_xlabel("tokens (millions)" if key == "tokens" else label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss")
    axes[0].legend()
    ratios = f"tokens ratio {comparison['tokens_ratio']}, wall-time ratio {comparison['wall_ratio']}"
    if comparison["tokens_ratio"] is not None:
        ratios = (
            f"tokens ratio {comparison['tokens_ratio']:.3f}, wall-time ratio {comparison['wall_ratio']:.3f}"
        )
    figure.suptitle(f"speedrun-cpu against the nanoGPT-style baseline, {results['steps']} steps: {ratios}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    """Train both recipes, compare, print a table and write JSON (and the curves as PNG beside it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="recipe_efficiency.json")
    options = (  # flag, type, default, help
        ("--data_dir", str, str(ROOT / "data" / "python-stdlib"), "a prepared corpus"),
        ("--steps", int, 560, "optimizer steps of 8 x 256 tokens, both recipes"),
        ("--val_every", int, 40, "steps between validations"),
        ("--val_batches", str, "1.0", "validation batches (of 32 x 256) each time (1.0: the whole split)"),
        ("--full_val_batches", str, "1.0", "the untrained and final validations (1.0: the whole split)"),
    )
    for flag, kind, default, text in options:
        parser.add_argument(flag, type=kind, default=default, help=text)
    parser.add_argument("--work_dir", default=None, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 6 steps, tiny validations")
    parser.add_argument("extra", nargs="*", help="more fit/validate arguments for both recipes")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.val_every, args.val_batches, args.full_val_batches = 6, 3, 1, "1"
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="recipe-bench-"))
    runs = {recipe: train(recipe, work / recipe, args) for recipe in RECIPES}
    results = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "steps": args.steps,
        "val_every": args.val_every,
        "val_batches": args.val_batches,
        "runs": runs,
        "comparison": compare(runs["baseline"], runs["speedrun"]),
    }
    results["goals_met"] = {
        "tokens": results["comparison"]["tokens_ratio"] is not None
        and results["comparison"]["tokens_ratio"] <= TOKENS_GOAL,
        "wall": results["comparison"]["wall_ratio"] is not None
        and results["comparison"]["wall_ratio"] <= WALL_GOAL,
    }
    print_table(results)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    plot(results, Path(args.output).with_suffix(".png"))
    print(f"wrote {args.output} and {Path(args.output).with_suffix('.png')}")


if __name__ == "__main__":
    main()
