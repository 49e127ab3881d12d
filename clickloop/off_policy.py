"""Direct-model (DM) and doubly robust (DR) estimates of the clicks@k a target ranking would get
on the logged traffic, beside the IPS estimate of `clickloop.metrics.ips_clicks_at_k`.

Position-based model: a result at position p is clicked with probability theta_p * r(q, d), r the
probability of a click when examined at position 1 (theta relative to theta_1). For one logged
search i of query q, with the target ranking's top k d_1..d_k:

    DM_i = sum_r theta_r * rhat(q, d_r)
    DR_i = DM_i + sum over results shown in search i whose document the target ranks r <= k, at
           logged position p, clicked c:  (theta_r / theta~_p) * (c - theta_p * rhat(q, d))

with rhat the direct model (the feedback stage's debiased labels where a pair was shown, the reward
model's click level elsewhere) and theta~ the clipped theta of the IPS weight. With rhat = 0 the DR
sum is exactly the IPS estimate; where rhat is right it stays unbiased whatever the support, and
where the target's document was shown the correction removes rhat's bias (in expectation, under
the PBM with the right theta). Documents the logs never showed for a query are credited by the
direct model alone: `coverage` says how much of the target the logs could check (the share of
target top-k slots, over the logged searches, whose document that search showed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from clickloop.metrics import CounterfactualEstimate, checked_propensities

Relevance = Mapping[tuple[str, str], float]  # (query text, doc id) -> P(click | examined at position 1)


def direct_and_doubly_robust(
    logged: pl.DataFrame,
    target: Mapping[str, Sequence[str]],
    propensities: Sequence[float],
    relevance: Relevance,
    k: int = 10,
    clip: float = 0.01,
) -> dict[str, CounterfactualEstimate]:
    """{"dm": ..., "dr": ...} for the target ranking on the logged searches.

    `logged` has one row per shown result (`query_id`, `user_query`, `doc_id`, `position`,
    `clicked`); `target` maps query text -> ranking; `relevance` gives rhat for every (query text,
    doc) in the targets' top k (a missing pair reads 0). Queries the target does not rank get 0.
    """
    theta, clipped = checked_propensities(logged, propensities, clip)

    def at(curve: np.ndarray, position: int) -> float:
        return float(curve[min(position, len(curve)) - 1])

    top = {query: list(dict.fromkeys(ranking))[:k] for query, ranking in target.items()}
    dm_of_query = {
        query: sum(at(theta, r) * relevance.get((query, d), 0.0) for r, d in enumerate(docs, 1))
        for query, docs in top.items()
    }
    rank_of = {(query, d): r for query, docs in top.items() for r, d in enumerate(docs, 1)}
    searches = logged.select("query_id", "user_query").unique("query_id", maintain_order=True)
    dm, correction = {}, {}
    for query_id, query in searches.iter_rows():
        dm[query_id] = dm_of_query.get(query, 0.0)
        correction[query_id] = 0.0
    supported = 0
    for query_id, query, doc_id, position, clicked in logged.select(
        "query_id", "user_query", "doc_id", "position", "clicked"
    ).iter_rows():
        rank = rank_of.get((query, doc_id))
        if rank is None:
            continue
        supported += 1
        observed = float(bool(clicked))
        expected = at(theta, position) * relevance.get((query, doc_id), 0.0)
        correction[query_id] += at(theta, rank) / at(clipped, position) * (observed - expected)
    ids = list(dm)
    dm_values = np.array([dm[i] for i in ids])
    dr_values = dm_values + np.array([correction[i] for i in ids])
    slots = sum(len(top.get(query, ())) for _, query in searches.iter_rows())
    coverage = supported / slots if slots else float("nan")
    return {"dm": _estimate(dm_values, coverage), "dr": _estimate(dr_values, coverage)}


def _estimate(values: np.ndarray, coverage: float) -> CounterfactualEstimate:
    n = len(values)
    stderr = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return CounterfactualEstimate(float(values.mean()), stderr, n, coverage)
