"""Evaluation metrics: judged (TREC-style, via ir_measures) and counterfactual (from click logs).

`evaluate(qrels, run, metrics)` is the judged surface; `ips_clicks_at_k` estimates, from the
logs of the logging ranker, how many clicks another ranking would have received.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ir_measures
import numpy as np
import polars as pl

from clickloop.beir import Qrels, Run

DEFAULT_METRICS = ("nDCG@10", "R@100", "RR@10")  # RR@10 is MRR@10 averaged over queries


def evaluate(qrels: Qrels, run: Run, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Mean of each metric over the judged queries (queries the run misses count as 0)."""
    if not qrels:
        raise ValueError("no judgments: cannot compute judged metrics")
    measures = [ir_measures.parse_measure(m) for m in metrics]
    # ir_measures averages over the queries in the run only; judged queries a retriever
    # returned nothing for must still count, as zeros.
    complete_run = {qid: run.get(qid) or {} for qid in qrels}
    per_query: dict[str, dict[str, float]] = {str(m): {} for m in measures}
    for row in ir_measures.iter_calc(measures, qrels, complete_run):
        per_query[str(row.measure)][row.query_id] = row.value
    return {str(m): sum(per_query[str(m)].values()) / len(qrels) for m in measures}


@dataclass(frozen=True)
class CounterfactualEstimate:
    """Estimated clicks per query in the top k of a target ranking, with its standard error."""

    value: float
    stderr: float
    n_queries: int
    coverage: float  # share of logged clicks whose document the target ranking placed in its top k


def checked_propensities(logged: pl.DataFrame, propensities: Sequence[float],
                         clip: float) -> tuple[np.ndarray, np.ndarray]:
    """The examination curve θ and θ floored at `clip`, after checking there are logs to weigh with it."""
    if logged.is_empty():
        raise ValueError("no logged results: cannot estimate counterfactual clicks")
    theta = np.asarray(propensities, dtype=float)
    if theta.ndim != 1 or len(theta) == 0 or (theta <= 0).any():
        raise ValueError("propensities must be a non-empty sequence of positive numbers")
    return theta, np.maximum(theta, clip)


def ips_clicks_at_k(
    logged: pl.DataFrame,
    target: Mapping[str, Sequence[str]],
    propensities: Sequence[float],
    k: int = 10,
    clip: float = 0.01,
) -> CounterfactualEstimate:
    """IPS estimate of clicks@k a target ranking would get on the logged traffic.

    Under the position-based model a click at logged position p on document d is evidence
    of relevance weighted 1/θ_p; moved to position p' by the target ranking it would have
    been clicked with probability θ_p' times that relevance (Joachims et al., WSDM 2017).
    Clicks on documents the target puts below k earn nothing, and relevant documents the
    logging ranker never showed cannot be credited, so this is a lower bound for rankings
    far from the logging one. `clip` bounds θ from below to cap the variance.

    `logged` has one row per shown result: `query_id`, `user_query`, `doc_id`, `position`,
    `clicked`. `target` maps each query text to the target ranking (best first).
    """
    theta, clipped = checked_propensities(logged, propensities, clip)
    n_queries = logged["query_id"].n_unique()
    clicks = logged.filter(pl.col("clicked").cast(pl.Boolean)).select("query_id", "user_query", "doc_id", "position")

    target_rank = {
        (query, doc_id): rank for query, ranking in target.items() for rank, doc_id in enumerate(ranking[:k], start=1)
    }
    per_query: dict[str, float] = {}
    credited = 0
    for query_id, query, doc_id, position in clicks.iter_rows():
        rank = target_rank.get((query, doc_id))
        if rank is None:
            continue
        credited += 1
        logged_theta = clipped[min(position, len(clipped)) - 1]
        target_theta = theta[min(rank, len(theta)) - 1]
        per_query[query_id] = per_query.get(query_id, 0.0) + target_theta / logged_theta

    values = np.zeros(n_queries)
    values[: len(per_query)] = list(per_query.values())
    stderr = float(values.std(ddof=1) / math.sqrt(n_queries)) if n_queries > 1 else float("nan")
    coverage = credited / clicks.height if clicks.height else float("nan")
    return CounterfactualEstimate(float(values.mean()), stderr, n_queries, coverage)


def observed_clicks_at_k(logged: pl.DataFrame, k: int = 10) -> CounterfactualEstimate:
    """Clicks per query in the top k that the logging ranker actually received."""
    n_queries = logged["query_id"].n_unique()
    per_query = (
        logged.filter(pl.col("position") <= k)
        .group_by("query_id")
        .agg(pl.col("clicked").cast(pl.Int64).sum().alias("clicks"))["clicks"]
        .to_numpy()
        .astype(float)
    )
    stderr = float(per_query.std(ddof=1) / math.sqrt(n_queries)) if n_queries > 1 else float("nan")
    return CounterfactualEstimate(float(per_query.mean()), stderr, n_queries, 1.0)
