"""The dense_feedback stage end to end with real Lucene (the BM25 teacher) and FAISS: on a tiny product
catalog with click labels it trains, saves a plain sentence-transformers encoder, writes its index with
the encoder's hash and its metrics, and the Searcher serves mode `dense_feedback` beside the others."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from sentence_transformers import SentenceTransformer

from clickloop.beir import BeirDataset, write_beir
from clickloop.catalog import CatalogConfig, generate_catalog
from clickloop.fingerprint import content_sha256
from clickloop.process import in_fresh_process
from indexing import Searcher
from indexing.dense import document_text
from indexing.retriever import read_manifest
from models.dense import DenseTrainingConfig, new_dense_encoder
from pipeline.dense_feedback import DenseFeedbackConfig, base_index_vectors, run
from pipeline.index import IndexConfig
from pipeline.index import run as build_index_root

pytestmark = pytest.mark.jvm  # starts Lucene's JVM in this process: see the `test` target in Makefile

TRAINING = DenseTrainingConfig(batch_queries=16, negatives=1, distill_weight=0.5, max_epochs=1, distractors=100,
                               train_max_seq_length=32, progress=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dense_feedback")
    catalog = generate_catalog(CatalogConfig(n_items=200, n_train_queries=120, n_test_queries=30), seed=5)
    write_beir(root / "dataset", catalog.documents, catalog.queries, catalog.qrels)
    build_index_root(IndexConfig(dataset_dir=str(root / "dataset"), out_dir=str(root / "indices"),
                                 metrics_file=str(root / "index.json")))
    # Click labels as the feedback stage writes them: the relevant shown documents sure, some others not.
    rng = np.random.default_rng(0)
    doc_ids = [d.doc_id for d in catalog.documents]
    rows = []
    for qid, judged in catalog.qrels["train"].items():
        shown = [d for d, grade in judged.items() if grade > 0][:3] + list(rng.choice(doc_ids, 3, replace=False))
        for doc in dict.fromkeys(shown):
            relevant = judged.get(doc, 0) > 0
            rows.append({"query": catalog.queries[qid].lower(), "doc_id": doc,
                         "posterior_relevance": 0.8 if relevant else 0.02, "posterior_sd": 0.05})
    pl.DataFrame(rows).write_parquet(root / "labels.parquet")
    return root


@pytest.fixture(scope="module")
def config(project: Path) -> DenseFeedbackConfig:
    return DenseFeedbackConfig(
        teacher_depth=20, training=TRAINING, dataset_dir=str(project / "dataset"),
        labels_file=str(project / "labels.parquet"), index_root=str(project / "indices"),
        model_dir=str(project / "dense" / "model"), out_dir=str(project / "indices" / "dense_feedback"),
        metrics_file=str(project / "metrics.json"),
    )


@pytest.fixture(scope="module")
def metrics(config: DenseFeedbackConfig) -> dict:
    # A process that trained with torch can crash in Lucene later (clickloop.process): the JVM tests after
    # this module share the process, so the stage trains in a child.
    return in_fresh_process(run, config)


def test_stage_trains_from_the_click_labels_and_writes_its_metrics(config: DenseFeedbackConfig, metrics: dict) -> None:
    assert json.loads(Path(config.metrics_file).read_text()) == json.loads(json.dumps(metrics))
    assert metrics["signal"] == "clicks" and metrics["queries"] > 50  # auto: the labels are there
    validation, training = metrics["validation"], metrics["training"]
    assert training["steps"] > 0 and validation["queries"] > 0 and validation["documents"] >= 100
    assert 0 < validation["base_ndcg@10"] <= validation["best_ndcg@10"] <= 1
    assert metrics["kept_base"] == (validation["best_ndcg@10"] == validation["base_ndcg@10"])
    assert set(metrics["seconds"]) == {"teachers", "train", "index"}
    assert metrics["index_type"] == "Flat" and metrics["n_docs"] == 200  # auto, far below exact_below


def test_index_manifest_holds_the_trained_encoders_hash(config: DenseFeedbackConfig, metrics: dict) -> None:
    manifest = read_manifest(Path(config.out_dir), "dense_feedback")
    assert manifest["model"] == config.model_dir
    assert manifest["model_sha256"] == content_sha256(Path(config.model_dir)) == metrics["model_sha256"]
    assert manifest["params"]["index_type"] == "auto" and manifest["params"]["model"] == config.model_dir


def test_saved_encoder_is_a_plain_sentence_transformer(config: DenseFeedbackConfig, metrics: dict) -> None:
    loaded = SentenceTransformer(config.model_dir, device="cpu")
    texts = ["something to keep coffee hot", "running shoes"]
    trained = loaded.encode(texts, convert_to_tensor=True)
    base = new_dense_encoder(device="cpu").encode(texts, convert_to_tensor=True)
    # The guard's choice is what was saved: the base encoder itself, or one that moved.
    assert torch.allclose(trained, base, atol=1e-5) == metrics["kept_base"]


def test_searcher_serves_dense_feedback_beside_the_other_modes(config: DenseFeedbackConfig, metrics: dict) -> None:
    searcher = Searcher(config.index_root)
    assert {"bm25", "dense", "dense_feedback"} <= set(searcher.modes)
    hits = searcher.search("something to keep coffee hot", k=5, mode="dense_feedback")
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5] and all(h.title for h in hits)
    batch = searcher.batch_search({"a": "warm coffee", "b": "desk lamp"}, k=3, mode="dense_feedback")
    assert [h.doc_id for h in batch["a"]] == [h.doc_id for h in searcher.search("warm coffee", 3, "dense_feedback")]


def test_a_kept_base_encoder_reuses_the_index_stages_vectors(config: DenseFeedbackConfig, metrics: dict) -> None:
    docs = list(BeirDataset(Path(config.dataset_dir)).corpus())
    doc_ids = [d.doc_id for d in docs]
    vectors = base_index_vectors(config, doc_ids)
    assert vectors is not None and vectors.shape == (len(docs), 384)
    encoded = new_dense_encoder(device="cpu").encode([document_text(d) for d in docs[:4]], normalize_embeddings=True)
    assert np.allclose(vectors[:4], encoded, atol=1e-5)
    # Vectors of other settings, or of other documents, are not this index's.
    assert base_index_vectors(replace(config, index=replace(config.index, max_seq_length=128)), doc_ids) is None
    assert base_index_vectors(config, doc_ids[::-1]) is None
    assert metrics["reused_base_vectors"] == metrics["kept_base"]


def test_the_index_finds_its_encoder_from_any_working_directory_and_after_a_move(
    config: DenseFeedbackConfig, metrics: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = read_manifest(Path(config.out_dir), "dense_feedback")
    assert manifest["model_path"] == "../../dense/model"  # seen from the index folder, not from the stage's cwd
    moved = tmp_path / "moved"
    shutil.copytree(Path(config.index_root).parent, moved)
    monkeypatch.chdir(tmp_path)
    hits = Searcher(moved / "indices", modes=["dense_feedback"]).search("warm coffee", k=3, mode="dense_feedback")
    assert [h.doc_id for h in hits] == [h.doc_id for h in Searcher(config.index_root, modes=["dense_feedback"]).search(
        "warm coffee", k=3, mode="dense_feedback")]
