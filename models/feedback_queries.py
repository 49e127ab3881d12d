"""Training queries for the retrievers learned from the feedback (the sparse encoder, the dense
encoder), from what the pipeline already has.

A signal gives labelled queries: the feedback stage's debiased click labels, judgments (the upper
reference), or pseudo-queries drawn from the corpus when there are no logs yet (cold start). The
teachers (retrievers the Searcher serves, e.g. BM25 and dense) then give each query its candidate
list, the hard negatives beyond what was shown, and the ensemble target the student distils:
each teacher's scores min-max normalised over the candidates, averaged over the teachers that
scored a candidate (the click labels score only the shown documents). Each learner validates on a
seeded split of these training queries (`split_queries`), never on test judgments, by nDCG@10.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from clickloop.beir import BeirDataset, Document, Qrels

if TYPE_CHECKING:  # only for the annotation: this module must not load the indices' engines
    from indexing.searcher import Searcher

Ranking = list[tuple[str, float]]
BatchSearch = Callable[[Mapping[str, str], int], dict[str, Ranking]]
CLICKS = "clicks"  # the teacher name of the click labels
# auto: clicks when the feedback stage gave labels, else cold_start; judgments: the qrels of the train split
SIGNALS = ("auto", "clicks", "cold_start", "judgments")


@dataclass
class LabelledQuery:
    """A query with what a signal says of some documents: a label > 0 is a positive (its weight),
    0 a negative, NaN neither; `click_scores` is the click teacher's view, where logs exist."""

    text: str
    labels: dict[str, float]
    click_scores: dict[str, float] | None = None


@dataclass
class TrainingQuery:
    """A query, its candidate documents (corpus rows), the ensemble target and the labels."""

    text: str
    candidates: np.ndarray  # int corpus rows
    target: np.ndarray  # ensemble score per candidate in [0, 1]
    labels: np.ndarray  # per candidate: > 0 positive weight, 0 negative, NaN neither

    @property
    def positives(self) -> np.ndarray:
        return np.flatnonzero(np.nan_to_num(self.labels) > 0)

    @property
    def negatives(self) -> np.ndarray:
        return np.flatnonzero(self.labels == 0)


def click_label_queries(labels: pl.DataFrame) -> list[LabelledQuery]:
    """Queries from the feedback stage's `labels.parquet` (docs/contracts.md).

    A shown document is a positive when its debiased posterior relevance stands one posterior sd
    above the mean relevance of all shown pairs, a negative when it stands one sd below, and
    neither in between: a pair hardly examined has a wide posterior and teaches nothing.
    """
    mean = float(labels["posterior_relevance"].mean())
    queries = []
    for (query,), group in labels.group_by(["query"], maintain_order=True):
        posterior = group["posterior_relevance"].to_numpy()
        sd = group["posterior_sd"].to_numpy()
        label = np.where(posterior - sd > mean, posterior, np.where(posterior + sd < mean, 0.0, np.nan))
        doc_ids = group["doc_id"].to_list()
        queries.append(
            LabelledQuery(
                str(query),
                dict(zip(doc_ids, label.tolist(), strict=True)),
                dict(zip(doc_ids, posterior.tolist(), strict=True)),
            )
        )
    return queries


def judged_queries(queries: Mapping[str, str], qrels: Qrels) -> list[LabelledQuery]:
    """Queries with graded judgments: each judged document's grade is its label."""
    return [
        LabelledQuery(queries[qid], {doc: float(grade) for doc, grade in judged.items()})
        for qid, judged in qrels.items()
        if qid in queries and any(g > 0 for g in judged.values())
    ]


