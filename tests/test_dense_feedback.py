"""The dense encoder fine-tuned from feedback, without the JVM: on a tiny corpus with a vocabulary gap
no pretrained encoder can know (invented product words), training from the train judgments beats the
base encoder on held-out queries; the encoder saves as a plain sentence-transformers folder; its
FAISS index is the dense_feedback family the Searcher serves; the guard keeps the base encoder when
no epoch beats it; `index_type: auto` follows the corpus size."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
import polars as pl
import pytest
import torch
from sentence_transformers import SentenceTransformer
from vocabulary_gap import write_vocabulary_gap

from clickloop.beir import BeirDataset
from clickloop.fingerprint import content_sha256
from clickloop.metrics import evaluate
from indexing import CorruptIndexError, MissingIndexError, Searcher
from indexing.dense import (
    FEEDBACK_KIND,
    INDEX_FILE,
    DenseBuildConfig,
    DenseIndex,
    document_text,
    index_type_for,
    stored_vectors,
)
from indexing.docstore import write_doc_store
from indexing.retriever import read_manifest
from models.dense import DenseTrainingConfig, new_dense_encoder, save_dense_encoder, train_dense_encoder
from models.dense.trainer import BatchMaker, ValidationPool
from models.feedback_queries import TrainingQuery, judged_queries, signal_queries, with_teachers

# Queries name a category by a made-up word no document holds; held-out queries pair those words
# with colours never trained on, so only what training taught about the word can find them.
CATEGORY_QUERY_WORDS = {"bottle": "zorblat", "lamp": "quimbel", "chair": "fravnik", "backpack": "plomtex",
                        "kettle": "drusnip"}
MAX_SEQ_LENGTH = 32
TRAINING = DenseTrainingConfig(batch_queries=8, negatives=1, lr=1e-4, max_epochs=3, patience=3,
                               validation_share=0.2, distractors=200, train_max_seq_length=MAX_SEQ_LENGTH,
                               progress=False)


@pytest.fixture(scope="module")
def gap(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("dense_gap")
    dataset = write_vocabulary_gap(root / "dataset", CATEGORY_QUERY_WORDS)
    docs = list(dataset.corpus())
    indices = root / "indices"
    write_doc_store(dataset, indices / "docs.parquet")
    DenseIndex.build(dataset, indices / "dense", DenseBuildConfig(max_seq_length=MAX_SEQ_LENGTH))
    base = DenseIndex(indices / "dense")
    teacher = {"dense": lambda batch, k: base.batch_search(dict(batch), k)}
    training_queries = with_teachers(judged_queries(dataset.queries("train"), dataset.qrels("train")),
                                     {d.doc_id: row for row, d in enumerate(docs)}, teacher, depth=20)
    texts = [document_text(d) for d in docs]
    model = new_dense_encoder(max_seq_length=MAX_SEQ_LENGTH, device="cpu")
    result = train_dense_encoder(model, texts, training_queries, TRAINING)
    save_dense_encoder(model, root / "model")
    DenseIndex.build(dataset, indices / FEEDBACK_KIND,
                     DenseBuildConfig(model=str(root / "model"), max_seq_length=MAX_SEQ_LENGTH), kind=FEEDBACK_KIND)
    return SimpleNamespace(root=root, dataset=dataset, indices=indices, texts=texts, queries=training_queries,
                           model=model, result=result, base=base)


def _test_ndcg(index: DenseIndex, dataset: BeirDataset) -> float:
    qrels = dataset.qrels("test")
    queries = {qid: text for qid, text in dataset.queries("test").items() if qid in qrels}
    run = {qid: dict(ranking) for qid, ranking in index.batch_search(queries, k=100).items()}
    return evaluate(qrels, run, ["nDCG@10"])["nDCG@10"]


def test_training_beats_the_base_encoder_on_held_out_queries(gap: SimpleNamespace) -> None:
    result = gap.result
    assert not result.kept_base and result.steps > 0
    assert result.best_val_ndcg > result.base_val_ndcg
    assert result.n_val == 6 and result.n_train == 24  # validation is a split of the training queries
    trained = _test_ndcg(DenseIndex(gap.indices / FEEDBACK_KIND, kind=FEEDBACK_KIND), gap.dataset)
    base = _test_ndcg(gap.base, gap.dataset)
    assert trained > base + 0.2, (trained, base)


def test_encoder_saves_and_loads_with_plain_sentence_transformers(gap: SimpleNamespace) -> None:
    loaded = SentenceTransformer(str(gap.root / "model"), device="cpu")
    texts = ["zorblat red", *gap.texts[:5]]
    before = gap.model.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    after = loaded.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    assert torch.allclose(before.cpu(), after.cpu(), atol=1e-5)
    base = new_dense_encoder(max_seq_length=MAX_SEQ_LENGTH, device="cpu")
    assert not torch.allclose(after.cpu(), base.encode(texts, convert_to_tensor=True, normalize_embeddings=True))
    assert loaded.max_seq_length == MAX_SEQ_LENGTH  # the serving length, not the training one


def test_searcher_serves_the_dense_feedback_family(gap: SimpleNamespace, tmp_path: Path) -> None:
    folder = gap.indices / FEEDBACK_KIND
    manifest = read_manifest(folder, FEEDBACK_KIND)
    assert manifest["model"] == str(gap.root / "model")
    assert manifest["model_sha256"] == content_sha256(gap.root / "model")
    assert manifest["index_type"] == "Flat" and manifest["n_docs"] == len(gap.texts)
    searcher = Searcher(gap.indices, modes=("dense_feedback",))
    assert searcher.modes == ("dense_feedback",)
    hits = searcher.search("quimbel purple", k=5, mode="dense_feedback")
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert sum(h.doc_id.startswith("lamp-") for h in hits) >= 3, [h.doc_id for h in hits]  # quimbel: a lamp

    empty = tmp_path / "indices"
    empty.mkdir()
    (empty / "docs.parquet").write_bytes((gap.indices / "docs.parquet").read_bytes())
    with pytest.raises(MissingIndexError, match="dvc repro dense_feedback"):
        Searcher(empty, modes=("dense_feedback",))


def test_a_changed_encoder_names_the_stage_that_rebuilds(gap: SimpleNamespace, tmp_path: Path) -> None:
    model = tmp_path / "model"
    save_dense_encoder(gap.model, model)
    (model / "config.json").write_text((model / "config.json").read_text() + "\n")
    manifest = read_manifest(gap.indices / FEEDBACK_KIND)
    folder = tmp_path / FEEDBACK_KIND
    folder.mkdir()
    for name in (INDEX_FILE, "doc_ids.json"):
        (folder / name).write_bytes((gap.indices / FEEDBACK_KIND / name).read_bytes())
    (folder / "retriever.json").write_text(
        (gap.indices / FEEDBACK_KIND / "retriever.json").read_text().replace(manifest["model"], str(model)))
    with pytest.raises(CorruptIndexError, match="dvc repro dense_feedback"):
        DenseIndex(folder, kind=FEEDBACK_KIND)


def test_the_guard_keeps_the_base_encoder_when_no_epoch_beats_it(gap: SimpleNamespace) -> None:
    model = new_dense_encoder(max_seq_length=MAX_SEQ_LENGTH, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # A learning rate of zero: every epoch validates exactly as the base does, which is not better.
    result = train_dense_encoder(model, gap.texts, gap.queries, replace(TRAINING, lr=0.0, max_epochs=1))
    assert result.kept_base and result.best_val_ndcg == result.base_val_ndcg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_without_a_positive_label_the_base_encoder_stays_untrained() -> None:
    queries = [TrainingQuery(f"q{i}", np.array([0, 1]), np.array([1.0, 0.0]), np.array([0.0, np.nan]))
               for i in range(4)]
    model = new_dense_encoder(max_seq_length=MAX_SEQ_LENGTH, device="cpu")
    result = train_dense_encoder(model, ["a", "b"], queries, TRAINING)
    assert result.kept_base and result.steps == 0 and result.n_val == 0 and "validation" in result.skipped
    assert result.base_val_ndcg is None and result.best_val_ndcg is None


def test_batches_mask_a_querys_other_positives_out_of_its_negatives() -> None:
    texts = [f"doc {i}" for i in range(6)]
    queries = [
        TrainingQuery("a", np.array([0, 1, 2]), np.array([1.0, 0.5, 0.0]), np.array([1.0, 1.0, 0.0])),
        TrainingQuery("b", np.array([1, 3, 4]), np.array([1.0, 0.5, 0.0]), np.array([1.0, 0.0, 0.0])),
    ]
    batch = BatchMaker(queries, texts, DenseTrainingConfig(negatives=1, seed=3))(torch.tensor([0, 1]))
    assert batch["queries"] == ["a", "b"] and len(batch["documents"]) == 4
    rows = [int(d.split()[1]) for d in batch["documents"]]
    masked = batch["masked"].numpy()
    for b, query in enumerate(queries):
        positives = set(query.candidates[query.positives].tolist())
        assert rows[2 * b] in positives and not masked[b, 2 * b]  # its positive is the target
        assert rows[2 * b + 1] not in positives  # its hard negative is no positive of its own
        # any other slot holding one of its positives (query b's positive, doc 1, is one of a's) is masked
        assert [bool(m) for m in masked[b]] == [j != 2 * b and r in positives for j, r in enumerate(rows)]


def test_validation_pool_holds_the_candidates_and_fixed_distractors() -> None:
    queries = [TrainingQuery("a", np.array([3, 7, 8, 9]), np.array([0.1, 0.9, 0.0, 0.5]),
                             np.array([2.0, 0.0, 0.0, np.nan]))]
    pool = ValidationPool.of(queries, n_docs=1000, candidates=2, distractors=50, seed=1)
    # its positive and its two candidates the teachers score highest, whatever the labels say of them
    assert {3, 7, 9} <= set(pool.rows.tolist()) and 50 <= len(pool.rows) <= 53
    assert np.array_equal(pool.rows, ValidationPool.of(queries, 1000, 2, 50, seed=1).rows)
    column = pool.rows.tolist().index(3)
    assert pool.gains == [{column: 2.0}]
    scores = torch.zeros(1, len(pool.rows))
    scores[0, column] = 1.0
    assert pool.ndcg_at_10(scores) == pytest.approx(1.0)


def test_index_type_auto_follows_the_corpus_size(gap: SimpleNamespace, tmp_path: Path) -> None:
    auto = DenseBuildConfig(index_type="auto", exact_below=100)
    assert index_type_for(auto, 99) == "Flat" and index_type_for(auto, 100) == "HNSW32"
    assert index_type_for(replace(auto, approximate="IVF4,Flat"), 10**6) == "IVF4,Flat"
    assert index_type_for(DenseBuildConfig(index_type="HNSW16", exact_below=10**9), 5) == "HNSW16"  # explicit wins
    with pytest.raises(ValueError):
        DenseBuildConfig(index_type="auto", approximate="auto")
    for exact_below, kind in ((len(gap.texts) + 1, faiss.IndexFlat), (len(gap.texts), faiss.IndexHNSWFlat)):
        folder = tmp_path / f"dense-{exact_below}"
        DenseIndex.build(gap.dataset, folder, replace(auto, exact_below=exact_below, max_seq_length=MAX_SEQ_LENGTH))
        index = faiss.read_index(str(folder / INDEX_FILE))
        assert isinstance(index, kind) and index.ntotal == len(gap.texts)
        manifest = read_manifest(folder, "dense")
        assert manifest["params"]["index_type"] == "auto"
        assert manifest["index_type"] == ("Flat" if kind is faiss.IndexFlat else "HNSW32")
        assert DenseIndex(folder).search("zorblat red", k=3)


def test_an_index_builds_from_the_vectors_another_one_stores(gap: SimpleNamespace, tmp_path: Path) -> None:
    """What the stage does when it keeps the base encoder: the index stage's vectors, not a second encode."""
    vectors = stored_vectors(gap.indices / "dense")
    assert vectors is not None and vectors.shape == (len(gap.texts), 384)
    config = DenseBuildConfig(max_seq_length=MAX_SEQ_LENGTH)
    DenseIndex.build(gap.dataset, tmp_path / "copy", config, embeddings=vectors)
    queries = {"a": "zorblat red", "b": "wooden chair"}
    copied, encoded = DenseIndex(tmp_path / "copy").batch_search(queries, 5), gap.base.batch_search(queries, 5)
    for qid in queries:
        assert [d for d, _ in copied[qid]] == [d for d, _ in encoded[qid]]
        assert [s for _, s in copied[qid]] == pytest.approx([s for _, s in encoded[qid]])
    with pytest.raises(ValueError, match="embeddings"):
        DenseIndex.build(gap.dataset, tmp_path / "short", config, embeddings=vectors[:-1])


