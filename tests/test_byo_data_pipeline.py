"""Bring your own data, end to end with the real stages: a BEIR folder judged on test only feeds the
simulator a derived train split (BM25 logging ranker); a corpus without judgments plus UBI logs in
feedback_logs/, simulation off, runs under `dvc repro` and is evaluated on what the logs support."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from byo_data import catalog, simulate_logs, write_source

from clickloop.beir import BeirDataset
from clickloop.sandbox import merge_params, new_project, run
from clickloop.simulation import ExplorationConfig, SimulatorConfig
from pipeline.dataset import DatasetConfig, build_dataset
from pipeline.simulate import run_simulation

pytestmark = pytest.mark.jvm  # starts Lucene's JVM in this process: see the `test` target in Makefile

# Small enough for a test; simulation off, the corpus is a user's folder without judgments.
TINY = {
    "feedback": {"gnolr": {"max_epochs": 1}, "recommender": {"epochs": 2},
                 "reward": {"calibration_fraction": 0.4}},
    "index": {"dense": {"batch_size": 32}},
    "sparse": {"max_seq_length": 64, "training": {"max_epochs": 1, "batch_queries": 8, "vocab_sample": 256}},
}


@pytest.mark.slow
def test_test_judgments_only_simulate_on_a_derived_train_split(tmp_path: Path) -> None:
    from indexing.bm25 import BM25BuildConfig, BM25Index

    data = catalog()
    test = data.qrels["test"]
    source = write_source(tmp_path / "src", data.documents, data.queries, {"test": test})
    summary = build_dataset(DatasetConfig(source=str(source), out_dir=str(tmp_path / "dataset")), seed=13,
                            simulate=True)
    assert summary["train_split"] == "derived" and summary["derived_train"]["train_queries"] == len(test) // 2
    dataset = BeirDataset(tmp_path / "dataset")
    BM25Index.build(dataset, tmp_path / "bm25", BM25BuildConfig())
    config = SimulatorConfig(days=1, sessions_per_day=200, dataset_dir=str(tmp_path / "dataset"),
                             bm25_dir=str(tmp_path / "bm25"), out_dir=str(tmp_path / "logs"),
                             truth_dir=str(tmp_path / "truth"), exploration=ExplorationConfig(scheme="none", share=0))
    totals = run_simulation(config, seed=5)["totals"]

    assert totals["sessions"] == 200 and totals["clicks"] > 0
    issued = set(pl.read_parquet(tmp_path / "truth" / "results.parquet")["beir_query_id"])
    assert issued <= set(dataset.qrels("train"))  # the derived train queries, and only them
    assert not issued & set(dataset.qrels("test"))  # held-out test queries are never issued
    # Grades are the source's test judgments of the issued queries.
    truth = pl.read_parquet(tmp_path / "truth" / "results.parquet").head(100)
    for qid, doc, grade in truth.select("beir_query_id", "doc_id", "grade").iter_rows():
        assert grade == test[qid].get(doc, 0)


@pytest.mark.slow
def test_dvc_repro_on_a_corpus_without_judgments_learns_from_feedback_logs(tmp_path: Path) -> None:
    own = {"dataset": {"source": str(tmp_path / "catalog")}, "simulate": {"enabled": False},
           "dense_feedback": {"training": {"max_epochs": 1, "distractors": 50}}}
    root = new_project(tmp_path / "project", merge_params(TINY, own))
    # The deployment's own data: a catalog (no queries, no judgments) and three days of its logs, some
    # of which name documents the catalog has removed since.
    data = catalog()
    simulate_logs(data, root / "feedback_logs", tmp_path / "hidden_truth", days=3, sessions_per_day=150)
    shown = pl.read_parquet(tmp_path / "hidden_truth" / "results.parquet")
    removed = set(shown["doc_id"].value_counts(sort=True)["doc_id"].head(2).to_list())
    kept = [d for d in data.documents if d.doc_id not in removed]
    write_source(tmp_path / "catalog", kept, None, {})
    params = yaml.safe_load((root / "params.yaml").read_text())
    run([sys.executable, "-m", "dvc", "repro"], root)

    def metrics(name: str) -> dict:
        return json.loads((root / "metrics" / f"{name}.json").read_text())

    dataset = metrics("dataset")
    assert dataset["judged_queries"] == {} and dataset["train_split"] == "none" and dataset["simulate"] is False
    assert [p.name for p in (root / "data" / "simulated_logs").iterdir()] == ["README.md"]
    ingest = metrics("ingest")["totals"]
    assert ingest["accepted"] > 0 and ingest["read"] == ingest["accepted"] + ingest["quarantined"] + ingest[
        "duplicates"]
    feedback = metrics("feedback")
    results = pl.read_parquet(root / "data" / "ingested" / "results.parquet")
    assert feedback["unknown_documents"]["result_rows"] == results.filter(pl.col("doc_id").is_in(list(removed))).height
    assert feedback["unknown_documents"]["result_rows"] > 0 and feedback["unknown_documents"]["distinct"] == 2
    assert metrics("sparse")["signal"] == "clicks"
    # Off-policy figures with their coverage for every retriever, and no judged metric: there are no judgments.
    evaluate = metrics("evaluate")
    assert evaluate["logging"]["clicks@10"] > 0
    for mode in params["evaluate"]["retrievers"]:
        assert evaluate[mode]["ips_clicks@10_coverage"] > 0 and "ips_clicks@10_stderr" in evaluate[mode]
        assert not [name for name in evaluate[mode] if "nDCG" in name or "R@" in name]
    assert list((root / "data" / "runs").iterdir()) == []

    # The catalog outside the workspace changes between nights: the dataset stage rereads it on every
    # repro (DVC cannot track it), and what follows reruns only when the corpus did change.
    def changed() -> set[str]:
        run([sys.executable, "-m", "dvc", "repro", "dataset"], root)
        return set(json.loads(run([sys.executable, "-m", "dvc", "status", "--json"], root).stdout or "{}"))

    assert changed() <= {"dataset"}
    write_source(tmp_path / "catalog", kept[1:], None, {})  # a document removed from the catalog
    assert "index" in changed()
