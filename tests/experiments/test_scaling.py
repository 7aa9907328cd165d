"""Chinchilla scaling-law fits: recovery of known constants, compute-optimal sizes, CSV input, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lit_pretrain.cli import main
from lit_pretrain.experiments.scaling import (
    SMALL_GRID,
    RunPoint,
    ScalingFit,
    fit_scaling_law,
    isoflop_groups,
    isoflop_minima,
    power_law,
    read_points_csv,
)

# Hoffmann et al. (2022), approach 3.
CHINCHILLA = ScalingFit(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def _points(noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    params = np.repeat([1e7, 3e7, 1e8, 3e8, 1e9, 3e9], 5)
    tokens = np.tile([1e9, 3e9, 1e10, 3e10, 1e11], 6)
    losses = np.array([CHINCHILLA.loss(n, d) for n, d in zip(params, tokens, strict=True)])
    return params, tokens, losses * np.exp(np.random.default_rng(seed).normal(0, noise, len(losses)))


def test_the_fit_recovers_the_constants_that_made_the_points():
    fit = fit_scaling_law(*_points(), grid=SMALL_GRID)
    for key in ("E", "A", "B", "alpha", "beta"):
        assert getattr(fit, key) == pytest.approx(getattr(CHINCHILLA, key), rel=1e-4), key


def test_compute_optimal_is_the_minimum_of_the_iso_flop_curve():
    flops = 5.76e23  # Chinchilla's own budget
    optimal = CHINCHILLA.compute_optimal(flops)
    params = np.geomspace(1e9, 1e12, 200_001)
    losses = (
        CHINCHILLA.E
        + CHINCHILLA.A / params**CHINCHILLA.alpha
        + CHINCHILLA.B / (flops / 6 / params) ** CHINCHILLA.beta
    )
    assert optimal["optimal_params"] == pytest.approx(params[losses.argmin()], rel=1e-3)
    assert optimal["optimal_tokens"] * optimal["optimal_params"] * 6 == pytest.approx(flops)
    assert optimal["predicted_loss"] == pytest.approx(losses.min(), rel=1e-9)


def _write_csv(path: Path, params, tokens, losses) -> Path:
    lines = ["run,params,tokens,loss"] + [
        f"r{i},{n},{d},{loss}" for i, (n, d, loss) in enumerate(zip(params, tokens, losses, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_cli_fits_a_csv_and_writes_the_json_the_issue_names(tmp_path: Path, capsys):
    csv = _write_csv(tmp_path / "runs.csv", *_points(noise=0.01))
    output = tmp_path / "fit.json"
    main(
        [
            "scaling",
            "fit",
            "--from_csv",
            str(csv),
            "--budget",
            "1e21",
            "--output",
            str(output),
            "--grid",
            "small",
            "--bootstrap",
            "20",
        ]
    )
    result = json.loads(output.read_text())
    assert {"E", "A", "B", "alpha", "beta", "optimal_params", "optimal_tokens", "predicted_loss"} <= set(
        result
    )
    assert result["alpha"] == pytest.approx(0.34, abs=0.05) and result["beta"] == pytest.approx(
        0.28, abs=0.05
    )
    low, high = result["intervals_95"]["alpha"]
    assert low <= result["alpha"] <= high
    assert result["optimal_params"] * result["optimal_tokens"] * 6 == pytest.approx(1e21)
    assert "compute-optimal for 1e+21 FLOPs" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [
        ("params,tokens\n1,2\n", "lacks column\\(s\\) loss"),
        (
            "params,tokens,loss\n1e6,1e9,3.2\n1e6,oops,3.1\n",
            r"runs.csv:3: params, tokens and loss must be numbers",
        ),
        ("params,tokens,loss\n1e6,1e9,-1\n", r"runs.csv:2: .* must be positive"),
        ("params,tokens,loss\n1e6,1e9,3.2\n", "1 points; fitting 5 constants needs at least 5"),
    ],
)
def test_bad_csv_files_are_refused_naming_the_line(tmp_path: Path, content: str, message: str):
    path = tmp_path / "runs.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_points_csv(path)


def test_a_directory_without_runs_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SystemExit, match="lit-pretrain scaling: error: .* holds no training run"):
        main(["scaling", "fit", str(tmp_path)])


def test_either_runs_or_a_csv_is_needed(tmp_path: Path):
    with pytest.raises(SystemExit, match="pass either a sweep directory"):
        main(["scaling", "fit"])


def _isoflop_points(budgets, noise: float = 0.0) -> list[RunPoint]:
    rng = np.random.default_rng(1)
    points = []
    for flops in budgets:
        optimum = CHINCHILLA.compute_optimal(flops)["optimal_params"]
        for factor in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8):
            params = optimum * factor
            tokens = flops / (6 * params)
            loss = CHINCHILLA.loss(params, tokens) * math.exp(rng.normal(0, noise))
            points.append(RunPoint(f"{flops:.0e}-{factor}", params, tokens, loss))
    return points


def test_isoflop_minima_of_points_from_a_known_law_land_on_its_optimum():
    budgets = (1e19, 1e20, 1e21)
    minima = isoflop_minima(_isoflop_points(budgets))
    assert [m.runs for m in minima] == [7, 7, 7]
    for minimum, flops in zip(minima, budgets, strict=True):
        optimal = CHINCHILLA.compute_optimal(flops)
        assert minimum.flops == pytest.approx(flops)
        # A parabola in log N approximates the profile: within 10% of the true optimum over 64x in N.
        assert minimum.optimal_params == pytest.approx(optimal["optimal_params"], rel=0.1)
        assert minimum.loss == pytest.approx(optimal["predicted_loss"], rel=2e-3)
        assert minimum.optimal_tokens * minimum.optimal_params * 6 == pytest.approx(flops)
    _, exponent = power_law(np.array(budgets), np.array([m.optimal_params for m in minima]))
    alpha, beta = CHINCHILLA.alpha, CHINCHILLA.beta
    assert exponent == pytest.approx(beta / (alpha + beta), abs=0.01)


def test_points_group_into_profiles_by_budget_and_profiles_without_a_minimum_are_left_out():
    points = _isoflop_points((1e19, 1e21))
    assert [len(group) for group in isoflop_groups(points)] == [7, 7]
    # Only the larger half of the sizes: loss falls all the way, the parabola has no minimum inside.
    falling = [RunPoint(f"p{i}", 1e6 * 2**i, 1e9 / 2**i, 5.0 - 0.1 * i * i) for i in range(4)]
    assert isoflop_minima(falling) == []


def test_the_fit_recovers_the_law_within_the_noise_of_an_isoflop_design():
    points = _isoflop_points((1e18, 1e19, 1e20, 1e21), noise=0.005)
    params, tokens, losses = (
        np.array(column) for column in zip(*[(p.params, p.tokens, p.loss) for p in points], strict=True)
    )
    fit = fit_scaling_law(params, tokens, losses, grid=SMALL_GRID)
    big = CHINCHILLA.compute_optimal(1e23)
    # Extrapolated 100x beyond the largest budget, the predicted loss is within 1%.
    assert fit.loss(big["optimal_params"], big["optimal_tokens"]) == pytest.approx(
        big["predicted_loss"], rel=0.01
    )


def test_isoflop_profiles_take_the_best_run_of_each_size_and_group_by_the_planned_budget():
    points = _isoflop_points((1e19, 1e20))
    # A worse run of every size (another learning rate, say), and budgets that 6 N D alone would split.
    worse = [RunPoint(p.name + "-lr", p.params, p.tokens, p.loss + 0.5, p.budget) for p in points]
    planned = [
        RunPoint(p.name, p.params, p.tokens * (1.3 if i % 2 else 1.0), p.loss, budget)
        for i, (p, budget) in enumerate(
            (p, 1e19 if p.name.startswith("1e+19") else 1e20) for p in points + worse
        )
    ]
    assert [len(group) for group in isoflop_groups(planned)] == [14, 14]
    minima = isoflop_minima(planned)
    assert [m.runs for m in minima] == [14, 14]
    assert minima[0].optimal_params == pytest.approx(isoflop_minima(points)[0].optimal_params, rel=0.2)


def test_a_profile_whose_minimum_lies_beyond_the_sizes_run_has_none():
    # Convex but still falling at the largest size: the vertex is an extrapolation, not a measurement.
    falling = [RunPoint(f"p{i}", 1e6 * 2**i, 1e9 / 2**i, 5.0 - 0.3 * i + 0.01 * i * i) for i in range(4)]
    assert isoflop_minima(falling) == []
