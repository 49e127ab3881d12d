"""Judged and counterfactual metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from clickloop.metrics import evaluate, ips_clicks_at_k, observed_clicks_at_k


def test_judged_metrics_match_hand_computation_and_count_missing_queries_as_zero():
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 2}}
    run = {"q1": {"x": 3.0, "a": 2.0, "b": 1.0}}  # q2 missing from the run
    ideal = 1 + 1 / math.log2(3)
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(4)) / ideal
    result = evaluate(qrels, run, ["nDCG@10", "RR@10", "R@100"])
    assert result["nDCG@10"] == pytest.approx(ndcg_q1 / 2)
    assert result["RR@10"] == pytest.approx(0.5 / 2)
    assert result["R@100"] == pytest.approx(0.5)


def test_judged_metrics_need_judgments():
    with pytest.raises(ValueError, match="no judgments"):
        evaluate({}, {"q": {"a": 1.0}})


def _simulate_pbm(
    theta: np.ndarray, relevance: dict[str, float], ranking: list[str], n: int, seed: int
) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        for pos, doc in enumerate(ranking, start=1):
            clicked = bool(rng.random() < theta[pos - 1] * relevance[doc])
            rows.append((f"s{i}", "query", doc, pos, clicked))
    return pl.DataFrame(rows, schema=["query_id", "user_query", "doc_id", "position", "clicked"], orient="row")


def test_ips_estimate_recovers_the_clicks_of_another_ranking():
    theta = np.array([1.0, 0.6, 0.3])
    relevance = {"a": 0.1, "b": 0.3, "c": 0.9}
    logged = _simulate_pbm(theta, relevance, ["a", "b", "c"], n=20000, seed=1)
    target = ["c", "b", "a"]
    truth = sum(theta[i] * relevance[d] for i, d in enumerate(target))
    estimate = ips_clicks_at_k(logged, {"query": target}, theta, k=3)
    assert abs(estimate.value - truth) < 4 * estimate.stderr
    assert estimate.coverage == 1.0
    # The naive logged click count is far from the target's value: the estimate corrected that.
    assert abs(observed_clicks_at_k(logged, 3).value - truth) > 10 * estimate.stderr


def test_ips_estimate_of_the_logging_ranking_equals_its_observed_clicks():
    theta = np.array([1.0, 0.5])
    logged = _simulate_pbm(theta, {"a": 0.5, "b": 0.5}, ["a", "b"], n=500, seed=2)
    estimate = ips_clicks_at_k(logged, {"query": ["a", "b"]}, theta, k=2)
    assert estimate.value == pytest.approx(observed_clicks_at_k(logged, 2).value)


def test_ips_estimate_rejects_bad_propensities_and_empty_logs():
    logged = _simulate_pbm(np.array([1.0]), {"a": 0.5}, ["a"], n=10, seed=3)
    with pytest.raises(ValueError, match="positive"):
        ips_clicks_at_k(logged, {"query": ["a"]}, [0.0])
    with pytest.raises(ValueError, match="no logged results"):
        ips_clicks_at_k(logged.clear(), {"query": ["a"]}, [1.0])
