"""The recommender's floors (popularity, item-kNN), Saito et al.'s Rel-MF recipe (balanced batches,
no biases, Xavier init) and the content-aware item tower that scores cold items from their text."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.recommendation import FactorizationModel, InteractionMatrix, RecommenderConfig
from models.recommendation.baselines import item_knn_scores, item_similarities, popularity_scores
from models.recommendation.factorization import BalancedPairs


def matrix(levels: np.ndarray, propensity: np.ndarray | None = None) -> InteractionMatrix:
    n_users, n_items = levels.shape
    theta = np.ones(n_items, dtype=np.float32) if propensity is None else propensity
    return InteractionMatrix([f"u{i}" for i in range(n_users)], [f"i{i}" for i in range(n_items)],
                             levels.astype(np.int8), ["click"], theta)


def test_popularity_and_item_knn() -> None:
    levels = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0]])
    data = matrix(levels)
    np.testing.assert_array_equal(popularity_scores(data)[0], [3, 2, 1, 1])
    sim = item_similarities(data, neighbours=1)
    assert sim[0, 1] == pytest.approx(2 / np.sqrt(6)) and sim[0, 2] == 0 and np.all(np.diag(sim) == 0)
    assert (sim > 0).sum(axis=1).max() == 1
    scores = item_knn_scores(data, neighbours=3)
    # User 3 liked item 0 only: item 1 (co-liked with 0) outranks items 2 and 3 (never co-liked).
    assert scores[3, 1] > 0 and scores[3, 2] == 0 and scores[3, 3] == 0
    with pytest.raises(ValueError, match="neighbours"):
        item_similarities(data, 0)


PUBLISHED = RecommenderConfig(method="relmf", local_loss="squared", biases=False, init="xavier", sampling="balanced",
                              batch_pairs=64, steps_per_epoch=5, epochs=2, dim=8, lr=0.01, l2=1e-4)


def test_balanced_batches_are_half_positive() -> None:
    rng = np.random.default_rng(0)
    levels = (rng.random((50, 30)) < 0.05).astype(np.int8)
    batches = list(BalancedPairs(matrix(levels), PUBLISHED))
    assert len(batches) == 5
    for batch in batches:
        assert len(batch["users"]) == 64 and int((batch["levels"] > 0).sum()) == 32


def test_published_relmf_has_no_biases_and_xavier_init() -> None:
    rng = np.random.default_rng(1)
    levels = (rng.random((60, 20)) < 0.2).astype(np.int8)
    model = FactorizationModel.fit(matrix(levels, rng.uniform(0.2, 1, 20).astype(np.float32)), PUBLISHED)
    m = model.module
    assert not m.user_bias.requires_grad and float(m.item_bias.detach().abs().sum()) == 0.0
    bound = (6 / (60 + 8)) ** 0.5
    assert float(m.user_vectors.detach().abs().max()) < bound + 0.2  # Xavier scale, moved a little by 10 steps
    with pytest.raises(ValueError, match="sampling"):
        RecommenderConfig(sampling="pairs")


def content_problem(seed: int = 0) -> tuple[InteractionMatrix, np.ndarray, np.ndarray, np.ndarray]:
    """Users like items of their own topic; an item's text vector names its topic. The last items of each
    topic were never shown (cold): only their text can place them."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_topics = 90, 60, 3
    user_topic, item_topic = np.arange(n_users) % n_topics, np.arange(n_items) % n_topics
    features = np.eye(n_topics)[item_topic] + 0.05 * rng.standard_normal((n_items, n_topics))
    cold = np.arange(n_items) >= 45
    relevant = user_topic[:, None] == item_topic[None, :]
    levels = (relevant & ~cold[None, :] & (rng.random((n_users, n_items)) < 0.5)).astype(np.int8)
    warm = np.flatnonzero(~cold)
    data = matrix(levels[:, warm])
    return data, features[warm], features[cold], (user_topic[:, None] == item_topic[cold][None, :])


def test_the_text_tower_ranks_cold_items_by_their_text(tmp_path: Path) -> None:
    data, warm_features, cold_features, cold_relevant = content_problem()
    config = RecommenderConfig(method="naive", dim=4, epochs=60, lr=0.05, batch_size=90, weight_decay=0.0,
                               l2=1e-4, text_tower=True)
    model = FactorizationModel.fit(data, config, item_features=warm_features)
    vectors = model.score_vectors()
    cold_scores = vectors.user @ model.cold_item_vectors(cold_features).T + vectors.user_offset[:, None]
    top = np.argmax(cold_scores, axis=1)
    assert cold_relevant[np.arange(len(top)), top].mean() > 0.9  # chance: 1 / 3
    model.save(tmp_path / "m")
    loaded = FactorizationModel.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.logits(), model.logits(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="text tower"):
        FactorizationModel.fit(data, replace(config, text_tower=False)).cold_item_vectors(cold_features)
    with pytest.raises(ValueError, match="item features"):
        FactorizationModel.fit(data, config)


