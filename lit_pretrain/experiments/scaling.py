"""Chinchilla scaling-law fits: L(N, D) = E + A / N^alpha + B / D^beta, and compute-optimal allocations.

Fitted as Hoffmann et al. (2022, appendix D.2) describe: the Huber loss (delta 1e-3) between the predicted
and the observed log-loss, with the prediction written as log-sum-exp(a - alpha log N, b - beta log D, e)
(A = exp(a), B = exp(b), E = exp(e)), minimised by L-BFGS from a grid of starting points; the best
minimum wins. Training FLOPs are taken as C = 6 N D.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lit_pretrain.experiments.sweep import RESULT_FILE, RUN_FILE, read_result

# The paper's grid of initialisations (alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1.5},
# a, b in {0, 5, ..., 25}); a coarser one keeps a fit under a second on a CPU.
GRID = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, 0.0, 1.0),
    "alpha": (0.0, 0.5, 1.0),
    "beta": (0.0, 0.5, 1.0),
}
# 16 starting points: seconds less, for quick looks and tests; the full grid guards against local minima.
SMALL_GRID = {"a": (5.0, 10.0), "b": (5.0, 10.0), "e": (0.0,), "alpha": (0.3, 0.6), "beta": (0.3, 0.6)}
GRIDS = {"full": GRID, "small": SMALL_GRID}


@dataclass(frozen=True)
class ScalingFit:
    """The fitted constants of L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: float, tokens: float) -> float:
        """The predicted loss of a model with `params` parameters trained on `tokens` tokens."""
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    def compute_optimal(self, flops: float) -> dict[str, float]:
        """Parameters and tokens that minimise the loss for `flops` = 6 N D, and that loss (closed form)."""
        a, b = self.beta / (self.alpha + self.beta), self.alpha / (self.alpha + self.beta)
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))
        params, tokens = g * (flops / 6) ** a, (flops / 6) ** b / g
        return {
            "optimal_params": params,
            "optimal_tokens": tokens,
            "predicted_loss": self.loss(params, tokens),
        }


def read_points_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`params,tokens,loss` rows of a CSV file (a header naming those columns, any order, other columns ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}")
    rows = []
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        missing = {"params", "tokens", "loss"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: the header lacks column(s) {', '.join(sorted(missing))} (need params,tokens,loss)"
            )
        for line, row in enumerate(reader, start=2):
            try:
                values = tuple(float(row[key]) for key in ("params", "tokens", "loss"))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path}:{line}: params, tokens and loss must be numbers, got {row}"
                ) from None
            if min(values) <= 0:
                raise ValueError(f"{path}:{line}: params, tokens and loss must be positive, got {row}")
            rows.append(values)
    if len(rows) < 5:
        raise ValueError(f"{path}: {len(rows)} points; fitting 5 constants needs at least 5 (better dozens)")
    params, tokens, losses = (np.array(column) for column in zip(*rows, strict=True))
    return params, tokens, losses


def _objective(
    theta: torch.Tensor, log_n: torch.Tensor, log_d: torch.Tensor, log_l: torch.Tensor, delta: float
):
    a, b, e, alpha, beta = theta
    predicted = torch.logsumexp(torch.stack([a - alpha * log_n, b - beta * log_d, e.expand_as(log_n)]), dim=0)
    return torch.nn.functional.huber_loss(predicted, log_l, delta=delta, reduction="sum")


def _minimise(start: tuple[float, ...], log_n, log_d, log_l, delta: float) -> tuple[float, torch.Tensor]:
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [theta], max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = _objective(theta, log_n, log_d, log_l, delta)
        value.backward()
        return value

    optimizer.step(closure)
    with torch.no_grad():
        value = float(_objective(theta, log_n, log_d, log_l, delta))
    return value, theta.detach()


