"""Ranking metrics of the unbiased-recommendation protocol, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.recommendation import mean_metrics, user_metrics


def test_hand_computed_user() -> None:
    # Ranked by score: items 0, 1, 2, 3; the positives (items 1 and 2) sit at ranks 2 and 3.
    metrics = user_metrics(np.array([0.9, 0.8, 0.7, 0.1]), np.array([0.0, 1.0, 1.0, 0.0]))
    dcg3 = 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics["DCG@1"] == 0.0
    assert metrics["DCG@3"] == pytest.approx(dcg3)
    assert metrics["DCG@5"] == pytest.approx(dcg3)
    assert (metrics["Recall@1"], metrics["Recall@3"], metrics["Recall@5"]) == (0.0, 1.0, 1.0)
    # Precision at the hit ranks: 1/2 and 2/3, divided by min(K, 2 positives).
    assert metrics["MAP@1"] == 0.0
    assert metrics["MAP@3"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert metrics["MAP@5"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_order_is_by_score_not_by_input() -> None:
    metrics = user_metrics(np.array([0.1, 0.2, 0.9]), np.array([0.0, 0.0, 1.0]), cutoffs=(1,))
    assert metrics == {"DCG@1": 1.0, "Recall@1": 1.0, "MAP@1": 1.0}


def test_ties_keep_input_order() -> None:
    # A constant scorer must not be credited with an optimistic tie-break.
    metrics = user_metrics(np.zeros(3), np.array([0.0, 0.0, 1.0]), cutoffs=(1, 3))
    assert metrics["DCG@1"] == 0.0
    assert metrics["DCG@3"] == pytest.approx(1 / math.log2(4))
    assert metrics["MAP@3"] == pytest.approx(1 / 3)


def test_weighted_gains_give_ips_dcg_and_weighted_recall() -> None:
    metrics = user_metrics(np.array([3.0, 2.0, 1.0]), np.array([2.0, 0.0, 1.0]), cutoffs=(1, 3))
    assert metrics["DCG@1"] == pytest.approx(2.0)
    assert metrics["DCG@3"] == pytest.approx(2.0 + 1 / math.log2(4))
    assert metrics["Recall@1"] == pytest.approx(2 / 3)
    assert metrics["MAP@3"] == pytest.approx((1 + 2 / 3) / 2)  # MAP counts hits only


def test_mean_skips_users_without_positives() -> None:
    users = [
        (np.array([0.9, 0.1]), np.array([1.0, 0.0])),  # hit at rank 1
        (np.array([0.9, 0.1]), np.array([0.0, 1.0])),  # hit at rank 2
        (np.array([0.5, 0.4]), np.array([0.0, 0.0])),  # no positive: skipped
    ]
    metrics = mean_metrics(users, cutoffs=(1, 2))
    assert metrics["users"] == 2 and metrics["skipped_users"] == 1
    assert metrics["Recall@1"] == pytest.approx(0.5)
    assert metrics["DCG@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert metrics["MAP@2"] == pytest.approx((1 + 1 / 2) / 2)


@pytest.mark.parametrize(
    ("scores", "gains", "message"),
    [
        (np.array([1.0, 2.0]), np.array([1.0]), "one length"),
        (np.array([1.0, np.nan]), np.array([1.0, 0.0]), "finite"),
        (np.array([1.0, 2.0]), np.array([1.0, -1.0]), "non-negative"),
        (np.array([1.0, 2.0]), np.array([0.0, 0.0]), "no positive"),
    ],
)
def test_bad_input_is_a_clear_error(scores: np.ndarray, gains: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        user_metrics(scores, gains)


def test_no_user_with_a_positive_is_an_error() -> None:
    with pytest.raises(ValueError, match="undefined"):
        mean_metrics([(np.array([1.0]), np.array([0.0]))])
