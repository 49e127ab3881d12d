""""Bring your own data" fixtures: a small catalog as a user's BEIR folder (with test judgments only,
or none) and a few days of UBI logs, simulated without a JVM (a word-overlap logging ranker)."""

from __future__ import annotations

import re
from pathlib import Path

from clickloop.beir import Document, Qrels, write_beir
from clickloop.catalog import Catalog, CatalogConfig, generate_catalog
from clickloop.simulation import ExplorationConfig, Simulator, SimulatorConfig, write_simulation

SMALL = CatalogConfig(n_items=200, n_train_queries=24, n_test_queries=16)
WORD = re.compile(r"\w+")


def catalog(seed: int = 7) -> Catalog:
    return generate_catalog(SMALL, seed)


def overlap_rankings(docs: list[Document], queries: dict[str, str], k: int) -> dict[str, list[str]]:
    """Each query's top `k` documents by shared words (ties by doc id): a logging ranker without Lucene."""
    words = {d.doc_id: set(WORD.findall(d.contents.lower())) for d in docs}
    rankings = {}
    for qid, text in queries.items():
        terms = set(WORD.findall(text.lower()))
        scored = sorted(words, key=lambda doc_id: (-len(terms & words[doc_id]), doc_id))
        rankings[qid] = scored[:k]
    return rankings


def simulate_logs(data: Catalog, log_dir: Path, truth_dir: Path, days: int = 2, sessions_per_day: int = 150,
                  seed: int = 3) -> dict:
    """UBI logs of the catalog's train queries, as a deployment would have logged them."""
    config = SimulatorConfig(days=days, sessions_per_day=sessions_per_day, n_users=40,
                             exploration=ExplorationConfig(scheme="shuffle_top_n", share=0.3, n=10))
    queries = {qid: data.queries[qid] for qid in data.qrels["train"]}
    rankings = overlap_rankings(data.documents, queries, config.top_k)
    return write_simulation(Simulator(config, queries, rankings, data.qrels["train"], seed), log_dir, truth_dir)


def write_source(root: Path, docs: list[Document], queries: dict[str, str] | None, qrels: dict[str, Qrels]) -> Path:
    """A user's BEIR folder; `queries=None` leaves queries.jsonl out (a catalog with no judgments needs none)."""
    write_beir(root, docs, queries or {}, qrels)
    if queries is None:
        (root / "queries.jsonl").unlink()
    if not qrels:
        (root / "qrels").rmdir()
    return root
