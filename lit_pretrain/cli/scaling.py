"""`lit-pretrain scaling fit`: Chinchilla scaling-law constants from measured runs (the work is experiments/scaling.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from jsonargparse import ArgumentParser

from lit_pretrain.experiments.scaling import GRIDS, bootstrap_intervals, fit_scaling_law, read_points_csv


def main(argv: list[str]) -> None:
    """Parse `argv` (`fit --from_csv FILE [--budget FLOPS] [--output FILE]`), fit and print the constants."""
    parser = ArgumentParser(
        prog="lit-pretrain scaling", description="Fit L(N, D) = E + A/N^alpha + B/D^beta."
    )
    parser.add_argument("action", type=str, choices=["fit"], help="what to do")
    parser.add_argument("sweep_dir", type=str | None, default=None, nargs="?", help="a sweep's directory")
    parser.add_argument(
        "--from_csv", type=str | None, default=None, help="a CSV with columns params,tokens,loss"
    )
    parser.add_argument(
        "--budget", type=float | None, default=None, help="training FLOPs to allocate (6 N D)"
    )
    parser.add_argument("--bootstrap", type=int, default=100, help="resamples for 95%% intervals (0: none)")
    parser.add_argument("--grid", type=str, default="full", choices=list(GRIDS), help="starting points")
    parser.add_argument("--output", type=str | None, default=None, help="write the fit as JSON")
    options = parser.parse_args(argv)
    if options.from_csv is None:
        raise ValueError(
            "fitting a sweep directory needs `lit-pretrain sweep`, which is not built yet: pass --from_csv FILE "
            "with columns params,tokens,loss (for example the final losses of your runs)"
        )
    params, tokens, losses = read_points_csv(options.from_csv)
    fit = fit_scaling_law(params, tokens, losses, grid=GRIDS[options.grid])
    result: dict = asdict(fit)
    intervals = (
        bootstrap_intervals(params, tokens, losses, fit, options.bootstrap) if options.bootstrap else {}
    )
    print(f"L(N, D) = E + A / N^alpha + B / D^beta, fitted to {len(params)} points of {options.from_csv}")
    for key, value in asdict(fit).items():
        low_high = (
            f"   95% interval [{intervals[key][0]:.4g}, {intervals[key][1]:.4g}]" if key in intervals else ""
        )
        print(f"  {key:<6}{value:>12.4g}{low_high}")
    if intervals:
        result["intervals_95"] = intervals
    if options.budget:
        optimal = fit.compute_optimal(options.budget)
        result |= optimal
        print(
            f"compute-optimal for {options.budget:.3g} FLOPs: {optimal['optimal_params']:.4g} parameters, "
            f"{optimal['optimal_tokens']:.4g} tokens, predicted loss {optimal['predicted_loss']:.4f}"
        )
    if options.output:
        Path(options.output).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {options.output}")
