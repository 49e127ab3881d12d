"""Relevance labels: IPS exact on a hand-made log and unbiased where the naive click rate is not;
the beta-binomial posterior honest about pairs that were hardly examined."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from models.propensity import (
    PropensityConfig,
    PropensityCurve,
    PropensityError,
    estimate_propensities,
    normalized_query,
)
from models.relevance_labels import LABEL_COLUMNS, LabelConfig, fit_beta_prior, relevance_labels, write_labels
from tests.test_propensity_estimators import EXAMINATION, simulate_pbm_results

TRUE_CURVE = PropensityCurve(relative=tuple(EXAMINATION / EXAMINATION[0]), estimator="truth", n_results=0)


def hand_log() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_query": ["Cats", " cats ", "cats", "dogs"],
            "doc_id": ["a", "a", "a", "b"],
            "position": [1, 2, 4, 1],
            "clicked": [True, False, True, False],
            "loved": [True, False, False, False],
            "device": ["desktop", "mobile", "mobile", "desktop"],
        }
    )


def test_labels_follow_the_clipped_ips_formula_on_a_hand_log() -> None:
    curve = PropensityCurve(relative=(1.0, 0.5, 0.25, 0.1), estimator="given", n_results=4)
    labels = relevance_labels(hand_log(), curve, LabelConfig(clip=0.2))
    assert labels.columns == list(LABEL_COLUMNS)
    cats = labels.row(0, named=True)
    assert (cats["query"], cats["doc_id"], cats["n_impressions"], cats["n_clicks"], cats["n_loves"]) == (
        "cats",
        "a",
        3,
        2,
        1,
    )
    weighted = np.array([1 / 1.0, 0.0, 1 / 0.2])  # θ_4 = 0.1 is clipped to 0.2
    assert cats["naive_ctr"] == pytest.approx(2 / 3)
    assert cats["naive_se"] == pytest.approx(np.array([1.0, 0.0, 1.0]).std(ddof=1) / math.sqrt(3))
    assert cats["ips_label"] == pytest.approx(weighted.mean())
    assert cats["ips_se"] == pytest.approx(weighted.std(ddof=1) / math.sqrt(3))
    assert cats["expected_examinations"] == pytest.approx(1.0 + 0.5 + 0.1)  # unclipped
    dogs = labels.row(1, named=True)
    assert (dogs["n_impressions"], dogs["ips_label"], dogs["ips_se"], dogs["naive_se"]) == (1, 0.0, None, None)


def test_clipping_caps_the_weight_of_a_click() -> None:
    curve = PropensityCurve(relative=(1.0, 0.5, 0.25, 0.01), estimator="given", n_results=4)
    deep_click = hand_log().filter(pl.col("position") == 4)
    for clip in (0.01, 0.1, 0.5):
        label = relevance_labels(deep_click, curve, LabelConfig(clip=clip))["ips_label"][0]
        assert label == pytest.approx(1 / clip)


def test_per_device_curves_weight_each_impression_by_its_device() -> None:
    desktop = PropensityCurve(relative=(1.0, 0.5, 0.5, 0.5), estimator="given", n_results=2)
    mobile = PropensityCurve(relative=(1.0, 0.25, 0.25, 0.25), estimator="given", n_results=2)
    curve = PropensityCurve(
        relative=(1.0, 0.4, 0.4, 0.4),
        estimator="given",
        n_results=4,
        context_column="device",
        by_context={"desktop": desktop, "mobile": mobile},
    )
    cats = relevance_labels(hand_log(), curve, LabelConfig(clip=0.01)).row(0, named=True)
    assert cats["ips_label"] == pytest.approx((1 / 1.0 + 0 + 1 / 0.25) / 3)  # the position-4 click was on mobile


@pytest.mark.parametrize("eta", [1.0, 2.0])
def test_ips_labels_are_unbiased_at_every_position_where_the_naive_click_rate_is_not(eta: float) -> None:
    results, truth = simulate_pbm_results(eta=eta, searches_per_query=300, seed=11)
    curve = PropensityCurve(relative=tuple((EXAMINATION / EXAMINATION[0]) ** eta), estimator="truth", n_results=0)
    labels = relevance_labels(results, curve, LabelConfig(clip=0.001)).join(truth, on=["query", "doc_id"])
    assert labels.height == truth.height
    shown_at = results.group_by(normalized_query().alias("query"), "doc_id").agg(pl.col("position").first())
    # Relative to position 1 the unbiased target is θ_1 · γ.
    labels = labels.join(shown_at, on=["query", "doc_id"]).with_columns(
        (EXAMINATION[0] ** eta * pl.col("gamma")).alias("target")
    )
    by_position = (
        labels.group_by("position")
        .agg(
            (pl.col("ips_label").mean() / pl.col("target").mean()).alias("ips"),
            (pl.col("naive_ctr").mean() / pl.col("target").mean()).alias("naive"),
        )
        .sort("position")
    )
    assert by_position["ips"].is_between(0.75, 1.3).all(), by_position
    assert (by_position.filter(pl.col("position") >= 5)["naive"] < 0.5).all(), by_position
    # The standard error is honest where there are clicks enough for a variance.
    clicked = labels.filter(pl.col("n_clicks") >= 5)
    z = ((clicked["ips_label"] - clicked["target"]).abs() / clicked["ips_se"]).to_numpy()
    assert (z <= 3).mean() > 0.97


def test_labels_from_estimated_propensities_rank_pairs_better_than_the_naive_click_rate() -> None:
    # A weak logging ranker: deep positions hold relevant documents the naive rate undervalues.
    results, truth = simulate_pbm_results(exploration="swap_pairs", searches_per_query=300, ranker_error=3.0, seed=12)
    curve = estimate_propensities(results, PropensityConfig())
    assert curve.estimator == "harvesting"
    labels = relevance_labels(results, curve, LabelConfig()).join(truth, on=["query", "doc_id"])
    ips_rho = spearmanr(labels["ips_label"], labels["gamma"]).statistic
    naive_rho = spearmanr(labels["naive_ctr"], labels["gamma"]).statistic
    assert ips_rho > naive_rho + 0.05


def test_the_beta_prior_is_recovered_from_beta_binomial_counts() -> None:
    rng = np.random.default_rng(3)
    trials = rng.integers(2, 60, size=5000)
    successes = rng.binomial(trials, rng.beta(0.5, 3.0, size=trials.size))
    alpha, beta = fit_beta_prior(successes.astype(float), trials.astype(float))
    assert alpha == pytest.approx(0.5, rel=0.15)
    assert beta == pytest.approx(3.0, rel=0.15)


def test_the_posterior_is_honest_about_pairs_that_were_hardly_examined() -> None:
    # At eta 2 position 10 is examined ~100x less than position 1: zero clicks there mean little.
    results, truth = simulate_pbm_results(eta=2.0, searches_per_query=30, seed=1)
    curve = PropensityCurve(relative=tuple((EXAMINATION / EXAMINATION[0]) ** 2), estimator="truth", n_results=0)
    labels = relevance_labels(results, curve, LabelConfig()).join(truth, on=["query", "doc_id"])
    shown_at = results.group_by(normalized_query().alias("query"), "doc_id").agg(pl.col("position").first())
    unclicked = (
        labels.join(shown_at, on=["query", "doc_id"])
        .filter(pl.col("n_clicks") == 0)
        .group_by("position")
        .agg(pl.col("posterior_relevance").mean(), pl.col("posterior_sd").mean(), pl.col("ips_label").max())
        .sort("position")
    )
    assert (unclicked["ips_label"] == 0).all()  # IPS reads every unclicked pair as irrelevant
    assert unclicked["posterior_sd"].is_sorted()
    assert unclicked["posterior_sd"][-1] > 3 * unclicked["posterior_sd"][0], unclicked
    assert unclicked["posterior_relevance"][-1] > 3 * unclicked["posterior_relevance"][0], unclicked
    # The uncertainty is honest: θ_1 · γ lies within two posterior sds for ~95% of the pairs.
    target = EXAMINATION[0] ** 2 * labels["gamma"]
    z = ((labels["posterior_relevance"] - target).abs() / labels["posterior_sd"]).to_numpy()
    assert (z <= 2).mean() > 0.93


def test_labels_are_written_as_parquet(tmp_path) -> None:
    labels = relevance_labels(hand_log(), TRUE_CURVE, LabelConfig())
    path = tmp_path / "feedback" / "labels.parquet"
    write_labels(labels, path)
    assert pl.read_parquet(path).equals(labels)


@pytest.mark.parametrize(
    ("results", "config", "message"),
    [
        (hand_log().clear(), LabelConfig(), "empty"),
        (hand_log().drop("loved"), LabelConfig(), r"lack column\(s\) \['loved'\]"),
        (hand_log(), LabelConfig(clip=0.0), "clip must be in"),
        (hand_log(), LabelConfig(clip=1.5), "clip must be in"),
    ],
)
def test_bad_input_gets_a_clear_error(results: pl.DataFrame, config: LabelConfig, message: str) -> None:
    with pytest.raises(PropensityError, match=message):
        relevance_labels(results, TRUE_CURVE, config)
