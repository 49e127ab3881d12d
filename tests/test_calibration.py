"""Monotone position-aware Platt calibration (models/calibration.py): it can rescale a model's
scores but never invert them, and it keeps the model's own probabilities, with the reason,
where the calibration slice cannot support a fit."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import Calibration, CalibrationConfig, fit_monotone_platt


def _slice(n: int, scale: float, shift: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, outcomes drawn from theta * sigmoid(scale * score + shift), and theta by position."""
    rng = np.random.default_rng(seed)
    score = rng.normal(0.0, 1.5, n)
    theta = np.array([1.0, 0.7, 0.5, 0.35, 0.25])[rng.integers(0, 5, n)]
    outcome = rng.random(n) < theta / (1 + np.exp(-(scale * score + shift)))
    return score, outcome.astype(float), theta


def test_recovers_a_known_positive_scale_and_shift():
    score, outcome, theta = _slice(40_000, scale=0.8, shift=-1.0)
    fitted = fit_monotone_platt(score, outcome, theta, n_queries=500)
    assert fitted.method == "platt"
    assert fitted.scale == pytest.approx(0.8, abs=0.08)
    assert fitted.shift == pytest.approx(-1.0, abs=0.1)


def test_a_slice_that_would_have_inverted_the_model_keeps_its_order():
    """The failure seen on another collection: on the calibration slice the model's scores run
    against the loves, so an unconstrained Platt fit takes a negative scale and inverts the reward."""
    score, outcome, theta = _slice(20_000, scale=-0.6, shift=-1.5, seed=1)
    fitted = fit_monotone_platt(score, outcome, theta, n_queries=200)
    assert fitted.unconstrained_scale is not None and fitted.unconstrained_scale < -0.3  # it would have inverted
    assert fitted.scale >= 0
    assert fitted.method == "identity" and "no better than chance" in fitted.reason
    calibrated = 1 / (1 + np.exp(-(fitted.scale * score + fitted.shift)))
    assert (np.diff(calibrated[np.argsort(score)]) >= 0).all()  # monotone non-decreasing in the score


def test_a_slice_of_pure_noise_never_gives_a_negative_scale():
    rng = np.random.default_rng(2)
    for seed in range(5):
        score, _, theta = _slice(3_000, scale=1.0, shift=-1.0, seed=seed)
        outcome = (rng.random(len(score)) < 0.1).astype(float)  # unrelated to the score
        assert fit_monotone_platt(score, outcome, theta, n_queries=100).scale >= 0


def test_a_small_slice_keeps_the_model_probabilities_with_the_reason():
    score, outcome, theta = _slice(5_000, scale=1.0, shift=-1.0)
    few_queries = fit_monotone_platt(score, outcome, theta, n_queries=12)
    assert few_queries.platt == (1.0, 0.0) and few_queries.method == "identity"
    assert "12 queries" in few_queries.reason and few_queries.unconstrained_scale is None
    config = CalibrationConfig(min_queries=1, min_positives=10_000)
    assert fit_monotone_platt(score, outcome, theta, 500, config).method == "identity"


def test_needs_both_outcomes_and_rejects_a_negative_scale():
    score, outcome, theta = _slice(1_000, scale=1.0, shift=-1.0)
    with pytest.raises(ValueError, match="both"):
        fit_monotone_platt(score, np.zeros_like(outcome), theta, 100)
    with pytest.raises(ValueError, match="scale >= 0"):
        Calibration(-0.5, 0.0, "platt", "", 10, 10, 1)
