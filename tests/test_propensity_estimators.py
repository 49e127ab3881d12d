"""Position-bias estimators recover a known examination curve from synthetic PBM logs.

`simulate_pbm_results` is the ground-truth generator the relevance-label tests share.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from models.propensity import (
    HarvestingEstimator,
    LatentClassEMEstimator,
    PropensityConfig,
    PropensityCurve,
    PropensityError,
    RegressionEMEstimator,
    estimate_propensities,
    position_groups,
)

# The ULTRA-toolkit examination curve the simulator uses (before eta) and click rate by grade.
EXAMINATION = np.array([0.68, 0.61, 0.48, 0.34, 0.28, 0.20, 0.11, 0.10, 0.08, 0.06])
CLICK_BY_GRADE = np.array([0.10, 0.16, 0.28, 0.52, 1.00])
DOCS_PER_QUERY = 10


def simulate_pbm_results(
    n_queries: int = 200,
    searches_per_query: int = 100,
    eta: float = 1.0,
    exploration: str = "none",
    ranker_noise: float = 0.0,
    ranker_error: float = 1.0,
    device_etas: dict[str, float] | None = None,
    logistic_relevance: bool = False,
    click_by_grade: np.ndarray = CLICK_BY_GRADE,
    seed: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Results table (docs/contracts.md columns) from a position-based click model, and the truth.

    The logging ranker orders each query's documents by a relevance-correlated score, so
    naive click rates confound position and relevance. `exploration` is "none", "shuffle_top_n"
    (all ten shuffled) or "swap_pairs" (rank 1 swapped with a random rank). `ranker_noise`
    perturbs the ranker per search (positions then vary without exploration); `ranker_error` is
    the noise of its score around the truth (larger: a worse ranker).
    `device_etas` gives each device its own eta. With `logistic_relevance`, γ is a logistic
    function of a `feature` column in the truth, as regression EM assumes; otherwise it is
    `click_by_grade[grade]`.
    Truth: `query`, `doc_id`, `gamma`, `grade`, `feature` per (query, document).
    """
    rng = np.random.default_rng(seed)
    shape = (n_queries, DOCS_PER_QUERY)
    grade = rng.choice(5, size=shape, p=[0.55, 0.2, 0.1, 0.1, 0.05])
    feature = rng.normal(size=shape)
    gamma = 1 / (1 + np.exp(-(2.5 * feature - 1.5))) if logistic_relevance else click_by_grade[grade]
    ranker_score = (feature if logistic_relevance else grade) + rng.normal(scale=ranker_error, size=shape)

    devices = device_etas or {"desktop": eta}
    n_searches = n_queries * searches_per_query
    query_of_search = np.repeat(np.arange(n_queries), searches_per_query)
    device = rng.choice(list(devices), size=n_searches)
    score = ranker_score[query_of_search] + rng.normal(scale=ranker_noise or 1e-9, size=(n_searches, DOCS_PER_QUERY))
    shown_doc = np.argsort(-score, axis=1)  # shown_doc[s, r]: document index at logging rank r + 1
    logging_rank = np.tile(np.arange(1, DOCS_PER_QUERY + 1), (n_searches, 1))
    display_rank = logging_rank.copy()
    if exploration == "shuffle_top_n":
        display_rank = np.argsort(rng.random((n_searches, DOCS_PER_QUERY)), axis=1) + 1
    elif exploration == "swap_pairs":
        partner = rng.integers(1, DOCS_PER_QUERY, size=n_searches)
        rows = np.arange(n_searches)
        display_rank[rows, 0] = partner + 1
        display_rank[rows, partner] = 1

    eta_of_search = np.array([devices[d] for d in device])[:, None]
    examination = EXAMINATION[display_rank - 1] ** eta_of_search
    click_prob = examination * gamma[query_of_search[:, None], shown_doc]
    clicked = rng.random(click_prob.shape) < click_prob
    loved = clicked & (rng.random(click_prob.shape) < 0.3 * (grade[query_of_search[:, None], shown_doc] >= 3))

    # Mixed case and padding: the label key must normalise the query text.
    query_text = np.array([f"Query {q}" if q % 2 else f"  query   {q} " for q in range(n_queries)], dtype=object)
    results = pl.DataFrame(
        {
            "query_id": np.repeat(np.arange(n_searches), DOCS_PER_QUERY).astype(str),
            "user_query": np.repeat(query_text[query_of_search], DOCS_PER_QUERY),
            "doc_id": (np.repeat(query_of_search, DOCS_PER_QUERY) * 100 + shown_doc.ravel()).astype(str),
            "position": display_rank.ravel(),
            "logging_rank": logging_rank.ravel(),
            "display_propensity": np.full(n_searches * DOCS_PER_QUERY, 1.0),
            "device": np.repeat(device, DOCS_PER_QUERY),
            "exploration": exploration,
            "clicked": clicked.ravel(),
            "loved": loved.ravel(),
        }
    )
    truth = pl.DataFrame(
        {
            "query": np.repeat([f"query {q}" for q in range(n_queries)], DOCS_PER_QUERY),
            "doc_id": (np.arange(n_queries)[:, None] * 100 + np.arange(DOCS_PER_QUERY)).ravel().astype(str),
            "gamma": gamma.ravel(),
            "grade": grade.ravel(),
            "feature": feature.ravel(),
        }
    )
    return results, truth


