"""Stage `sparse`: train the inference-free sparse encoder from the feedback and index the corpus with it.

Reads the corpus, the feedback stage's debiased labels and the teachers the index stage built
(BM25 and dense by default, through the Searcher); writes
- `data/sparse/model/`: the trained `SparseEncoder` (plain sentence-transformers folder, with
  `idf.json` holding the query weights);
- `data/indices/sparse/`: its Lucene impact index, which the Searcher serves as mode `sparse`;
- `metrics/sparse.json`: the training signal, validation nDCG@10 before and after, sparsity.

With no click labels (a new deployment, or `signal: cold_start`) the encoder learns from
pseudo-queries drawn from the corpus with the teacher ensemble as the only signal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sentence_transformers import SparseEncoder

from clickloop.atomic import atomic_path, write_json
from clickloop.beir import BeirDataset, Document
from clickloop.env import PACKAGED_MODEL
from clickloop.params import load_params, section
from indexing.dense import document_text
from indexing.searcher import Searcher
from indexing.sparse import build_sparse_index
from models.feedback_queries import (
    CLICKS,
    SIGNALS,
    LabelledQuery,
    TrainingQuery,
    searcher_teachers,
    signal_queries,
    with_teachers,
)
from models.sparse.cache import DocumentStates, document_states, encode_documents
from models.sparse.encoder import (
    calibrate_document_bias,
    document_module,
    new_sparse_encoder,
    query_module,
    save_encoder,
)
from models.sparse.idf import corpus_idf
from models.sparse.trainer import SparseTrainingConfig, TrainingResult, train_sparse_encoder

log = logging.getLogger(__name__)


@dataclass
class SparseConfig:
    """params.yaml section `sparse`."""

    signal: str = "auto"  # auto: clicks when the logs gave labels, else cold_start; judgments: qrels of train_split
    teachers: list[str] = field(default_factory=lambda: ["bm25", "dense"])  # Searcher modes: candidates, negatives
    # whose scores the student distils: teachers and "clicks" (the labels, on the pairs that were shown)
    distill_from: list[str] = field(default_factory=lambda: ["bm25", "dense", CLICKS])
    teacher_depth: int = 30  # each teacher's top-k are a query's candidates and hard negatives
    pseudo_queries: int = 2000  # cold start: queries drawn from the corpus
    backbone: str = PACKAGED_MODEL
    max_seq_length: int = 256  # document tokens the encoder reads
    initial_doc_terms: int = 200  # the untrained head's bias keeps about this many terms per document
    impact_scale: float = 100.0  # document weights x this, rounded, are Lucene's integer impacts
    training: SparseTrainingConfig = field(default_factory=SparseTrainingConfig)
    train_split: str = "train"
    dataset_dir: str = "data/dataset"
    labels_file: str = "data/feedback/labels.parquet"
    index_root: str = "data/indices"
    model_dir: str = "data/sparse/model"
    out_dir: str = "data/indices/sparse"
    metrics_file: str = "metrics/sparse.json"

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {self.signal!r}")


@dataclass
class Corpus:
    """The documents, in the row order of every matrix built from them, and the encoder's view of them."""

    docs: list[Document]
    idf: np.ndarray
    states: DocumentStates

    @property
    def doc_ids(self) -> list[str]:
        return [d.doc_id for d in self.docs]

    @property
    def rows(self) -> dict[str, int]:
        return {d.doc_id: row for row, d in enumerate(self.docs)}


def read_corpus(
    dataset: BeirDataset, config: SparseConfig, progress: bool = False, states: DocumentStates | None = None
) -> Corpus:
    """The corpus with its IDF and its backbone states (computed unless given, e.g. kept from a former run)."""
    docs = list(dataset.corpus())
    if not docs:
        raise ValueError(f"{dataset.root}: the corpus is empty, there is nothing to train on")
    texts = [document_text(d) for d in docs]
    reader = new_sparse_encoder(np.ones(1), config.backbone, config.max_seq_length)
    idf = corpus_idf(document_module(reader).tokenizer, texts)
    if states is None:
        states = document_states(reader, texts, progress=progress)
    elif len(states) != len(docs):
        raise ValueError(f"{len(states)} cached document states for {len(docs)} documents")
    return Corpus(docs, idf, states)