def test_auto_signal_reads_the_labels_and_starts_cold_without_them(gap: SimpleNamespace, tmp_path: Path) -> None:
    docs = list(gap.dataset.corpus())
    missing, empty, labels = tmp_path / "missing.parquet", tmp_path / "empty.parquet", tmp_path / "labels.parquet"
    columns = {"query": pl.String, "doc_id": pl.String, "posterior_relevance": pl.Float64, "posterior_sd": pl.Float64}
    pl.DataFrame(schema=columns).write_parquet(empty)  # what the feedback stage writes before any log
    shown = {"query": ["zorblat red"] * 2, "doc_id": [docs[0].doc_id, docs[1].doc_id],
             "posterior_relevance": [0.9, 0.01], "posterior_sd": [0.01, 0.01]}
    pl.DataFrame(shown, schema=columns).write_parquet(labels)
    for labels_file, expected in ((missing, "cold_start"), (empty, "cold_start"), (labels, "clicks")):
        signal, queries = signal_queries("auto", labels_file, gap.dataset, "train", docs, n_pseudo=7, seed=1)
        assert signal == expected and queries
    assert len(signal_queries("cold_start", labels, gap.dataset, "train", docs, 7, 1)[1]) == 7
    assert signal_queries("judgments", missing, gap.dataset, "train", docs, 7, 1)[0] == "judgments"
    with pytest.raises(ValueError, match="signal"):
        signal_queries("logs", labels, gap.dataset, "train", docs, 7, 1)