def relative_errors(curve: tuple[float, ...], eta: float) -> np.ndarray:
    truth = EXAMINATION**eta / EXAMINATION[0] ** eta
    return np.abs(np.asarray(curve) - truth) / truth


def assert_recovers(curve: tuple[float, ...], eta: float) -> None:
    """Tight on the head; looser on the tail, where θ_10 ** eta leaves only a few dozen clicks."""
    errors = relative_errors(curve, eta)
    assert curve[0] == 1.0
    assert errors[:5].max() < 0.12, errors
    assert errors.max() < (0.25 if eta == 1.0 else 0.4), errors


@pytest.mark.parametrize("eta", [1.0, 2.0])
@pytest.mark.parametrize("exploration", ["shuffle_top_n", "swap_pairs"])
def test_harvesting_recovers_the_examination_curve(exploration: str, eta: float) -> None:
    results, _ = simulate_pbm_results(eta=eta, exploration=exploration, seed=1)
    curve = HarvestingEstimator(PropensityConfig()).fit(results)
    assert_recovers(curve.relative, eta)
    # The maximum-likelihood refinement never ends below where the pairwise curve started.
    pairwise = np.asarray(curve.diagnostics["pairwise_curve"])
    assert curve.diagnostics["log_likelihood"] >= pbm_log_likelihood(results, pairwise * 0.5)


def pbm_log_likelihood(results: pl.DataFrame, theta: np.ndarray) -> float:
    """The PBM log-likelihood at `theta` with each pair's γ at its best value for that θ
    (a lower bound of what the EM can reach from there)."""
    groups = position_groups(results, len(theta))
    t = theta[groups["position"].to_numpy() - 1]
    n, c = groups["n"].to_numpy().astype(float), groups["c"].to_numpy().astype(float)
    keys = groups.select(pl.concat_str("query", "doc_id", separator="\t")).to_series().to_numpy()
    _, pair = np.unique(keys, return_inverse=True)
    gamma = np.clip(np.bincount(pair, weights=c) / np.bincount(pair, weights=n * t), 1e-6, 1 - 1e-6)[pair]
    p = np.clip(t * gamma, 1e-12, 1 - 1e-12)
    return float(np.sum(c * np.log(p) + (n - c) * np.log(1 - p)))


