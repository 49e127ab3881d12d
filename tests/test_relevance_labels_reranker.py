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
