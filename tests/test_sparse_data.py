"""Training queries of the sparse encoder: click labels to positives and negatives, teacher
candidates and the normalised ensemble target, pseudo-queries for the cold start."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from clickloop.beir import Document
from models.feedback_queries import CLICKS, LabelledQuery, click_label_queries, pseudo_queries, with_teachers


def test_click_labels_keep_only_what_the_posterior_is_sure_of() -> None:
    labels = pl.DataFrame({
        "query": ["q"] * 4,
        "doc_id": ["sure", "doubtful", "wide", "bad"],
        "posterior_relevance": [0.9, 0.55, 0.6, 0.05],
        "posterior_sd": [0.05, 0.05, 0.5, 0.02],
    })  # mean relevance 0.525
    (query,) = click_label_queries(labels)
    assert query.labels["sure"] == pytest.approx(0.9)
    assert query.labels["bad"] == 0.0
    assert np.isnan(query.labels["doubtful"]) and np.isnan(query.labels["wide"])
    assert query.click_scores == {"sure": 0.9, "doubtful": 0.55, "wide": 0.6, "bad": 0.05}


def _teacher(scores: dict[str, float]):
    def search(queries, k):
        return {qid: sorted(scores.items(), key=lambda item: -item[1])[:k] for qid in queries}

    return search


def test_candidates_are_the_teachers_lists_and_the_target_their_normalised_mean() -> None:
    rows = {d: i for i, d in enumerate(["a", "b", "c", "d", "e"])}
    teachers = {"bm25": _teacher({"a": 10.0, "b": 5.0, "c": 0.0}), "dense": _teacher({"b": 0.9, "d": 0.5})}
    query = LabelledQuery("text", {"a": 1.0, "e": np.nan}, click_scores={"a": 0.8, "e": 0.2})
    (trained,) = with_teachers([query], rows, teachers, depth=3)
    docs = [next(d for d, r in rows.items() if r == row) for row in trained.candidates]
    assert docs == ["a", "e", "b", "c", "d"]  # labelled first, then the teachers' lists
    target = dict(zip(docs, trained.target, strict=True))
    # bm25 normalised a 1, b .5, c 0 (e, d below its list: 0); dense b 1, d 0 (a, c, e: 0); clicks a 1, e 0
    assert target["a"] == pytest.approx((1 + 0 + 1) / 3)
    assert target["b"] == pytest.approx((0.5 + 1) / 2)  # the clicks never scored b
    assert list(trained.positives) == [0]
    assert docs[int(trained.negatives[0])] == "b"  # mined beyond the labels; "e" is doubtful, neither

    (bm25_only,) = with_teachers([query], rows, teachers, depth=3, distill_from=["bm25"])
    assert dict(zip(docs, bm25_only.target, strict=True))["b"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="distill_from"):
        with_teachers([query], rows, teachers, depth=3, distill_from=["colbert"])
    assert CLICKS == "clicks"


def test_pseudo_queries_come_from_their_document() -> None:
    docs = [Document(f"d{i}", f"Title number {i}", f"First sentence about item {i}. Another sentence here {i}.")
            for i in range(30)]
    queries = pseudo_queries(docs, n=10, seed=3)
    assert len(queries) == 10
    for query in queries:
        (doc_id,) = query.labels
        doc = next(d for d in docs if d.doc_id == doc_id)
        assert query.text in f"{doc.title} {doc.text}"
    assert [q.text for q in pseudo_queries(docs, n=10, seed=3)] == [q.text for q in queries]
