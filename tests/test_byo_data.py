"""Bring your own data: a BEIR folder with any judgments (none, test only, train and test), simulation
as a choice, and stages that learn from real logs alone: no logs at all, logs without judgments,
logs naming documents the corpus lacks."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from byo_data import catalog, simulate_logs, write_source

from clickloop.beir import BeirDataset, BeirFormatError
from clickloop.ingest import IngestConfig, ingest
from clickloop.simulation import SimulatorConfig
from pipeline.dataset import DatasetConfig, build_dataset, derive_train_split
from pipeline.feedback import FeedbackConfig, empty_labels
from pipeline.feedback import run as run_feedback
from pipeline.simulate import run_simulation


def _test_only_source(root: Path) -> tuple[Path, dict]:
    data = catalog()
    test = data.qrels["test"]
    return write_source(root, data.documents, data.queries, {"test": test}), test


def test_test_judgments_only_get_a_seeded_stated_train_split_when_simulating(tmp_path: Path) -> None:
    source, test = _test_only_source(tmp_path / "src")
    config = DatasetConfig(source=str(source), out_dir=str(tmp_path / "out"), derived_train_share=0.25)
    summary = build_dataset(config, seed=13, simulate=True)

    dataset = BeirDataset(tmp_path / "out")
    train, held_out = dataset.qrels("train"), dataset.qrels("test")
    assert len(train) == round(0.25 * len(test)) == 4 and len(held_out) == len(test) - 4
    assert not set(train) & set(held_out)  # no query is both issued by the simulator and scored
    assert {**train, **held_out} == test  # every judgment kept, on one side
    assert summary["train_split"] == "derived"
    assert summary["derived_train"] == {"from_split": "test", "share": 0.25, "seed": 13, "train_queries": 4,
                                        "test_queries": len(test) - 4}
    assert summary["judged_queries"] == {"train": 4, "test": len(test) - 4}

    # Seeded: the same seed draws the same queries, whatever the qrels order; another seed others.
    shuffled = dict(reversed(list(test.items())))
    assert derive_train_split(shuffled, 0.25, 13) == (train, held_out)
    assert derive_train_split(test, 0.25, 14)[0] != train


def test_test_judgments_only_stay_whole_without_simulation(tmp_path: Path) -> None:
    source, test = _test_only_source(tmp_path / "src")
    summary = build_dataset(DatasetConfig(source=str(source), out_dir=str(tmp_path / "out")), seed=13)
    dataset = BeirDataset(tmp_path / "out")
    assert dataset.splits() == ["test"] and dataset.qrels("test") == test
    assert summary["train_split"] == "none" and summary["derived_train"] is None


def test_a_corpus_without_judgments_or_queries_is_a_dataset(tmp_path: Path) -> None:
    data = catalog()
    source = write_source(tmp_path / "src", data.documents, None, {})
    summary = build_dataset(DatasetConfig(source=str(source), out_dir=str(tmp_path / "out")), seed=13)
    dataset = BeirDataset(tmp_path / "out")
    assert summary["documents"] == len(data.documents) and summary["queries"] == 0
    assert summary["judged_queries"] == {} and dataset.splits() == []

    # The simulator draws clicks from judgments: asking for it says what to do instead.
    with pytest.raises(ValueError, match=r"set simulate\.enabled: false"):
        build_dataset(DatasetConfig(source=str(source), out_dir=str(tmp_path / "out")), seed=13, simulate=True)
    # ... and so does the simulate stage itself, should it meet such a dataset.
    with pytest.raises(ValueError, match=r"set simulate\.enabled: false"):
        run_simulation(SimulatorConfig(dataset_dir=str(tmp_path / "out")), seed=1)


def test_a_single_judged_query_cannot_be_split(tmp_path: Path) -> None:
    with pytest.raises(BeirFormatError, match="cannot be derived"):
        derive_train_split({"q1": {"d1": 1}}, 0.5, 13)
    with pytest.raises(ValueError, match="derived_train_share"):
        DatasetConfig(derived_train_share=1.0)


def test_disabled_simulation_writes_folders_ingest_reads_as_no_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs, truth = tmp_path / "simulated_logs", tmp_path / "truth"
    config = SimulatorConfig(enabled=False, out_dir=str(logs), truth_dir=str(truth),
                             dataset_dir=str(tmp_path / "no_dataset"))
    summary = run_simulation(config, seed=1)  # needs neither a dataset nor an index
    assert summary["enabled"] is False and summary["totals"]["sessions"] == 0
    assert [p.name for p in logs.iterdir()] == ["README.md"] and [p.name for p in truth.iterdir()] == ["README.md"]

    real = tmp_path / "feedback_logs"
    simulate_logs(catalog(), real, tmp_path / "real_truth", days=1, sessions_per_day=30)
    with caplog.at_level(logging.INFO):
        report = ingest(IngestConfig(log_roots=[str(logs), str(real)], out_dir=str(tmp_path / "ingested"),
                                     metrics_file=str(tmp_path / "ingest.json"),
                                     temp_directory=str(tmp_path / "spill"), memory_limit="512MB"))
    assert [(r.days, r.files) for r in report.roots] == [(0, 0), (1, 2)]
    assert report.totals["accepted"] > 0 and report.unknown_files == []
    # The empty simulated root is expected: said at INFO, not a warning to act on.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _ingest(tmp_path: Path, roots: list[Path]) -> Path:
    out = tmp_path / "ingested"
    ingest(IngestConfig(log_roots=[str(r) for r in roots], out_dir=str(out), metrics_file=str(tmp_path / "i.json"),
                        temp_directory=str(tmp_path / "spill"), memory_limit="512MB"))
    return out / "results.parquet"


def _feedback_config(tmp_path: Path, results: Path, dataset: Path) -> FeedbackConfig:
    config = FeedbackConfig(dataset_dir=str(dataset), results_file=str(results), out_dir=str(tmp_path / "feedback"),
                            metrics_file=str(tmp_path / "feedback.json"))
    config.gnolr.max_epochs = 1
    config.recommender.epochs = 2
    return config


def test_feedback_and_sparse_signal_without_any_logs(tmp_path: Path) -> None:
    data = catalog()
    source = write_source(tmp_path / "src", data.documents, None, {})
    build_dataset(DatasetConfig(source=str(source), out_dir=str(tmp_path / "dataset")), seed=13)
    empty_root = tmp_path / "feedback_logs"
    empty_root.mkdir()
    results = _ingest(tmp_path, [empty_root])

    metrics = run_feedback(_feedback_config(tmp_path, results, tmp_path / "dataset"))
    assert metrics["skipped"].startswith("no logged results") and metrics["labels"] == {"pairs": 0}
    assert json.loads((tmp_path / "feedback.json").read_text()) == metrics
    labels = pl.read_parquet(tmp_path / "feedback" / "labels.parquet")
    assert labels.is_empty() and labels.schema == empty_labels().schema
    assert not (tmp_path / "feedback" / "propensities.json").exists()  # evaluate: no off-policy estimates

    # The sparse stage reads the empty label table as "no clicks yet" and starts cold.
    from pipeline.sparse import SparseConfig, labelled_queries

    config = SparseConfig(labels_file=str(tmp_path / "feedback" / "labels.parquet"), pseudo_queries=20)
    corpus = SimpleNamespace(docs=data.documents)
    signal, queries = labelled_queries(config, BeirDataset(tmp_path / "dataset"), corpus)  # type: ignore[arg-type]
    assert signal == "cold_start" and len(queries) == 20


@pytest.mark.slow
def test_feedback_learns_from_logs_without_judgments_and_counts_unknown_documents(tmp_path: Path) -> None:
    data = catalog()
    logs = tmp_path / "feedback_logs"
    simulate_logs(data, logs, tmp_path / "truth", days=2, sessions_per_day=150)
    # The catalog lost some documents since they were logged: the logs name ids the corpus lacks.
    shown = pl.read_parquet(tmp_path / "truth" / "results.parquet")
    removed = set(shown["doc_id"].value_counts(sort=True)["doc_id"].head(3).to_list())
    kept = [d for d in data.documents if d.doc_id not in removed]
    source = write_source(tmp_path / "src", kept, None, {})
    build_dataset(DatasetConfig(source=str(source), out_dir=str(tmp_path / "dataset")), seed=13)
    results_file = _ingest(tmp_path, [logs])
    results = pl.read_parquet(results_file)

    config = _feedback_config(tmp_path, results_file, tmp_path / "dataset")
    config.reward.calibration_fraction = 0.4  # a calibration slice with loves in it, on 24 queries
    metrics = run_feedback(config)
    absent = results.filter(pl.col("doc_id").is_in(list(removed)))
    assert metrics["unknown_documents"] == {
        "result_rows": absent.height, "clicked_rows": int(absent["clicked"].sum()), "distinct": 3,
        "share_of_rows": round(absent.height / results.height, 6), "examples": sorted(removed),
    }
    assert absent.height > 0
    assert json.loads((tmp_path / "feedback.json").read_text())["unknown_documents"]["result_rows"] == absent.height
    # The curve and the labels are facts about the logs: every row counts, the unknown documents too.
    labels = pl.read_parquet(tmp_path / "feedback" / "labels.parquet")
    assert set(removed) <= set(labels["doc_id"]) and metrics["propensity"]["theta"][0] == 1.0
    # GNOLR and the reward read document text: trained on the corpus documents, held out on the last day.
    assert metrics["reward"]["auc"] == pytest.approx(metrics["reward"]["auc"]) and 0 <= metrics["reward"]["auc"] <= 1
    assert metrics["split"]["test_days"] == ["2025-01-07"]
    # The recommender never recommends a document the corpus lost.
    items = json.loads((tmp_path / "feedback" / "recommender" / "recommender.json").read_text())["item_ids"]
    assert items and not set(items) & removed


def test_feedback_skips_the_reward_with_the_reason_on_a_single_day(tmp_path: Path) -> None:
    data = catalog()
    logs = tmp_path / "feedback_logs"
    simulate_logs(data, logs, tmp_path / "truth", days=1, sessions_per_day=60)
    source = write_source(tmp_path / "src", data.documents, None, {})
    build_dataset(DatasetConfig(source=str(source), out_dir=str(tmp_path / "dataset")), seed=13)
    config = _feedback_config(tmp_path, _ingest(tmp_path, [logs]), tmp_path / "dataset")
    config.recommender.epochs = 1

    metrics = run_feedback(config)
    assert metrics["reward"] == metrics["gnolr"] == {
        "skipped": "1 day(s) of logs, and the last 1 day(s) are held out for evaluation"}
    assert metrics["unknown_documents"]["result_rows"] == 0 and metrics["labels"]["pairs"] > 0
    assert (tmp_path / "feedback" / "propensities.json").is_file() and not (tmp_path / "feedback" / "gnolr").exists()