@pytest.mark.parametrize("eta", [1.0, 2.0])
def test_regression_em_per_pair_recovers_the_curve_when_the_ranker_varies(eta: float) -> None:
    results, _ = simulate_pbm_results(eta=eta, ranker_noise=1.0, seed=2)
    curve = RegressionEMEstimator(PropensityConfig()).fit(results)
    assert curve.diagnostics["relevance_model"] == "per_pair"
    assert_recovers(curve.relative, eta)
    naive = results.group_by("position").agg(pl.col("clicked").mean()).sort("position")["clicked"].to_numpy()
    assert relative_errors(tuple(naive / naive[0]), eta)[:5].max() > 0.4  # the bias the estimator removes


@pytest.mark.parametrize("eta", [1.0, 2.0])
def test_regression_em_with_features_identifies_a_fixed_ranking(eta: float) -> None:
    # Each pair is always shown at the same position: only the relevance regression can
    # separate position from relevance.
    results, truth = simulate_pbm_results(eta=eta, logistic_relevance=True, seed=3)
    features = truth.select("query", "doc_id", "feature")
    curve = RegressionEMEstimator(PropensityConfig(), features).fit(results)
    assert curve.diagnostics["relevance_model"] == "regression"
    assert_recovers(curve.relative, eta)
    assert curve.absolute is not None
    absolute_error = np.abs(np.asarray(curve.absolute) - EXAMINATION**eta) / EXAMINATION**eta
    assert absolute_error[:5].max() < 0.1


@pytest.mark.parametrize("seed", [3, 5])
def test_latent_class_em_identifies_a_fixed_ranking_without_features(seed: int) -> None:
    # Each pair is always shown at the same position and nothing describes it: per-pair EM
    # cannot tell position from relevance; two relevance levels shared by all positions can.
    two_levels = np.array([0.1, 0.1, 0.1, 1.0, 1.0])
    results, _ = simulate_pbm_results(click_by_grade=two_levels, seed=seed)
    curve = LatentClassEMEstimator(PropensityConfig()).fit(results)
    assert_recovers(curve.relative, 1.0)
    assert curve.diagnostics["latent_classes"] == 2
    assert curve.diagnostics["bic"] == min(curve.diagnostics["bic_by_classes"])
    assert sorted(curve.diagnostics["class_gamma"]) == pytest.approx([0.1 * 0.68, 0.68], rel=0.15)
    # Its standard errors are honest: the truth lies within 3 of them at every position.
    truth = np.log(EXAMINATION / EXAMINATION[0])
    se = np.asarray(curve.diagnostics["log_theta_se"][1:])
    assert (np.abs(np.log(curve.relative[1:]) - truth[1:]) < 3 * se).all()
    per_pair = RegressionEMEstimator(PropensityConfig()).fit(results)
    assert relative_errors(per_pair.relative, 1.0).max() > 0.3


def test_latent_class_em_refuses_zero_classes() -> None:
    results, _ = simulate_pbm_results(n_queries=20, seed=3)
    with pytest.raises(PropensityError, match="max_latent_classes"):
        LatentClassEMEstimator(PropensityConfig(max_latent_classes=0)).fit(results)


def test_auto_harvests_from_exploration_and_falls_back_to_em_without_it() -> None:
    explored, _ = simulate_pbm_results(n_queries=100, exploration="swap_pairs", seed=4)
    assert estimate_propensities(explored, PropensityConfig()).estimator == "harvesting"
    plain, truth = simulate_pbm_results(n_queries=100, ranker_noise=1.0, seed=4)
    assert estimate_propensities(plain, PropensityConfig()).estimator == "latent_class_em"
    features = truth.select("query", "doc_id", "feature")
    assert estimate_propensities(plain, PropensityConfig(), features).estimator == "regression_em"
    forced = PropensityConfig(estimator="regression_em")
    assert estimate_propensities(explored, forced).estimator == "regression_em"


