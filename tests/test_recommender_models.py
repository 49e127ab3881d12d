"""Matrix factorisation with the naive, Rel-MF and GNOLR losses on synthetic missing-not-at-random
feedback (real torch + Lightning training), the interaction matrix built from clickloop logs,
and save/load."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F

from models.gnolr import nested_probabilities
from models.recommendation import (
    FactorizationModel,
    InteractionMatrix,
    RecommenderConfig,
    debiased_popularity,
    interactions_from_results,
)
from models.recommendation.factorization import FactorizationModule

N_USERS, N_ITEMS = 240, 40


def mnar_problem(seed: int = 0) -> tuple[InteractionMatrix, np.ndarray]:
    """Popularity bias hiding relevance: half the items are exposed to 90% of users but relevant to
    15% of them; the other half exposed to 8% and relevant to 60%. Observed positives favour the
    popular half (0.9 x 0.15 > 0.08 x 0.6); the truly better items are the rare ones."""
    rng = np.random.default_rng(seed)
    rare = np.arange(N_ITEMS) >= N_ITEMS // 2
    exposure = np.where(rare, 0.08, 0.9).astype(np.float32)
    relevance_rate = np.where(rare, 0.6, 0.15)
    relevant = rng.random((N_USERS, N_ITEMS)) < relevance_rate
    loved = relevant & (rng.random((N_USERS, N_ITEMS)) < 0.5)
    exposed = rng.random((N_USERS, N_ITEMS)) < exposure
    levels = (exposed & relevant).astype(np.int8) + (exposed & loved)
    ids = [str(i) for i in range(max(N_USERS, N_ITEMS))]
    return InteractionMatrix(ids[:N_USERS], ids[:N_ITEMS], levels, ["positive", "loved"], exposure), rare


def share_of_rare_in_top5(model: FactorizationModel, rare: np.ndarray) -> float:
    top5 = np.argsort(-model.scores(), axis=1)[:, :5]
    return float(rare[top5].mean())


# Full-batch steps: a step per epoch keeps the Lightning overhead (not the tiny matrix) from dominating.
FAST = {"dim": 4, "epochs": 40, "lr": 0.1, "batch_size": N_USERS, "weight_decay": 1e-4, "clip": 0.05}


@pytest.fixture(scope="module")
def mnar() -> tuple[InteractionMatrix, np.ndarray]:
    return mnar_problem()


def test_naive_learns_the_exposure_bias_and_relmf_undoes_it(mnar: tuple[InteractionMatrix, np.ndarray]) -> None:
    data, rare = mnar
    naive = FactorizationModel.fit(data, RecommenderConfig(method="naive", **FAST))
    relmf = FactorizationModel.fit(data, RecommenderConfig(method="relmf", **FAST))
    assert share_of_rare_in_top5(naive, rare) < 0.3
    assert share_of_rare_in_top5(relmf, rare) > 0.8


def test_squared_relmf_moves_rare_items_up_but_less_than_the_log_loss(
    mnar: tuple[InteractionMatrix, np.ndarray],
) -> None:
    # Its gradient 2 s (1 - s) (s - Y / theta) vanishes as s -> 1 however large the IPS label: the
    # bound that keeps it from diverging also caps the pull of the rare observed pairs.
    data, rare = mnar
    naive = FactorizationModel.fit(data, RecommenderConfig(method="naive", local_loss="squared", **FAST))
    relmf = FactorizationModel.fit(data, RecommenderConfig(method="relmf", local_loss="squared", **FAST))
    assert share_of_rare_in_top5(naive, rare) < 0.3
    assert share_of_rare_in_top5(relmf, rare) > share_of_rare_in_top5(naive, rare) + 0.3


def test_exposure_aware_gnolr_undoes_the_bias_and_naive_gnolr_does_not(
    mnar: tuple[InteractionMatrix, np.ndarray],
) -> None:
    data, rare = mnar
    aware = FactorizationModel.fit(data, RecommenderConfig(method="gnolr", exposure_aware=True, **FAST))
    naive = FactorizationModel.fit(data, RecommenderConfig(method="gnolr", exposure_aware=False, **FAST))
    assert share_of_rare_in_top5(naive, rare) < 0.3
    assert share_of_rare_in_top5(aware, rare) > 0.8
    assert aware.module.epoch_losses[-1] < aware.module.epoch_losses[0]


def _local_loss(kind: str, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The mean per-pair loss written out by hand, for a label that may be fractional."""
    if kind == "log":
        return F.binary_cross_entropy_with_logits(logits, label)
    prob = torch.sigmoid(logits)
    return (label * (1 - prob) ** 2 + (1 - label) * prob**2).mean()