def pseudo_queries(docs: Sequence[Document], n: int, seed: int, max_words: int = 16) -> list[LabelledQuery]:
    """Cold start: `n` documents drawn at random, each queried by its title or by one of its
    sentences (cut to `max_words`), with the document itself the only positive."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(docs), size=min(n, len(docs)), replace=False)
    queries = []
    for row in chosen:
        doc = docs[row]
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", doc.text) if len(s.split()) >= 4]
        options = ([doc.title] if len(doc.title.split()) >= 2 else []) + sentences
        if not options:
            continue
        text = " ".join(options[rng.integers(len(options))].split()[:max_words])
        queries.append(LabelledQuery(text, {doc.doc_id: 1.0}))
    return queries


def signal_queries(
    signal: str,
    labels_file: str | Path,
    dataset: BeirDataset,
    train_split: str,
    docs: Sequence[Document],
    n_pseudo: int,
    seed: int,
) -> tuple[str, list[LabelledQuery]]:
    """The signal actually used (`auto` resolved) and its labelled queries: the click labels of
    `labels_file`, the judgments of `train_split`, or `n_pseudo` pseudo-queries drawn from `docs`."""
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    labels = Path(labels_file)
    if signal == "auto":
        # An empty labels table is what the feedback stage writes before any log: a cold start.
        has_labels = labels.is_file() and pl.scan_parquet(labels).select(pl.len()).collect().item() > 0
        signal = "clicks" if has_labels else "cold_start"
    if signal == "clicks":
        return signal, click_label_queries(pl.read_parquet(labels))
    if signal == "judgments":
        qrels: Qrels = dataset.qrels(train_split)
        return signal, judged_queries(dataset.queries(train_split), qrels)
    return signal, pseudo_queries(docs, n_pseudo, seed)


def searcher_teachers(searcher: Searcher, modes: Sequence[str]) -> dict[str, BatchSearch]:
    """Each mode of `searcher` as a teacher: (query id -> text, k) -> (doc id, score) rankings."""

    def teacher(mode: str) -> BatchSearch:
        def search(queries: Any, k: int) -> dict[str, list[tuple[str, float]]]:
            hits = searcher.batch_search(dict(queries), k=k, mode=mode)
            return {qid: [(h.doc_id, h.score) for h in ranked] for qid, ranked in hits.items()}

        return search

    return {mode: teacher(mode) for mode in modes}


def with_teachers(
    labelled: Sequence[LabelledQuery],
    doc_rows: Mapping[str, int],
    teachers: Mapping[str, BatchSearch],
    depth: int,
    distill_from: Sequence[str] | None = None,
) -> list[TrainingQuery]:
    """Give each query its candidates (every teacher's top `depth` and its labelled documents) and
    the ensemble target. Candidates no label speaks of are negatives (mined beyond what was shown).

    `teachers` maps a name to a batch search. `distill_from` names the teachers whose scores form the
    target (default: all of them and the click labels, `CLICKS`, where the queries carry them), so an
    ablation can change the target and keep the candidates.
    """
    sources = list(distill_from) if distill_from is not None else [*teachers, CLICKS]
    unknown = set(sources) - {*teachers, CLICKS}
    if unknown or not sources:
        raise ValueError(f"distill_from {sources} must name some of the teachers {list(teachers)} or {CLICKS!r}")
    texts = {f"q{i}": q.text for i, q in enumerate(labelled)}
    rankings = {name: search(texts, depth) for name, search in teachers.items()}
    out = []
    for i, query in enumerate(labelled):
        qid = f"q{i}"
        lists = {name: dict(ranked[qid]) for name, ranked in rankings.items()}
        known = [d for d in query.labels if d in doc_rows]
        candidates = list(dict.fromkeys([*known, *(d for scores in lists.values() for d in scores)]))
        if len(candidates) < 2:
            continue
        views = [_normalised(lists[name], candidates, missing="floor") for name in sources if name != CLICKS]
        if CLICKS in sources:
            views.append(_normalised(query.click_scores or {}, candidates, missing="nan"))
        stacked = np.vstack(views)
        scored = (~np.isnan(stacked)).sum(axis=0)
        target = np.nansum(stacked, axis=0) / np.maximum(scored, 1)
        labels = np.array([query.labels.get(d, 0.0) for d in candidates], dtype=np.float64)
        out.append(TrainingQuery(query.text, np.array([doc_rows[d] for d in candidates]), target, labels))
    return out


def _normalised(scores: Mapping[str, float], candidates: Sequence[str], missing: str) -> np.ndarray:
    """Min-max normalise one teacher's scores over the candidates it scored. A candidate outside its
    list takes its lowest score ("floor": it ranked below all of them) or no score ("nan")."""
    values = np.array([scores.get(d, math.nan) for d in candidates], dtype=np.float64)
    scored = values[~np.isnan(values)]
    if scored.size == 0:
        return np.full(len(candidates), math.nan)
    low, high = scored.min(), scored.max()
    if missing == "floor":
        values = np.where(np.isnan(values), low, values)
    return (values - low) / (high - low) if high > low else np.where(np.isnan(values), math.nan, 1.0)


def split_queries(queries: Sequence[TrainingQuery], share: float, seed: int) -> tuple[list, list]:
    """A seeded train / validation split of the training queries (queries with a positive only
    validate: a list with nothing to find says nothing about the ranking)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(queries))
    judged = [i for i in order if len(queries[i].positives)]
    n_val = max(1, round(share * len(judged)))
    val = set(judged[:n_val])
    return [queries[i] for i in order if i not in val], [queries[i] for i in sorted(val)]


def ndcg_at_10(gains_in_rank_order: np.ndarray, ideal: Sequence[float]) -> float:
    """nDCG@10 of a ranking's gains, against the ideal ordering of all the query's `ideal` gains."""
    discounts = 1.0 / np.log2(np.arange(2, 12))
    best = np.sort(np.asarray(ideal, dtype=float))[::-1][:10]
    ideal_dcg = float((best * discounts[: len(best)]).sum())
    gains = np.asarray(gains_in_rank_order, dtype=float)[:10]
    return float((gains * discounts[: len(gains)]).sum()) / ideal_dcg if ideal_dcg > 0 else 0.0