def test_harvesting_refuses_positions_no_intervention_reached() -> None:
    results, _ = simulate_pbm_results(n_queries=50, seed=5)  # fixed ranking: no pair moves
    with pytest.raises(PropensityError, match="cannot place position"):
        HarvestingEstimator(PropensityConfig()).fit(results)
    # The per-pair EM still answers, and its diagnostics say nothing identified the curve.
    curve = RegressionEMEstimator(PropensityConfig()).fit(results)
    assert curve.diagnostics["multi_position_pairs"] == 0
    explored, _ = simulate_pbm_results(n_queries=50, exploration="swap_pairs", seed=5)
    assert RegressionEMEstimator(PropensityConfig()).fit(explored).diagnostics["multi_position_pairs"] > 0


def test_per_device_curves_differ_as_their_eta_does() -> None:
    results, _ = simulate_pbm_results(
        n_queries=300,
        searches_per_query=200,
        exploration="shuffle_top_n",
        device_etas={"desktop": 1.0, "mobile": 2.0},
        seed=6,
    )
    curve = estimate_propensities(results, PropensityConfig())
    assert curve.context_column == "device"
    assert set(curve.by_context) == {"desktop", "mobile"}
    assert_recovers(curve.by_context["desktop"].relative, 1.0)
    assert_recovers(curve.by_context["mobile"].relative, 2.0)
    theta = curve.theta(np.array([3, 3, 3, 12]), np.array(["desktop", "mobile", "tablet", "mobile"]))
    assert theta[0] == curve.by_context["desktop"].relative[2]
    assert theta[1] == curve.by_context["mobile"].relative[2]
    assert theta[2] == curve.relative[2]  # unseen context: pooled curve
    assert theta[3] == curve.by_context["mobile"].relative[-1]  # below the last position: θ_K


def test_small_contexts_use_the_pooled_curve() -> None:
    results, _ = simulate_pbm_results(n_queries=50, exploration="shuffle_top_n", seed=7)
    results = results.with_columns(
        pl.when(pl.col("query_id").cast(pl.Int64) < 10).then(pl.lit("tv")).otherwise(pl.col("device")).alias("device")
    )
    curve = estimate_propensities(results, PropensityConfig(min_context_results=1000))
    assert set(curve.by_context) == {"desktop"}
    assert [c["context"] for c in curve.diagnostics["contexts_using_pooled_curve"]] == ["tv"]


def test_curve_round_trips_through_json(tmp_path) -> None:
    results, _ = simulate_pbm_results(
        n_queries=100, exploration="shuffle_top_n", device_etas={"desktop": 1.0, "mobile": 2.0}, seed=8
    )
    curve = estimate_propensities(results, PropensityConfig(min_context_results=100))
    path = tmp_path / "propensities.json"
    curve.to_json(path)
    assert json.loads(path.read_text())["propensities"] == list(curve.relative)  # what evaluate reads
    assert PropensityCurve.from_json(path) == curve
    with pytest.raises(PropensityError, match="not a propensity curve"):
        PropensityCurve.from_dict({"estimator": "harvesting"})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.clear(), "empty"),
        (lambda df: df.drop("clicked"), r"lack column\(s\) \['clicked'\]"),
        (lambda df: df.with_columns(pl.lit(0).alias("position")), "below 1"),
        (lambda df: df.with_columns(pl.lit(None, pl.Utf8).alias("doc_id")), "nulls"),
    ],
)
def test_bad_results_get_a_clear_error(mutate, message: str) -> None:
    results, _ = simulate_pbm_results(n_queries=5, searches_per_query=2)
    with pytest.raises(PropensityError, match=message):
        estimate_propensities(mutate(results), PropensityConfig())


def test_unknown_estimator_is_rejected() -> None:
    results, _ = simulate_pbm_results(n_queries=5, searches_per_query=2)
    with pytest.raises(PropensityError, match="unknown estimator"):
        estimate_propensities(results, PropensityConfig(estimator="magic"))
