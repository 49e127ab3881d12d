"""Fusing rankings of several retrievers into one, keeping each document's score components.

Two methods: `interpolate`, a convex combination of per-query min-max normalised scores (a document a
ranking lacks counts 0 there), and `rrf`, reciprocal rank fusion, weighted. Every fused document keeps
one `Component` per ranking, so a user can see which retriever put it where.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from indexing.retriever import Ranking


@dataclass(frozen=True)
class Component:
    """One ranking's part in a document's score."""

    source: str  # the ranking: a mode, "<mode>+prf" after Rocchio PRF, or an own-feedback PRF mode (bm25_rm3)
    score: float | None  # the retriever's own score; None when the ranking does not hold the document
    fused: float  # the value fusion summed: the min-max score or 1 / (rrf_k + rank); 0 when absent
    weight: float  # the ranking's weight in the fusion


@dataclass(frozen=True)
class ScoredDoc:
    doc_id: str
    score: float
    components: tuple[Component, ...]


def minmax(ranking: Ranking) -> dict[str, float]:
    """Scores mapped to [0, 1] within the ranking; a ranking whose scores are all equal maps to 1."""
    if not ranking:
        return {}
    scores = [score for _, score in ranking]
    low, high = min(scores), max(scores)
    span = high - low
    return {doc_id: (score - low) / span if span > 0 else 1.0 for doc_id, score in ranking}


def reciprocal_ranks(ranking: Ranking, rrf_k: int) -> dict[str, float]:
    return {doc_id: 1.0 / (rrf_k + rank) for rank, (doc_id, _) in enumerate(ranking, start=1)}


def fuse(rankings: Mapping[str, Ranking], weights: Mapping[str, float], k: int, method: str = "interpolate",
         rrf_k: int = 60) -> list[ScoredDoc]:
    """The top `k` documents of the weighted fusion of `rankings` (by source), best first.

    Ties break by document id, so a fusion is the same whatever the order of its inputs.
    """
    if method == "interpolate":
        fused_values = {source: minmax(ranking) for source, ranking in rankings.items()}
    elif method == "rrf":
        fused_values = {source: reciprocal_ranks(ranking, rrf_k) for source, ranking in rankings.items()}
    else:
        raise ValueError(f"unknown fusion method {method!r}; choose interpolate or rrf")
    raw = {source: dict(ranking) for source, ranking in rankings.items()}
    totals: dict[str, float] = {}
    for source, values in fused_values.items():
        for doc_id, value in values.items():
            totals[doc_id] = totals.get(doc_id, 0.0) + weights[source] * value
    best = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [
        ScoredDoc(doc_id, total, tuple(
            Component(source, raw[source].get(doc_id), fused_values[source].get(doc_id, 0.0), weights[source])
            for source in rankings
        ))
        for doc_id, total in best
    ]


def unfused(source: str, ranking: Ranking) -> list[ScoredDoc]:
    """A single ranking in fused form: each document's one component is the ranking's own score."""
    return [ScoredDoc(doc_id, score, (Component(source, score, score, 1.0),)) for doc_id, score in ranking]