def test_semisynthetic_logs_follow_the_click_model_and_ndcg() -> None:
    from bench.recommender_semisynthetic import SemiSyntheticConfig, World, ndcg_at_10, simulate_logs

    grades = np.array([[4, 0, 0, 2], [0, 4, 4, 0]], dtype=np.int8)
    world = World(item_ids=["a", "b", "c", "d"], features=np.eye(4, dtype=np.float32),
                  pages=np.array([[0, 3, -1], [1, 2, -1]]), query_grades=grades, user_ids=["u0", "u1"],
                  interests=np.array([[0], [1]]), truth=grades)
    config = SemiSyntheticConfig()
    config.simulate.top_k = 3
    logs = simulate_logs(world, 4000, config, seed=0)
    assert set(logs["position"].unique()) == {1, 2}  # padding is never shown
    u0 = logs.filter(pl.col("user_id") == "u0")
    assert set(u0["doc_id"]) == {"a", "d"}  # a user sees only its interests' pages
    top = u0.filter(pl.col("position") == 1)
    clicks = top["actions"].list.contains("click").mean()
    assert clicks == pytest.approx(0.68 * 1.0, abs=0.03)  # examination at rank 1 x click prob of grade 4
    assert ndcg_at_10(np.array([3.0, 2, 1, 0]), np.array([4, 0, 0, 2])) < 1.0
    assert ndcg_at_10(np.array([3.0, 0, 1, 2]), np.array([4, 0, 0, 2])) == pytest.approx(1.0)
    assert np.isnan(ndcg_at_10(np.array([1.0, 2.0]), np.array([0, 0])))


def test_report_pairs_each_run_with_naive() -> None:
    from bench.recommender_report import paired

    def run(split: int, seed: int, value: float) -> dict:
        return {"split": split, "seed": seed, "metrics": {"all": {"DCG@5": value}}}

    naive = [run(0, 0, 1.0), run(0, 1, 1.1), run(1, 0, 0.9)]
    method = [run(0, 0, 1.2), run(0, 1, 1.25), run(1, 0, 1.0)]
    d = paired(method, naive, "all", "DCG@5")
    assert d["mean"] == pytest.approx((0.2 + 0.15 + 0.1) / 3) and d["beyond_spread"] and d["runs"] == 3
    deterministic = [{"split": 0, "seed": 0, "metrics": {"all": {"DCG@5": 1.0}}},
                     {"split": 1, "seed": 0, "metrics": {"all": {"DCG@5": 0.9}}}]
    d = paired(deterministic, naive, "all", "DCG@5")  # one run per split stands against every naive seed
    assert d["runs"] == 3 and d["mean"] == pytest.approx(-0.1 / 3) and not d["beyond_spread"]


def test_the_feedback_artifact_serves_cold_catalog_items_through_the_text_tower(tmp_path: Path) -> None:
    import json

    import faiss
    import polars as pl

    from indexing.recommender import Recommender
    from models.recommendation.artifact import dense_item_features, train_recommender

    # Two topics; users click the shown documents of their topic. d8 and d9 are never shown (cold).
    rng = np.random.default_rng(0)
    topic = {f"d{i}": i % 2 for i in range(10)}
    vectors = np.array([np.eye(2)[topic[f"d{i}"]] for i in range(10)], dtype=np.float32)
    dense = tmp_path / "dense"
    dense.mkdir()
    index = faiss.IndexFlatIP(2)
    index.add(vectors + 0.01 * rng.standard_normal(vectors.shape).astype(np.float32))
    faiss.write_index(index, str(dense / "index.faiss"))
    (dense / "doc_ids.json").write_text(json.dumps(list(topic)))
    rows = []
    for user in range(40):
        for _page in range(3):
            for position, doc in enumerate(rng.permutation(8)[:4], start=1):
                liked = topic[f"d{doc}"] == user % 2 and rng.random() < 0.7
                rows.append((f"u{user}", f"d{doc}", position, ["impression", *(["click"] if liked else [])]))
    results = pl.DataFrame(rows, schema={"user_id": pl.String, "doc_id": pl.String, "position": pl.Int64,
                                         "actions": pl.List(pl.String)}, orient="row")
    config = RecommenderConfig(method="gnolr", dim=4, epochs=40, lr=0.05, batch_size=40, l2=1e-4, weight_decay=0.0,
                               text_tower=True)
    summary = train_recommender(results, [1.0, 0.8, 0.6, 0.5], config, tmp_path / "rec", dense_item_features(dense))
    assert summary["cold_items"] == 2
    recommender = Recommender(tmp_path / "rec")
    assert set(recommender.item_ids) == set(topic)
    hits = 0
    for user in range(40):
        top = recommender.recommend(f"u{user}", k=10, exclude_seen=False)
        cold = [r.item_id for r in top if r.item_id in ("d8", "d9")]
        hits += cold[0] == ("d8" if user % 2 == 0 else "d9")  # the cold item of the user's topic comes first
    assert hits >= 36
    with pytest.raises(ValueError, match="item features"):
        train_recommender(results, [1.0], config, tmp_path / "rec2")