@pytest.mark.parametrize("local_loss", ["log", "squared"])
def test_relmf_loss_is_unbiased_in_expectation_over_exposure(local_loss: str) -> None:
    """E over exposure of the Rel-MF loss equals the loss on the true relevance (propensities >= clip)."""
    torch.manual_seed(0)
    config = RecommenderConfig(method="relmf", dim=4, clip=0.05, local_loss=local_loss)
    module = FactorizationModule(config, n_users=6, n_items=5, n_levels=1)
    users = torch.arange(6)
    relevance = torch.rand(6, 5)
    propensity = torch.tensor([[0.9, 0.5, 0.3, 0.1, 0.05]])
    draws = 1500
    observed = torch.rand(draws, 6, 5) < propensity * relevance
    with torch.no_grad():
        losses = torch.stack([module.loss(users, y.to(torch.int8), propensity) for y in observed])
        target = _local_loss(local_loss, module.level_logits(users)[..., 0], relevance)
    stderr = float(losses.std()) / draws**0.5
    assert abs(float(losses.mean()) - float(target)) < 4 * stderr
    # The naive loss on the same draws estimates the log loss on the observed rate theta x relevance instead.
    naive = FactorizationModule(RecommenderConfig(method="naive", dim=4, local_loss=local_loss), 6, 5, 1)
    naive.load_state_dict(module.state_dict())
    with torch.no_grad():
        naive_losses = torch.stack([naive.loss(users, y.to(torch.int8), propensity) for y in observed])
        biased = _local_loss(local_loss, module.level_logits(users)[..., 0], propensity * relevance)
    assert abs(float(naive_losses.mean()) - float(biased)) < 4 * stderr
    assert abs(float(biased) - float(target)) > 4 * stderr


def test_the_squared_relmf_loss_is_bounded_where_the_log_loss_is_not() -> None:
    # One observed pair at propensity 0.1: its Rel-MF label is 10, so the log loss falls without
    # bound as the logit grows, while the squared loss cannot go below 1 - 10.
    levels, propensity = torch.ones(1, 1, dtype=torch.int8), torch.full((1, 1), 0.1)
    losses = {}
    for kind in ("log", "squared"):
        module = FactorizationModule(RecommenderConfig(method="relmf", dim=1, local_loss=kind), 1, 1, 1)
        with torch.no_grad():
            module.user_vectors.zero_()
            losses[kind] = []
            for logit in (10.0, 100.0, 1000.0):
                module.global_bias.fill_(logit)
                losses[kind].append(float(module.loss(torch.arange(1), levels, propensity)))
    assert losses["log"][2] < losses["log"][1] < losses["log"][0] < -80
    assert all(-9.0 <= value < -8.99 for value in losses["squared"])


def test_positive_weight_scales_the_loss_of_observed_cells_only() -> None:
    torch.manual_seed(0)
    levels = torch.tensor([[1, 0, 0], [0, 2, 0]], dtype=torch.int8)
    propensity = torch.ones(1, 3)
    plain = FactorizationModule(RecommenderConfig(method="naive", dim=2), 2, 3, 1)
    weighted = FactorizationModule(RecommenderConfig(method="naive", dim=2, positive_weight=5.0), 2, 3, 1)
    weighted.load_state_dict(plain.state_dict())
    with torch.no_grad():
        logits = plain.level_logits(torch.arange(2))[..., 0]
        per_cell = F.binary_cross_entropy_with_logits(logits, (levels > 0).float(), reduction="none")
        expected = (torch.where(levels > 0, 5.0, 1.0) * per_cell).mean()
        assert float(weighted.loss(torch.arange(2), levels, propensity)) == pytest.approx(float(expected), rel=1e-6)
        assert float(plain.loss(torch.arange(2), levels, propensity)) == pytest.approx(float(per_cell.mean()), rel=1e-6)


