"""The direct model of the off-policy click estimates: rhat(q, d) = P(click | examined at position 1).

Where the logs showed a (query, document) pair, the feedback stage's debiased label
(`posterior_relevance` of `labels.parquet`, the beta-binomial posterior given the clicks and the
expected examinations); elsewhere the click level of the reward model's GNOLR (learned position
bias, theta_1 = 1: the same scale), which reads the query and document texts, so it answers for
pairs the logging ranker never showed. `clickloop.off_policy` corrects it with IPS where it can.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from clickloop.beir import BeirDataset
from models.propensity import QUERY, normalized_query

CLICK_LEVEL = "click"


def click_relevance(
    pairs: Sequence[tuple[str, str]], feedback_dir: Path, dataset_dir: Path
) -> dict[tuple[str, str], float] | None:
    """rhat for each (query text, doc id) pair, or None when the feedback stage left no labels.

    Pairs without a label get the GNOLR click level when `feedback_dir/reward` holds a model with
    a click level, else 0 (the direct model then adds nothing there: DR reads as IPS).
    """
    labels_file = feedback_dir / "labels.parquet"
    if not labels_file.is_file():
        return None
    labels = pl.read_parquet(labels_file, columns=[QUERY, "doc_id", "posterior_relevance"])
    frame = pl.DataFrame(pairs, schema=["user_query", "doc_id"], orient="row").with_columns(
        normalized_query().alias(QUERY)
    )
    frame = frame.join(labels, on=[QUERY, "doc_id"], how="left")
    unlabelled = frame.filter(pl.col("posterior_relevance").is_null())
    predicted = _gnolr_click(unlabelled, feedback_dir / "reward", dataset_dir)
    if predicted is not None:
        frame = frame.join(predicted, on=["user_query", "doc_id"], how="left").with_columns(
            pl.col("posterior_relevance").fill_null(pl.col("gnolr_click"))
        )
    values = frame["posterior_relevance"].fill_null(0.0).to_list()
    return dict(zip(zip(frame["user_query"].to_list(), frame["doc_id"].to_list(), strict=True), values, strict=True))


def _gnolr_click(pairs: pl.DataFrame, reward_dir: Path, dataset_dir: Path) -> pl.DataFrame | None:
    """The GNOLR click level for `pairs` (user_query, doc_id, gnolr_click), or None without a model."""
    if pairs.is_empty() or not (reward_dir / "reward.json").is_file():
        return None
    from models.reward import LoveRewardModel  # torch: only when there is a model to run

    gnolr = LoveRewardModel.load(reward_dir).gnolr
    if CLICK_LEVEL not in gnolr.levels:
        return None
    wanted = set(pairs["doc_id"].to_list())
    docs = {doc.doc_id: doc.contents for doc in BeirDataset(dataset_dir).corpus() if doc.doc_id in wanted}
    known = pairs.filter(pl.col("doc_id").is_in(list(docs)))
    if known.is_empty():
        return None
    click = gnolr.predict(known.select("user_query", "doc_id"), docs)[:, gnolr.levels.index(CLICK_LEVEL)]
    return known.select("user_query", "doc_id").with_columns(gnolr_click=pl.Series(click, dtype=pl.Float64))
