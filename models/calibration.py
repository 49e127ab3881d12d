"""Monotone, position-aware Platt calibration of a score into a probability.

The observed outcome at position p is modelled as theta_p * sigmoid(scale * score + shift), with
theta the examination curve. The scale is constrained to be >= 0, so calibration can rescale and
shift the model's scores but never reverse their order: a calibration slice on which the model
ranks no better than chance (or worse) never yields a negative one. The log-likelihood is
concave in (scale, shift), so the constrained optimum is the unconstrained one when that has
scale > 0, and otherwise lies at scale 0: a constant, which would erase the model's ranking.

Where the slice is too small to trust (too few distinct queries or too few positive outcomes),
or the constrained fit lands at scale 0 (the slice does not support the model's ranking), the
calibration falls back to the identity (scale 1, shift 0: the model's own probabilities) and
records why, so the reward keeps the model's ranking instead of collapsing to a constant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

IDENTITY = (1.0, 0.0)


@dataclass
class CalibrationConfig:
    min_queries: int = 30  # distinct queries the calibration slice needs, else identity
    min_positives: int = 30  # positive outcomes (loves) the slice needs, else identity
    min_scale: float = 1e-3  # a fitted scale below this counts as 0: identity, with the reason

    def __post_init__(self) -> None:
        if self.min_queries < 1 or self.min_positives < 1 or self.min_scale < 0:
            raise ValueError("min_queries and min_positives must be >= 1, min_scale >= 0")


@dataclass(frozen=True)
class Calibration:
    """What was fitted: `scale` >= 0 and `shift`, the method (`platt` or `identity`) and why."""

    scale: float
    shift: float
    method: str
    reason: str
    n: int
    n_queries: int
    n_positives: int
    unconstrained_scale: float | None = None  # the scale an unconstrained fit gave (None: not fitted)

    def __post_init__(self) -> None:
        if self.scale < 0:
            raise ValueError(f"a monotone calibration has scale >= 0; got {self.scale}")

    @property
    def platt(self) -> tuple[float, float]:
        return (self.scale, self.shift)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_monotone_platt(
    score: np.ndarray,
    outcome: np.ndarray,
    theta: np.ndarray,
    n_queries: int,
    config: CalibrationConfig | None = None,
) -> Calibration:
    """Fit P(outcome) = theta * sigmoid(scale * score + shift) with scale >= 0.

    `score` is the model's logit per row, `outcome` 0/1, `theta` the row's examination
    probability (ones without position bias), `n_queries` how many distinct queries the rows hold.
    """
    config = config or CalibrationConfig()
    score, outcome, theta = (np.asarray(a, dtype=np.float64) for a in (score, outcome, theta))
    if not score.shape == outcome.shape == theta.shape or score.ndim != 1:
        raise ValueError("score, outcome and theta must be 1-d arrays of the same length")
    n, positives = len(score), int(outcome.sum())
    sizes = {"n": n, "n_queries": int(n_queries), "n_positives": positives}
    if not 0 < positives < n:
        raise ValueError("the calibration slice needs both loved and not-loved results")
    if n_queries < config.min_queries or positives < config.min_positives:
        reason = (
            f"calibration slice too small ({n_queries} queries, {positives} positives; needs "
            f">= {config.min_queries} and >= {config.min_positives}): the model's own probabilities"
        )
        return Calibration(*IDENTITY, "identity", reason, **sizes)
    free = _fit(score, outcome, theta)
    if free[0] >= config.min_scale:
        return Calibration(free[0], free[1], "platt", "fitted, scale >= 0", **sizes, unconstrained_scale=free[0])
    reason = (
        f"the unconstrained fit gave scale {free[0]:.4g} (< {config.min_scale}): on this slice the model ranks "
        "no better than chance, so its ordering is kept, uncalibrated"
    )
    return Calibration(*IDENTITY, "identity", reason, **sizes, unconstrained_scale=free[0])


def _fit(score: np.ndarray, outcome: np.ndarray, theta: np.ndarray) -> tuple[float, float]:
    """Unconstrained maximum-likelihood (scale, shift) by L-BFGS."""
    s, y, t = (torch.as_tensor(a, dtype=torch.float64) for a in (score, outcome, theta))
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        observed = (t * torch.sigmoid(params[0] * s + params[1])).clamp(1e-9, 1 - 1e-9)
        loss = torch.nn.functional.binary_cross_entropy(observed, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    scale, shift = params.detach().tolist()
    return scale, shift