def test_save_load_round_trip(tmp_path, mnar: tuple[InteractionMatrix, np.ndarray]) -> None:
    data, _ = mnar
    model = FactorizationModel.fit(data, RecommenderConfig(method="gnolr", **{**FAST, "epochs": 3}))
    model.save(tmp_path / "model")
    loaded = FactorizationModel.load(tmp_path / "model")
    assert loaded.config == model.config
    assert loaded.user_ids == model.user_ids and loaded.item_ids == model.item_ids
    assert loaded.module.epoch_losses == model.module.epoch_losses
    np.testing.assert_allclose(loaded.scores(), model.scores(), rtol=1e-6)


@pytest.mark.parametrize("method", ["relmf", "gnolr"])
def test_exported_inner_product_scores_are_the_first_level_probability(
    method: str, mnar: tuple[InteractionMatrix, np.ndarray]
) -> None:
    data, _ = mnar
    model = FactorizationModel.fit(data, RecommenderConfig(method=method, **{**FAST, "epochs": 3}))
    module = model.module
    with torch.no_grad():
        logits = module.level_logits(torch.arange(N_USERS))
        first_level = nested_probabilities(logits.reshape(-1, module.n_levels), module.thresholds())[:, 0]
    np.testing.assert_allclose(model.scores(), first_level.reshape(N_USERS, N_ITEMS).numpy(), rtol=1e-5, atol=1e-7)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="method"):
        RecommenderConfig(method="wmf")
    with pytest.raises(ValueError, match="clip"):
        RecommenderConfig(clip=0.0)
    with pytest.raises(ValueError, match="dim"):
        RecommenderConfig(dim=0)
    with pytest.raises(ValueError, match="local_loss"):
        RecommenderConfig(local_loss="hinge")
    with pytest.raises(ValueError, match="positive_weight"):
        RecommenderConfig(positive_weight=0.0)


def test_oversized_catalog_is_refused_before_training(mnar: tuple[InteractionMatrix, np.ndarray]) -> None:
    data, _ = mnar
    with pytest.raises(ValueError, match="max_matrix_cells"):
        FactorizationModel.fit(data, RecommenderConfig(max_matrix_cells=N_USERS * N_ITEMS - 1))


def test_debiased_popularity_credits_rarely_exposed_relevant_items(mnar: tuple[InteractionMatrix, np.ndarray]) -> None:
    data, rare = mnar
    raw_counts = data.positives.sum(axis=0)
    popularity = debiased_popularity(data, clip=0.05)
    assert raw_counts[~rare].mean() > raw_counts[rare].mean()
    assert popularity[rare].min() > popularity[~rare].max()
    assert popularity[rare].mean() == pytest.approx(0.6, abs=0.1)  # the true relevance rate


def results_frame(rows: list[tuple[str | None, str, int, list[str]]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"user_id": pl.String, "doc_id": pl.String, "position": pl.Int64, "actions": pl.List(pl.String)},
        orient="row",
    )


def test_interactions_from_results_levels_and_exposure() -> None:
    theta = [1.0, 0.5, 0.25]
    results = results_frame([
        ("u1", "d1", 1, ["impression", "click"]),
        ("u1", "d2", 2, ["impression"]),
        ("u1", "d2", 3, ["impression", "love"]),  # a love without a click event still reaches both levels
        ("u2", "d3", 7, ["impression", "click"]),  # below the curve: uses its last theta
        ("u2", "d1", 2, ["impression", "add_to_cart"]),  # an action outside the levels counts as none
    ])
    data = interactions_from_results(results, theta, ["click", "love"], max_cells=100)
    assert data.user_ids == ["u1", "u2"] and data.item_ids == ["d1", "d2", "d3"]
    np.testing.assert_array_equal(data.levels, [[1, 2, 0], [0, 0, 1]])
    expected = [[1.0, 1 - 0.5 * 0.75, 0.0], [0.5, 0.0, 0.25]]
    np.testing.assert_allclose(data.propensity, expected, atol=1e-6)
    np.testing.assert_array_equal(data.seen, data.levels > 0)


