"""The Recommender API over an artifact trained from clickloop-style results (real Lightning
training, real FAISS index): top-k against brute force, seen items, cold start, errors, threads."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from indexing.errors import CorruptIndexError, MissingIndexError, SearchInputError
from indexing.recommender import Recommender, UnknownUserError
from models.recommendation import FactorizationModel, RecommenderConfig
from models.recommendation.artifact import train_recommender
from models.recommendation.layout import INDEX_FILE, MANIFEST_FILE, MODEL_DIR, VECTORS_FILE

THETA = [1.0, 0.6, 0.4, 0.3, 0.2]
N_USERS, N_DOCS, SHOWN = 30, 25, 5


def synthetic_results(seed: int = 0) -> pl.DataFrame:
    """Each user sees 4 result pages of 5 random docs; clicks follow theta[position] x a per-doc
    relevance, loves half of the clicks. A few anonymous rows (no user id) are mixed in."""
    rng = np.random.default_rng(seed)
    relevance = rng.uniform(0.1, 0.9, N_DOCS)
    rows = []
    for user in range(N_USERS):
        for _page in range(4):
            for position, doc in enumerate(rng.choice(N_DOCS, SHOWN, replace=False), start=1):
                clicked = rng.random() < THETA[position - 1] * relevance[doc]
                actions = ["impression"] + (["click"] if clicked else []) + (
                    ["love"] if clicked and rng.random() < 0.5 else [])
                rows.append((f"user{user}", f"doc{doc}", position, actions))
    rows += [(None, "doc0", 1, ["impression", "click"])] * 3
    return pl.DataFrame(
        rows, schema={"user_id": pl.String, "doc_id": pl.String, "position": pl.Int64, "actions": pl.List(pl.String)},
        orient="row",
    )


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rec") / "recommender"
    config = RecommenderConfig(method="relmf", dim=4, epochs=10, lr=0.05, batch_size=N_USERS)
    summary = train_recommender(synthetic_results(), THETA, config, out)
    return out, summary


@pytest.fixture(scope="module")
def recommender(artifact: tuple[Path, dict]) -> Recommender:
    return Recommender(artifact[0])


def test_summary_counts_every_row(artifact: tuple[Path, dict]) -> None:
    _, summary = artifact
    assert summary["rows"] == N_USERS * 4 * SHOWN + 3
    assert summary["anonymous_rows"] == 3
    assert summary["users"] == N_USERS
    assert summary["pairs_per_level"]["click"] >= summary["pairs_per_level"]["love"] > 0


def test_top_k_equals_brute_force_over_unseen_items(artifact: tuple[Path, dict], recommender: Recommender) -> None:
    model = FactorizationModel.load(artifact[0] / MODEL_DIR)
    scores = model.scores()
    results = synthetic_results().filter(pl.col("user_id").is_not_null())
    clicked = set(results.filter(pl.col("actions").list.contains("click")).select("user_id", "doc_id").iter_rows())
    for user in ("user0", "user7", "user29"):
        row = model.user_ids.index(user)
        candidates = [i for i, doc in enumerate(model.item_ids) if (user, doc) not in clicked]
        expected = sorted(candidates, key=lambda i: -scores[row, i])[:8]
        got = recommender.recommend(user, k=8)
        assert [r.item_id for r in got] == [model.item_ids[i] for i in expected]
        np.testing.assert_allclose([r.score for r in got], scores[row, expected], rtol=1e-5)
        assert [r.rank for r in got] == list(range(1, 9))
        assert not any(r.fallback for r in got)


def test_exclude_seen_false_ranks_the_whole_catalog(recommender: Recommender) -> None:
    everything = recommender.recommend("user0", k=1000, exclude_seen=False)
    unseen = recommender.recommend("user0", k=1000)
    assert len(everything) == N_DOCS  # k beyond the catalog returns all of it, not an error
    assert {r.item_id for r in unseen} < {r.item_id for r in everything}
    assert [r.score for r in everything] == sorted((r.score for r in everything), reverse=True)


def test_unknown_user_is_a_clear_error_unless_cold_start(recommender: Recommender) -> None:
    with pytest.raises(UnknownUserError, match="unknown user 'stranger'"):
        recommender.recommend("stranger")
    fallback = recommender.recommend("stranger", k=5, cold_start="popular")
    assert len(fallback) == 5 and all(r.fallback for r in fallback)
    assert [r.score for r in fallback] == sorted((r.score for r in fallback), reverse=True)
    assert all(0 <= r.score <= 1 for r in fallback)


def test_cold_start_can_be_the_default(artifact: tuple[Path, dict], recommender: Recommender) -> None:
    popular = Recommender(artifact[0], cold_start="popular")
    assert popular.recommend("stranger", k=3) == recommender.recommend("stranger", k=3, cold_start="popular")
    # A known user is never served the fallback.
    assert not any(r.fallback for r in popular.recommend("user3", k=3))


@pytest.mark.parametrize("k", [0, -1, 10**9, 2.5, True, "10"])
def test_bad_k_is_rejected(recommender: Recommender, k: object) -> None:
    with pytest.raises(SearchInputError, match="k must be"):
        recommender.recommend("user0", k=k)  # type: ignore[arg-type]


@pytest.mark.parametrize("user_id", ["", "   ", None, 7])
def test_bad_user_id_is_rejected(recommender: Recommender, user_id: object) -> None:
    with pytest.raises(SearchInputError, match="user_id"):
        recommender.recommend(user_id)  # type: ignore[arg-type]


def test_bad_cold_start_policy_is_rejected(artifact: tuple[Path, dict], recommender: Recommender) -> None:
    with pytest.raises(SearchInputError, match="cold_start"):
        recommender.recommend("stranger", cold_start="random")
    with pytest.raises(SearchInputError, match="cold_start"):
        Recommender(artifact[0], cold_start="guess")


def test_missing_artifact_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(MissingIndexError, match=r"recommender artifact folder .*dvc repro feedback"):
        Recommender(tmp_path / "nothing")


@pytest.mark.parametrize(
    ("name", "content"),
    [(INDEX_FILE, b"garbage" * 10), (VECTORS_FILE, b"PK\x03\x04 not a zip"), (MANIFEST_FILE, b"{not json")],
)
def test_corrupt_artifact_says_which_stage_rebuilds_it(
    artifact: tuple[Path, dict], tmp_path: Path, name: str, content: bytes
) -> None:
    damaged = tmp_path / "recommender"
    shutil.copytree(artifact[0], damaged)
    (damaged / name).write_bytes(content)
    with pytest.raises(CorruptIndexError, match=rf"recommender .* is unusable at .*{name}.*dvc repro feedback"):
        Recommender(damaged)


def test_concurrent_calls_match_sequential_ones(recommender: Recommender) -> None:
    users = [f"user{i % N_USERS}" for i in range(120)]
    sequential = [recommender.recommend(u, k=5) for u in users]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda u: recommender.recommend(u, k=5), users))
    assert concurrent == sequential
