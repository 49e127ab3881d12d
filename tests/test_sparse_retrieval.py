"""The sparse stage end to end with real Lucene (impact index) and FAISS teachers: on a tiny product
catalog it trains, never ships an encoder that validates worse than the untrained one, and the
Searcher's `sparse` mode serves it under the same contract as the other modes; on a tiny corpus with
a vocabulary gap it beats its untrained encoder on held-out queries."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from vocabulary_gap import write_vocabulary_gap

from clickloop.beir import BeirDataset, write_beir
from clickloop.catalog import CatalogConfig, generate_catalog
from clickloop.metrics import evaluate
from indexing import MissingIndexError, Searcher, SearchInputError
from indexing.errors import MAX_K
from indexing.retriever import read_manifest
from indexing.sparse import SparseIndex
from models.sparse.encoder import load_encoder
from models.sparse.exact import exact_search
from models.sparse.trainer import SparseTrainingConfig
from pipeline.index import IndexConfig
from pipeline.index import run as build_index_root
from pipeline.sparse import (
    SparseConfig,
    fresh_encoder,
    index_encoder,
    read_corpus,
    run,
)

pytestmark = pytest.mark.jvm  # starts Lucene's JVM in this process: see the `test` target in Makefile

TRAINING = SparseTrainingConfig(batch_queries=8, max_epochs=4, patience=4, vocab_sample=256, progress=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sparse")
    catalog = generate_catalog(CatalogConfig(n_items=250, n_train_queries=160, n_test_queries=60), seed=5)
    write_beir(root / "dataset", catalog.documents, catalog.queries, catalog.qrels)
    build_index_root(IndexConfig(dataset_dir=str(root / "dataset"), out_dir=str(root / "indices"),
                                 metrics_file=str(root / "index.json")))
    return root


@pytest.fixture(scope="module")
def config(project: Path) -> SparseConfig:
    return SparseConfig(
        signal="judgments", max_seq_length=64, teacher_depth=20, training=TRAINING,
        dataset_dir=str(project / "dataset"), labels_file=str(project / "no-logs.parquet"),
        index_root=str(project / "indices"), model_dir=str(project / "model"),
        out_dir=str(project / "indices" / "sparse"),
        metrics_file=str(project / "sparse.json"),
    )


@pytest.fixture(scope="module")
def metrics(config: SparseConfig) -> dict:
    return run(config)


def _test_ndcg(index: SparseIndex, dataset: BeirDataset) -> float:
    queries = dataset.queries("test")
    run_ = {qid: dict(ranking) for qid, ranking in index.batch_search(queries, k=100).items()}
    return evaluate(dataset.qrels("test"), run_, ["nDCG@10"])["nDCG@10"]


def test_stage_trains_end_to_end_and_never_ships_a_worse_encoder(
    config: SparseConfig, metrics: dict, project: Path
) -> None:
    dataset = BeirDataset(project / "dataset")
    training = metrics["training"]
    assert metrics["signal"] == "judgments" and training["steps"] > 0 and training["n_val"] > 0
    assert training["best_val_ndcg"] >= training["untrained_val_ndcg"]
    assert training["kept_untrained"] == (training["best_val_ndcg"] == training["untrained_val_ndcg"])
    corpus = read_corpus(dataset, config)
    untrained_dir = project / "untrained"
    index_encoder(fresh_encoder(corpus, config), corpus, config, untrained_dir)
    trained, untrained = _test_ndcg(SparseIndex(Path(config.out_dir)), dataset), _test_ndcg(
        SparseIndex(untrained_dir), dataset)
    if training["kept_untrained"]:
        assert trained == pytest.approx(untrained)
    assert 0 < trained <= 1 and 0 < untrained <= 1


def test_index_folder_holds_no_transformer(config: SparseConfig, metrics: dict) -> None:
    folder = Path(config.out_dir)
    assert read_manifest(folder)["kind"] == "sparse"
    assert not list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))
    index = SparseIndex(folder)
    terms = index.query_terms("Insulated bottle")
    assert terms and all(isinstance(w, int) and w > 0 for w in terms.values())
    assert set(terms) <= {"insulated", "bottle", "ins", "##ulated"}
    assert 0 < metrics["mean_terms_per_doc"] < 2000


def test_searcher_sparse_mode_contract(config: SparseConfig, metrics: dict) -> None:
    searcher = Searcher(config.index_root, modes=("sparse", "bm25"))
    hits = searcher.search("something to keep coffee hot", k=5, mode="sparse")
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in pairwise(hits))
    assert all(h.title for h in hits)
    for bad in ("", "   ", None, "x" * 10_001):
        with pytest.raises(SearchInputError):
            searcher.search(bad, k=5, mode="sparse")  # type: ignore[arg-type]
    for k in (0, -1, MAX_K + 1, 2.5, True):
        with pytest.raises(SearchInputError):
            searcher.search("bottle", k=k, mode="sparse")  # type: ignore[arg-type]
    with pytest.raises(SearchInputError):
        searcher.batch_search({"q1": "bottle", "q2": ""}, k=5, mode="sparse")
    queries = {f"q{i}": text for i, text in enumerate(["warm coffee", "running shoes", "desk lamp"] * 4)}
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda q: searcher.search(q, k=10, mode="sparse"), queries.values()))
    batch = searcher.batch_search(queries, k=10, mode="sparse")
    assert [[h.doc_id for h in hits] for hits in parallel] == [[h.doc_id for h in batch[q]] for q in queries]
    assert len(searcher.search("bottle", k=MAX_K, mode="sparse")) <= 250


def test_missing_sparse_folder_names_its_stage(tmp_path: Path, config: SparseConfig, metrics: dict) -> None:
    root = tmp_path / "indices"
    root.mkdir()
    (root / "docs.parquet").write_bytes(Path(config.index_root, "docs.parquet").read_bytes())
    with pytest.raises(MissingIndexError, match="sparse"):
        Searcher(root, modes=("sparse",))


def test_exact_search_scores_as_the_impact_index(config: SparseConfig, metrics: dict) -> None:
    """The benchmarks' exact scorer (no index) gives the Lucene impact index's scores."""
    dataset = BeirDataset(Path(config.dataset_dir))
    corpus = read_corpus(dataset, config)
    queries = dict(list(dataset.queries("test").items())[:10])
    exact = exact_search(load_encoder(config.model_dir, device="cpu"), corpus.states, corpus.doc_ids, queries, k=10)
    lucene = SparseIndex(Path(config.out_dir)).batch_search(queries, k=10)
    for qid, ranking in lucene.items():
        assert [score for _, score in ranking] == pytest.approx(sorted(exact[qid].values(), reverse=True))
        assert all(exact[qid].get(doc) == pytest.approx(score) for doc, score in ranking if score > ranking[-1][1])


def test_sparse_vectors_are_sparse_and_quantised(config: SparseConfig, metrics: dict) -> None:
    assert metrics["flops"] > 0
    weights = np.load(Path(config.out_dir) / "query_weights.npy")
    assert weights.shape == (30522,) and (weights >= 0).mean() > 0.99


# A vocabulary gap the feedback can teach: queries name a category by a word no document holds
# (thermos for bottle), and the held-out queries pair those words with colours never trained on.
CATEGORY_QUERY_WORDS = {"bottle": "thermos", "lamp": "lighting", "chair": "seating", "backpack": "rucksack",
                        "kettle": "teapot"}


@pytest.fixture(scope="module")
def vocabulary_gap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gap")
    write_vocabulary_gap(root / "dataset", CATEGORY_QUERY_WORDS)
    build_index_root(IndexConfig(dataset_dir=str(root / "dataset"), out_dir=str(root / "indices"),
                                 metrics_file=str(root / "index.json")))
    return root


def test_trained_encoder_beats_the_untrained_one_on_held_out_queries(vocabulary_gap: Path) -> None:
    """The stage learns the gap from the train judgments, through its Lucene index: held-out queries
    (unseen colour with a learnt category word) rank better than with the untrained encoder."""
    root = vocabulary_gap
    config = SparseConfig(
        signal="judgments", max_seq_length=32, teacher_depth=20,
        training=replace(TRAINING, lr=1e-4, max_epochs=20, patience=20),
        dataset_dir=str(root / "dataset"), labels_file=str(root / "no-logs.parquet"),
        index_root=str(root / "indices"), model_dir=str(root / "model"), out_dir=str(root / "indices" / "sparse"),
        metrics_file=str(root / "sparse.json"),
    )
    metrics = run(config)
    assert not metrics["training"]["kept_untrained"]
    dataset = BeirDataset(root / "dataset")
    corpus = read_corpus(dataset, config)
    index_encoder(fresh_encoder(corpus, config), corpus, config, root / "untrained")
    trained = _test_ndcg(SparseIndex(Path(config.out_dir)), dataset)
    untrained = _test_ndcg(SparseIndex(root / "untrained"), dataset)
    assert trained > untrained + 0.05, (trained, untrained)
