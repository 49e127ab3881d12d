"""A small feature-based reranker trained from graded or click-derived labels.

It reranks a first-stage candidate list (e.g. BM25 top-100) with a linear score over
query-document features that transfer to unseen queries: the first-stage score (raw,
relative to the query's best, and its rank), the all-MiniLM-L6-v2 cosine (raw and relative
to the query's best) and query-term overlap with the title and the abstract. It is trained
with a pairwise logistic loss inside each query, each pair weighted by its label gap, so
continuous labels (click rates, IPS estimates) and grades (qrels) train it alike; labels
with standard errors train it only through the pairs their errors cannot explain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from clickloop.beir import Document, Run
from clickloop.env import torch_device
from models.text_features import TextEmbeddingCache

FEATURES = (
    "first_stage_score",
    "first_stage_score_vs_best",
    "first_stage_inverse_rank",
    "dense_cosine",
    "dense_cosine_vs_best",
    "title_overlap",
    "text_overlap",
)
_TOKEN = re.compile(r"[a-z0-9]+")


@dataclass
class RerankerConfig:
    l2: float = 1e-3  # penalty on the (standardised) feature weights
    max_iterations: int = 100  # L-BFGS steps; the convex loss converges well within them
    # With label standard errors, learn only from pairs whose label gap is at least this many
    # standard errors of the gap: click labels differ by noise far more often than by relevance.
    min_pair_z: float = 2.0


def candidate_features(
    queries: Mapping[str, str], candidates: Run, documents: Mapping[str, Document], embeddings: TextEmbeddingCache
) -> pl.DataFrame:
    """`query_id`, `doc_id` and the `FEATURES` columns for every candidate in `candidates`.

    `embeddings` caches query vectors by query text and document vectors by doc id.
    """
    missing = [qid for qid in candidates if qid not in queries]
    if missing:
        raise ValueError(f"candidates name {len(missing)} unknown query id(s), e.g. {missing[:3]}")
    embeddings.embed({queries[qid]: queries[qid] for qid in candidates})
    embeddings.embed({doc_id: documents[doc_id].contents for scores in candidates.values() for doc_id in scores})
    rows = []
    for qid, scores in candidates.items():
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        doc_ids = [doc_id for doc_id, _ in ranked]
        first_stage = np.array([score for _, score in ranked])
        cosine = embeddings.matrix(doc_ids) @ embeddings.matrix([queries[qid]])[0]
        query_terms = set(_TOKEN.findall(queries[qid].lower()))
        for rank, doc_id in enumerate(doc_ids):
            doc = documents[doc_id]
            rows.append(
                (
                    qid,
                    doc_id,
                    first_stage[rank],
                    first_stage[rank] / first_stage[0] if first_stage[0] else 0.0,
                    1.0 / (rank + 1),
                    float(cosine[rank]),
                    float(cosine[rank] - cosine.max()),
                    _overlap(query_terms, doc.title),
                    _overlap(query_terms, doc.text),
                )
            )
    return pl.DataFrame(rows, schema=["query_id", "doc_id", *FEATURES], orient="row")


def _overlap(query_terms: set[str], text: str) -> float:
    """Share of the query's terms that occur in `text`."""
    if not query_terms:
        return 0.0
    return len(query_terms & set(_TOKEN.findall(text.lower()))) / len(query_terms)


class LinearPairwiseReranker:
    """score = w · standardised features; fitted by a label-gap-weighted pairwise logistic loss."""

    def __init__(self, config: RerankerConfig) -> None:
        self.config = config
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.weights: np.ndarray | None = None

    def fit(self, frame: pl.DataFrame, label: str, standard_error: str | None = None) -> LinearPairwiseReranker:
        """Train on `frame` (`query_id`, the `FEATURES`, and the numeric `label` column).

        `standard_error` names a column with each label's standard error (null: unknown, taken
        as the largest in the frame); pairs whose gap is below `min_pair_z` standard errors of
        the gap are left out. Without it every ordered pair counts (exact labels, e.g. qrels).
        """
        needed = ("query_id", label, *FEATURES, *([standard_error] if standard_error else []))
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"training frame lacks column(s) {missing}")
        x = frame.select(FEATURES).to_numpy().astype(np.float64)
        self.mean = x.mean(axis=0)
        spread = x.std(axis=0)
        self.scale = np.where(spread > 0, spread, 1.0)
        better, worse, gap = _preference_pairs(frame["query_id"].to_numpy(), frame[label].to_numpy().astype(float))
        if standard_error is not None:
            se = frame[standard_error].cast(pl.Float64)
            se = se.fill_null(se.max() if se.drop_nulls().len() else 0.0).to_numpy()
            with np.errstate(divide="ignore"):
                significant = gap / np.sqrt(se[better] ** 2 + se[worse] ** 2) >= self.config.min_pair_z
            better, worse, gap = better[significant], worse[significant], gap[significant]
        if not len(gap):
            raise ValueError(f"label {label!r} orders no pair of candidates within a query: nothing to learn")

        device = torch_device()
        features = torch.tensor((x - self.mean) / self.scale, dtype=torch.float32, device=device)
        better_t, worse_t = (torch.tensor(i, device=device) for i in (better, worse))
        gap_t = torch.tensor(gap / gap.sum(), dtype=torch.float32, device=device)
        weights = torch.zeros(len(FEATURES), device=device, requires_grad=True)
        # A linear model on a handful of features: full-batch L-BFGS on the convex loss needs
        # no mini-batching, epochs or checkpoints, so a Lightning loop would add nothing.
        optimizer = torch.optim.LBFGS([weights], max_iter=self.config.max_iterations, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            optimizer.zero_grad()
            scores = features @ weights
            margin = scores[better_t] - scores[worse_t]
            value = (gap_t * torch.nn.functional.softplus(-margin)).sum() + self.config.l2 * weights.pow(2).sum()
            value.backward()
            return value

        optimizer.step(loss)
        self.weights = weights.detach().cpu().numpy().astype(np.float64)
        return self

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("the reranker is not trained: call fit() first")
        x = frame.select(FEATURES).to_numpy().astype(np.float64)
        return ((x - self.mean) / self.scale) @ self.weights

    def rerank(self, frame: pl.DataFrame) -> Run:
        """The candidates of `frame` as a run scored by this reranker."""
        run: Run = {}
        for qid, doc_id, score in zip(frame["query_id"], frame["doc_id"], self.score(frame), strict=True):
            run.setdefault(qid, {})[doc_id] = float(score)
        return run

    def feature_weights(self) -> dict[str, float]:
        return dict(zip(FEATURES, map(float, self.weights), strict=True)) if self.weights is not None else {}


def _preference_pairs(query_ids: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (better, worse) of candidates of one query with label[better] > label[worse]."""
    better, worse = [], []
    order = np.argsort(query_ids, kind="stable")
    boundaries = np.flatnonzero(query_ids[order][1:] != query_ids[order][:-1]) + 1
    for rows in np.split(order, boundaries):
        diff = labels[rows][:, None] - labels[rows][None, :]
        i, j = np.nonzero(diff > 0)
        better.append(rows[i])
        worse.append(rows[j])
    better_all, worse_all = np.concatenate(better), np.concatenate(worse)
    return better_all, worse_all, labels[better_all] - labels[worse_all]
