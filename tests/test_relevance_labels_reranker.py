"""The label-trained reranker learns which feature carries the labels, whatever their scale."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.reranker import FEATURES, LinearPairwiseReranker, RerankerConfig


def candidates(n_queries: int, per_query: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_queries * per_query
    frame = pl.DataFrame({name: rng.normal(size=n) for name in FEATURES}).with_columns(
        pl.Series("query_id", np.repeat(np.arange(n_queries), per_query).astype(str)),
        pl.Series("doc_id", np.arange(n).astype(str)),
    )
    # Relevance follows the dense cosine only; labels are continuous, like IPS estimates.
    return frame.with_columns((pl.col("dense_cosine") * 3).exp().alias("label"))


def test_the_reranker_weights_the_feature_that_orders_the_labels() -> None:
    train, test = candidates(60, 20, seed=0), candidates(30, 20, seed=1)
    reranker = LinearPairwiseReranker(RerankerConfig()).fit(train, "label")
    weights = reranker.feature_weights()
    assert max(weights, key=lambda name: abs(weights[name])) == "dense_cosine"
    assert weights["dense_cosine"] > 0
    run = reranker.rerank(test)
    scored = test.with_columns(
        pl.Series("score", [run[q][d] for q, d in zip(test["query_id"], test["doc_id"], strict=True)])
    )
    agreement = scored.group_by("query_id").agg(pl.corr("score", "label", method="spearman").alias("rho"))
    assert agreement["rho"].mean() > 0.9


def test_labels_that_order_nothing_are_refused() -> None:
    flat = candidates(3, 5, seed=2).with_columns(pl.lit(0.0).alias("label"))
    with pytest.raises(ValueError, match="orders no pair"):
        LinearPairwiseReranker(RerankerConfig()).fit(flat, "label")
    with pytest.raises(RuntimeError, match="not trained"):
        LinearPairwiseReranker(RerankerConfig()).score(flat)


def test_pairs_within_their_standard_errors_teach_nothing() -> None:
    # The labels follow the dense cosine, but half of the candidates carry a large error that
    # follows the BM25 score; their standard errors say so.
    train = candidates(60, 20, seed=3)
    noisy = pl.Series((np.arange(train.height) % 2).astype(bool))
    train = train.with_columns(
        pl.when(noisy).then(pl.col("label") + 100 + 20 * pl.col("first_stage_score")).otherwise("label").alias("label"),
        pl.when(noisy).then(1e3).otherwise(1e-3).alias("se"),
    )
    trusting = LinearPairwiseReranker(RerankerConfig()).fit(train, "label").feature_weights()
    careful = LinearPairwiseReranker(RerankerConfig(min_pair_z=2.0)).fit(train, "label", "se").feature_weights()
    # Trusting every pair learns the error's BM25 preference; the careful fit does not.
    assert trusting["first_stage_score"] > 0.2 * trusting["dense_cosine"] > 0
    assert abs(careful["first_stage_score"]) < 0.05 * careful["dense_cosine"]


def test_a_standard_error_column_must_exist() -> None:
    with pytest.raises(ValueError, match="lacks column"):
        LinearPairwiseReranker(RerankerConfig()).fit(candidates(3, 5, seed=4), "label", "label_se")