def fresh_encoder(corpus: Corpus, config: SparseConfig) -> SparseEncoder:
    """An untrained encoder for `corpus`: query weights = its IDF, the bias calibrated on its states."""
    model = new_sparse_encoder(corpus.idf, config.backbone, config.max_seq_length)
    sample = range(0, len(corpus.states), max(1, len(corpus.states) // 200))
    calibrate_document_bias(model, [corpus.states[i] for i in sample], config.initial_doc_terms)
    return model


def labelled_queries(config: SparseConfig, dataset: BeirDataset, corpus: Corpus) -> tuple[str, list[LabelledQuery]]:
    """The signal actually used and its queries."""
    return signal_queries(config.signal, config.labels_file, dataset, config.train_split, corpus.docs,
                          config.pseudo_queries, config.training.seed)


def sparsity(vectors: sp.csr_matrix) -> dict[str, float]:
    """Mean non-zero terms per document, and the FLOPS figure of Paria et al. (2020): the sum over
    terms of p_t squared, p_t the share of documents holding term t, i.e. the expected number of
    matching terms per (query, document) pair when queries hold terms as documents do."""
    df_share = np.asarray((vectors > 0).sum(axis=0)).ravel() / vectors.shape[0]
    return {"mean_terms_per_doc": float(vectors.getnnz(axis=1).mean()), "flops": float((df_share**2).sum())}


def train_and_index(
    model: SparseEncoder,
    corpus: Corpus,
    queries: Sequence[TrainingQuery],
    config: SparseConfig,
    out_dir: Path,
    model_dir: Path | None = None,
) -> dict[str, Any]:
    """Train `model` on `queries`, then `index_encoder`; returns the training result and the index figures."""
    start = time.perf_counter()
    result: TrainingResult = train_sparse_encoder(model, corpus.states, corpus.idf, queries, config.training)
    figures = index_encoder(model, corpus, config, out_dir, model_dir)
    figures["seconds"]["train"] = round(time.perf_counter() - start - sum(figures["seconds"].values()), 1)
    return {"training": asdict(result), **figures}


def index_encoder(
    model: SparseEncoder, corpus: Corpus, config: SparseConfig, out_dir: Path, model_dir: Path | None = None
) -> dict[str, Any]:
    """Encode the corpus with `model` into the impact index at `out_dir` (and save the model to `model_dir`)."""
    start = time.perf_counter()
    vectors = encode_documents(model, corpus.states, progress=config.training.progress)
    encoded = time.perf_counter()
    if model_dir is not None:
        with atomic_path(model_dir) as staged:
            save_encoder(model, staged)
    tokenizer = document_module(model).tokenizer
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(vectors.shape[1])))
    query_weights = query_module(model).weight.detach().cpu().numpy()
    build_sparse_index(corpus.doc_ids, vectors, vocabulary, query_weights, tokenizer, out_dir, config.impact_scale)
    return {
        **sparsity(vectors),
        "seconds": {"encode": round(encoded - start, 1), "index": round(time.perf_counter() - encoded, 1)},
    }


def run(config: SparseConfig) -> dict[str, Any]:
    dataset = BeirDataset(Path(config.dataset_dir))
    corpus = read_corpus(dataset, config, progress=config.training.progress)
    model = fresh_encoder(corpus, config)
    signal, labelled = labelled_queries(config, dataset, corpus)
    searcher = Searcher(config.index_root, modes=config.teachers)
    distill_from = [t for t in config.distill_from if t != CLICKS or signal == "clicks"]
    queries = with_teachers(labelled, corpus.rows, searcher_teachers(searcher, config.teachers), config.teacher_depth,
                            distill_from)
    if not queries:
        raise ValueError(f"the {signal} signal gave no training query with two candidates")
    metrics = {"signal": signal, "queries": len(queries),
               **train_and_index(model, corpus, queries, config, Path(config.out_dir), Path(config.model_dir))}
    write_json(config.metrics_file, metrics)
    return metrics


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = section("sparse", SparseConfig)
    config.training.seed = int(load_params()["seed"])
    metrics = run(config)
    log.info("sparse: %s", {k: v for k, v in metrics.items() if k != "training"})


if __name__ == "__main__":
    main()
