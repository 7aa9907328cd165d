"""`lit-pretrain scaling fit`: Chinchilla scaling-law constants from measured runs (the work is experiments/scaling.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from jsonargparse import ArgumentParser

from lit_pretrain.experiments.compare import find_runs
from lit_pretrain.experiments.scaling import (
    GRIDS,
    PARAMETER_COUNTS,
    RunPoint,
    ScalingFit,
    bootstrap_intervals,
    draw_scaling,
    fit_scaling_law,
    isoflop_minima,
    points_from_runs,
    power_law,
    read_points_csv,
)


def runs_to_fit(
    directories: list[str], count: str, holdout: list[str]
) -> tuple[list[RunPoint], list[RunPoint]]:
    """The finished runs under `directories` as points: those to fit and those held out (by name)."""
    points, skipped = points_from_runs(find_runs(directories), count)
    for line in skipped:
        print(f"left out: {line}")
    unknown = set(holdout) - {p.name for p in points}
    if unknown:
        raise ValueError(f"--holdout: no finished run named {', '.join(sorted(unknown))}")
    fitted = [p for p in points if p.name not in holdout]
    if len(fitted) < 5:
        raise ValueError(f"{len(fitted)} finished runs to fit; 5 constants need at least 5 (better a dozen)")
    return fitted, [p for p in points if p.name in holdout]


def print_isoflop(points: list[RunPoint], result: dict) -> list:
    """Print the IsoFLOP minima and the power laws through them; store them in `result`."""
    minima = isoflop_minima(points)
    if not minima:
        print("IsoFLOP profiles: no budget has runs of three or more sizes with a minimum inside")
        return minima
    print("IsoFLOP minima (parabola in log N per budget):")
    for minimum in minima:
        print(
            f"  C {minimum.flops:.3g}: N_opt {minimum.optimal_params:.4g}, D_opt {minimum.optimal_tokens:.4g}, "
            f"loss {minimum.loss:.4f} ({minimum.runs} runs)"
        )
    result["isoflop_minima"] = [asdict(m) for m in minima]
    if len(minima) >= 2:
        flops = np.array([m.flops for m in minima])
        k_n, a = power_law(flops, np.array([m.optimal_params for m in minima]))
        k_d, b = power_law(flops, np.array([m.optimal_tokens for m in minima]))
        print(f"  N_opt = {k_n:.3g} C^{a:.3f}, D_opt = {k_d:.3g} C^{b:.3f}")
        result["isoflop_power_laws"] = {"params": [k_n, a], "tokens": [k_d, b]}
    return minima


def print_holdout(fit: ScalingFit, held_out: list[RunPoint], result: dict) -> None:
    """The fit's prediction for each held-out run against its measured loss."""
    rows = []
    for point in held_out:
        predicted = fit.loss(point.params, point.tokens)
        error = (predicted - point.loss) / point.loss
        print(
            f"held out {point.name}: N {point.params:.4g}, D {point.tokens:.4g}: predicted {predicted:.4f}, "
            f"measured {point.loss:.4f} ({error:+.1%})"
        )
        rows.append({**asdict(point), "predicted_loss": predicted, "relative_error": error})
    result["held_out"] = rows


def main(argv: list[str]) -> None:
    """Parse `argv` (`fit SWEEP_DIR... | --from_csv FILE`, `--budget`, `--output`, ...), fit and print."""
    parser = ArgumentParser(
        prog="lit-pretrain scaling", description="Fit L(N, D) = E + A/N^alpha + B/D^beta."
    )
    parser.add_argument("action", type=str, choices=["fit"], help="what to do")
    parser.add_argument("runs", type=str, nargs="*", help="a sweep's output_dir, or run directories")
    parser.add_argument(
        "--from_csv", type=str | None, default=None, help="a CSV with columns params,tokens,loss"
    )
    parser.add_argument(
        "--budget", type=float | None, default=None, help="training FLOPs to allocate (6 N D)"
    )
    parser.add_argument("--bootstrap", type=int, default=100, help="resamples for 95%% intervals (0: none)")
    parser.add_argument("--grid", type=str, default="full", choices=list(GRIDS), help="starting points")
    parser.add_argument(
        "--count", type=str, default="total", choices=list(PARAMETER_COUNTS), help="N of runs"
    )
    parser.add_argument(
        "--holdout", type=str, nargs="+", default=[], help="runs left out of the fit and predicted"
    )
    parser.add_argument("--plot", type=str | None, default=None, help="the PNG (default: RUNS/scaling.png)")
    parser.add_argument("--output", type=str | None, default=None, help="write the fit as JSON")
    options = parser.parse_args(argv)
    if bool(options.from_csv) == bool(options.runs):
        raise ValueError("pass either a sweep directory (or run directories) or --from_csv FILE")
    held_out: list[RunPoint] = []
    if options.from_csv:
        params, tokens, losses = read_points_csv(options.from_csv)
        source = options.from_csv
        points = [
            RunPoint(f"row {i + 2}", *values)
            for i, values in enumerate(zip(params, tokens, losses, strict=True))
        ]
    else:
        points, held_out = runs_to_fit(options.runs, options.count, options.holdout)
        params, tokens, losses = (
            np.array(column) for column in zip(*[(p.params, p.tokens, p.loss) for p in points], strict=True)
        )
        source = f"the runs in {', '.join(options.runs)} ({options.count} parameters)"
    fit = fit_scaling_law(params, tokens, losses, grid=GRIDS[options.grid])
    result: dict = asdict(fit)
    intervals = (
        bootstrap_intervals(params, tokens, losses, fit, options.bootstrap) if options.bootstrap else {}
    )
    print(f"L(N, D) = E + A / N^alpha + B / D^beta, fitted to {len(params)} points of {source}")
    for key, value in asdict(fit).items():
        low_high = (
            f"   95% interval [{intervals[key][0]:.4g}, {intervals[key][1]:.4g}]" if key in intervals else ""
        )
        print(f"  {key:<6}{value:>12.4g}{low_high}")
    if intervals:
        result["intervals_95"] = intervals
    minima = print_isoflop(points, result)
    if held_out:
        print_holdout(fit, held_out, result)
    if options.budget:
        optimal = fit.compute_optimal(options.budget)
        result |= optimal
        print(
            f"compute-optimal for {options.budget:.3g} FLOPs: {optimal['optimal_params']:.4g} parameters, "
            f"{optimal['optimal_tokens']:.4g} tokens, predicted loss {optimal['predicted_loss']:.4f}"
        )
    plot = options.plot or (None if options.from_csv else str(Path(options.runs[0]) / "scaling.png"))
    if plot:
        draw_scaling(points, fit, minima, Path(plot), held_out)
        print(f"wrote {plot}")
    if options.output:
        Path(options.output).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {options.output}")