@pytest.mark.parametrize(
    ("frame", "theta", "message"),
    [
        (results_frame([(None, "d1", 1, ["click"])]), [1.0], "user_id"),
        (results_frame([("u1", "d1", 0, ["click"])]), [1.0], "1-based"),
        (results_frame([("u1", "d1", 1, ["click"])]), [0.0], "theta"),
        (results_frame([]), [1.0], "no shown results"),
        (results_frame([("u1", "d1", 1, ["click"])]).drop("actions"), [1.0], "actions"),
    ],
)
def test_interactions_from_results_rejects_bad_input(frame: pl.DataFrame, theta: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        interactions_from_results(frame, theta, ["click", "love"], max_cells=100)


@pytest.mark.parametrize("method", ["relmf", "gnolr"])
def test_sampling_unobserved_pairs_estimates_the_full_loss(method: str) -> None:
    torch.manual_seed(0)
    exact = FactorizationModule(RecommenderConfig(method=method, dim=4), n_users=8, n_items=30, n_levels=2)
    sampled = FactorizationModule(
        RecommenderConfig(method=method, dim=4, unobserved_sample_rate=0.2), n_users=8, n_items=30, n_levels=2
    )
    sampled.load_state_dict(exact.state_dict())
    users = torch.arange(8)
    levels = (torch.rand(8, 30) < 0.2).to(torch.int8) + (torch.rand(8, 30) < 0.1).to(torch.int8)
    propensity = torch.rand(1, 30)
    with torch.no_grad():
        full = float(exact.loss(users, levels, propensity))
        draws = torch.stack([sampled.loss(users, levels, propensity) for _ in range(1000)])
    assert abs(float(draws.mean()) - full) < 4 * float(draws.std()) / len(draws) ** 0.5
    assert float(draws.std()) > 0  # it did sample


def test_logits_keep_the_order_that_saturated_probabilities_lose(mnar: tuple[InteractionMatrix, np.ndarray]) -> None:
    data, _ = mnar
    model = FactorizationModel.fit(data, RecommenderConfig(method="relmf", **{**FAST, "epochs": 1}))
    with torch.no_grad():  # logits of 40, 50, 60 ... for user 0: all sigmoid to exactly 1.0 in float64
        model.module.user_vectors.zero_()
        model.module.user_bias.zero_()
        model.module.global_bias.zero_()
        model.module.item_bias[:, 0] = 40.0 + 10.0 * torch.arange(N_ITEMS, dtype=torch.float32)
    logits, scores = model.logits(np.array([0]))[0], model.scores(np.array([0]))[0]
    assert (scores == 1.0).all() and np.isfinite(scores).all()
    np.testing.assert_array_equal(np.argsort(-logits), np.arange(N_ITEMS)[::-1])


def test_l2_penalty_is_half_l2_times_the_squared_norm_and_shrinks_the_fit(
    mnar: tuple[InteractionMatrix, np.ndarray],
) -> None:
    module = FactorizationModule(RecommenderConfig(method="relmf", dim=4, l2=0.3), n_users=5, n_items=7, n_levels=1)
    squares = sum(float(p.detach().pow(2).sum()) for p in module.parameters() if p.requires_grad)
    assert float(module.l2_penalty()) == pytest.approx(0.15 * squares, rel=1e-5)
    data, _ = mnar
    no_decay = {**FAST, "weight_decay": 0.0}
    free = FactorizationModel.fit(data, RecommenderConfig(method="relmf", **no_decay))
    penalised = FactorizationModel.fit(data, RecommenderConfig(method="relmf", **no_decay, l2=0.01))
    assert np.abs(penalised.logits()).max() < np.abs(free.logits()).max()
    with pytest.raises(ValueError, match="l2"):
        RecommenderConfig(l2=-1.0)
