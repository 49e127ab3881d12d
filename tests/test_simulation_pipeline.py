"""The simulate stage end to end on a small embedded catalog with a real Lucene BM25 logging ranker."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from clickloop.beir import BeirDataset
from clickloop.catalog import CatalogConfig
from clickloop.simulation import ExplorationConfig, SimulatorConfig
from pipeline.dataset import DatasetConfig, build_dataset
from pipeline.simulate import run_simulation

pytestmark = pytest.mark.jvm  # starts Lucene's JVM in this process: see the `test` target in Makefile


@pytest.mark.slow
def test_simulate_stage_logs_bm25_pages_of_train_queries(tmp_path: Path):
    from indexing.bm25 import BM25BuildConfig, BM25Index

    build_dataset(DatasetConfig(out_dir=str(tmp_path / "dataset"),
                                catalog=CatalogConfig(n_items=400, n_train_queries=40, n_test_queries=20)), seed=2)
    dataset = BeirDataset(tmp_path / "dataset")
    BM25Index.build(dataset, tmp_path / "bm25", BM25BuildConfig())
    index = BM25Index(tmp_path / "bm25")
    config = SimulatorConfig(
        days=2, sessions_per_day=300, dataset_dir=str(tmp_path / "dataset"), bm25_dir=str(tmp_path / "bm25"),
        out_dir=str(tmp_path / "logs"), truth_dir=str(tmp_path / "truth"),
        exploration=ExplorationConfig(scheme="none", share=0.0),
    )
    summary = run_simulation(config, seed=5)

    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["2025-01-06", "2025-01-07"]
    assert summary["totals"]["sessions"] == 600 and summary["totals"]["clicks"] > 0
    truth = pl.read_parquet(tmp_path / "truth" / "results.parquet")
    train = dataset.queries("train")
    assert set(truth["beir_query_id"]) <= set(train)  # test queries are never issued
    # Without exploration every page is BM25's top 10 for the issued query, in BM25's order.
    pages = truth.sort("position").group_by("query_id", maintain_order=True).agg("beir_query_id", "doc_id")
    bm25 = index.batch_search(train, 10)
    for row in pages.head(50).iter_rows(named=True):
        assert row["doc_id"] == [doc for doc, _ in bm25[row["beir_query_id"][0]]]
    # Grades are the hidden qrels of the issued query.
    qrels = dataset.qrels("train")
    sample = truth.head(200)
    for qid, doc, grade in sample.select("beir_query_id", "doc_id", "grade").iter_rows():
        assert grade == qrels[qid].get(doc, 0)
