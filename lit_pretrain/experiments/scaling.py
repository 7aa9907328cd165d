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