def fit_scaling_law(
    params: np.ndarray, tokens: np.ndarray, losses: np.ndarray, delta: float = 1e-3, grid: dict | None = None
) -> ScalingFit:
    """The Chinchilla fit of the points: the best L-BFGS minimum over the grid of starting points."""
    log_n, log_d, log_l = (torch.tensor(np.log(x), dtype=torch.float64) for x in (params, tokens, losses))
    grid = grid or GRID
    best_value, best = math.inf, None
    for start in itertools.product(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"]):
        value, theta = _minimise(start, log_n, log_d, log_l, delta)
        if math.isfinite(value) and value < best_value:
            best_value, best = value, theta
    if best is None:
        raise ValueError("the fit did not converge from any starting point")
    a, b, e, alpha, beta = best.tolist()
    return ScalingFit(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)


def bootstrap_intervals(
    params: np.ndarray,
    tokens: np.ndarray,
    losses: np.ndarray,
    fit: ScalingFit,
    samples: int = 100,
    seed: int = 0,
    delta: float = 1e-3,
) -> dict[str, tuple[float, float]]:
    """95% percentile intervals of each constant over fits to resampled points (each started at `fit`)."""
    rng = np.random.default_rng(seed)
    start = {
        "a": (math.log(fit.A),),
        "b": (math.log(fit.B),),
        "e": (math.log(fit.E),),
        "alpha": (fit.alpha,),
        "beta": (fit.beta,),
    }
    draws = []
    for _ in range(samples):
        pick = rng.integers(0, len(params), len(params))
        draws.append(asdict(fit_scaling_law(params[pick], tokens[pick], losses[pick], delta, grid=start)))
    return {
        key: (
            float(np.percentile([d[key] for d in draws], 2.5)),
            float(np.percentile([d[key] for d in draws], 97.5)),
        )
        for key in draws[0]
    }


# --- points from runs, IsoFLOP profiles, plots ------------------------------------------------------------

PARAMETER_COUNTS = ("total", "non_embedding")
# Runs whose budgets (6 N D) are within this factor of each other form one IsoFLOP profile.
ISOFLOP_TOLERANCE = 1.25


@dataclass(frozen=True)
class RunPoint:
    """One finished run as a point of the fit: its size, tokens and final validation loss."""

    name: str
    params: float
    tokens: float
    loss: float
    budget: float | None = None  # the FLOPs budget the sweep planned the run for, if it was one

    @property
    def flops(self) -> float:
        """Training FLOPs as the fit counts them, 6 N D."""
        return 6.0 * self.params * self.tokens


@dataclass(frozen=True)
class IsoFlopMinimum:
    """The bottom of one IsoFLOP profile: a parabola in log N fitted to the runs of one budget."""

    flops: float
    optimal_params: float
    optimal_tokens: float
    loss: float
    runs: int


def points_from_runs(run_dirs: list[Path], count: str = "total") -> tuple[list[RunPoint], list[str]]:
    """The finished runs' (parameters, tokens seen, final val loss), and a line per run left out and why.

    Read from each run's `result.json` (written by `fit`): `count` "non_embedding" uses the parameters
    without the embedding table (Kaplan et al.), "total" all of them (Hoffmann et al.). A run of a sweep with
    `flops_budgets` carries its planned budget, which groups the IsoFLOP profiles.
    """
    if count not in PARAMETER_COUNTS:
        raise ValueError(f"parameter count must be one of {PARAMETER_COUNTS}, got {count!r}")
    points, skipped = [], []
    for run_dir in run_dirs:
        result = read_result(run_dir) or {}
        params = result.get("parameters" if count == "total" else "parameters_without_embedding")
        if result.get("status") != "finished":
            status = result.get("status", "no readable result.json")
            skipped.append(f"{run_dir.name}: not finished ({status})")
        elif result.get("val/loss") is None or not params:
            skipped.append(f"{run_dir.name}: its {RESULT_FILE} has no val/loss or parameter count")
        else:
            points.append(
                RunPoint(
                    run_dir.name,
                    float(params),
                    float(result["tokens_seen"]),
                    float(result["val/loss"]),
                    planned_budget(run_dir),
                )
            )
    return points, skipped


def isoflop_groups(points: list[RunPoint], tolerance: float = ISOFLOP_TOLERANCE) -> list[list[RunPoint]]:
    """The points grouped by budget: by the planned budget where every point has one, otherwise sorted by
    6 N D, a new group wherever the next is `tolerance` x larger than the group's first."""
    if points and all(p.budget is not None for p in points):
        budgets = sorted({p.budget for p in points})
        return [[p for p in points if p.budget == budget] for budget in budgets]
    groups: list[list[RunPoint]] = []
    for point in sorted(points, key=lambda p: p.flops):
        if groups and point.flops <= groups[-1][0].flops * tolerance:
            groups[-1].append(point)
        else:
            groups.append([point])
    return groups


def isoflop_minima(points: list[RunPoint]) -> list[IsoFlopMinimum]:
    """Per budget with at least three model sizes: the loss-minimising size from a parabola in log N
    (Hoffmann et al.'s approach 2), through the best run of each size (a sweep that also varies, say, the
    learning rate has several). Profiles whose parabola opens downwards, or whose vertex lies outside the
    sizes run, have no minimum there and are left out."""
    minima = []
    for group in isoflop_groups(points):
        best: dict[float, RunPoint] = {}
        for point in group:
            if point.params not in best or point.loss < best[point.params].loss:
                best[point.params] = point
        if len(best) < 3:
            continue
        log_n = np.log(list(best))
        losses = np.array([p.loss for p in best.values()])
        curvature, slope, intercept = np.polyfit(log_n, losses, 2)
        if curvature <= 0:
            continue
        best_log_n = -slope / (2 * curvature)
        if not log_n.min() <= best_log_n <= log_n.max():
            continue
        flops = float(np.exp(np.mean(np.log([p.flops for p in best.values()]))))
        params = float(np.exp(best_log_n))
        minima.append(
            IsoFlopMinimum(
                flops=flops,
                optimal_params=params,
                optimal_tokens=flops / (6 * params),
                loss=float(np.polyval([curvature, slope, intercept], best_log_n)),
                runs=len(group),
            )
        )
    return minima


def planned_budget(run_dir: Path) -> float | None:
    """The FLOPs budget a sweep gave the run in `run_dir` (its `sweep_run.json`), or None."""
    import json

    record = run_dir / RUN_FILE
    if not record.is_file():
        return None
    budget = json.loads(record.read_text()).get("flops_budget")
    return None if budget is None else float(budget)


def power_law(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(k, exponent) of y = k x^exponent, by least squares in log-log."""
    exponent, log_k = np.polyfit(np.log(x), np.log(y), 1)
    return float(math.exp(log_k)), float(exponent)


def draw_scaling(
    points: list[RunPoint],
    fit: ScalingFit,
    minima: list[IsoFlopMinimum],
    path: Path,
    held_out: list[RunPoint] | None = None,
) -> Path:
    """IsoFLOP profiles (data, the fitted law along each budget, the parabolas' minima) and predicted
    against measured loss, as one PNG."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    held_out = held_out or []
    with matplotlib.rc_context({"axes.titlesize": "medium"}):
        fig = Figure(figsize=(13, 5), dpi=110, layout="constrained")
        FigureCanvasAgg(fig)
        profiles, parity = fig.subplots(1, 2)
        for index, group in enumerate(isoflop_groups(points)):
            color = f"C{index % 10}"
            flops = float(np.exp(np.mean(np.log([p.flops for p in group]))))
            params = np.array([p.params for p in group])
            profiles.scatter(params, [p.loss for p in group], color=color, zorder=3, label=f"C = {flops:.2g}")
            grid = np.geomspace(params.min() / 1.5, params.max() * 1.5, 100)
            profiles.plot(grid, [fit.loss(n, flops / (6 * n)) for n in grid], color=color, alpha=0.7)
        for minimum in minima:
            profiles.scatter(minimum.optimal_params, minimum.loss, marker="*", s=160, color="k", zorder=4)
        for point in held_out:
            profiles.scatter(point.params, point.loss, marker="D", s=60, color="red", zorder=5)
            profiles.annotate(f"held out: {point.name}", (point.params, point.loss), fontsize="small")
        profiles.set_xscale("log")
        profiles.set_xlabel("parameters N")
        profiles.set_ylabel("final validation loss")
        profiles.set_title("IsoFLOP profiles: runs (dots), fitted law (lines), minima (stars)")
        profiles.grid(True, alpha=0.3)
        profiles.legend(fontsize="small", title="budget 6ND")
        measured = np.array([p.loss for p in points])
        predicted = np.array([fit.loss(p.params, p.tokens) for p in points])
        parity.scatter(measured, predicted, label="fitted runs")
        if held_out:
            parity.scatter(
                [p.loss for p in held_out],
                [fit.loss(p.params, p.tokens) for p in held_out],
                marker="D",
                color="red",
                label="held out",
            )
        everything = np.concatenate([measured, predicted, [p.loss for p in held_out]])
        low, high = everything.min(), everything.max()
        parity.plot([low, high], [low, high], color="k", linewidth=0.8, label="predicted = measured")
        parity.set_xlabel("measured loss")
        parity.set_ylabel("predicted loss")
        parity.set_title(f"L = {fit.E:.3g} + {fit.A:.3g}/N^{fit.alpha:.3g} + {fit.B:.3g}/D^{fit.beta:.3g}")
        parity.grid(True, alpha=0.3)
        parity.legend(fontsize="small")
        fig.savefig(path)
    return path
