"""Stage `dense_feedback`: fine-tune the dense encoder on the feedback and index the corpus with it.

Reads the corpus, the feedback stage's debiased labels and the teachers the index stage built
(BM25 and the base dense retriever by default, through the Searcher: each query's candidates, the
hard negatives beyond what was shown); writes
- `data/dense/model/`: the fine-tuned encoder, a plain sentence-transformers folder
  (`SentenceTransformer("data/dense/model")`);
- `data/indices/dense_feedback/`: its FAISS index (the dense family's layout, kind `dense_feedback`,
  the index type following the corpus size under `index_type: auto`), which the Searcher serves as
  mode `dense_feedback`;
- `metrics/dense_feedback.json`: the signal, the query count, validation nDCG@10 of the base encoder
  and of the best epoch, whether the base was kept, the index type and the seconds each part took.

The signal is chosen as in the sparse stage (`auto`: the click labels when the logs gave some, else
pseudo-queries drawn from the corpus). Validation is a split of the training queries; when no epoch
beats the base encoder there, the base encoder is what is saved and indexed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from clickloop.atomic import write_json
from clickloop.beir import BeirDataset
from clickloop.env import PACKAGED_MODEL, model_path
from clickloop.fingerprint import content_sha256
from clickloop.params import load_params, section
from indexing import dense
from indexing.dense import AUTO, FEEDBACK_KIND, DenseBuildConfig, DenseIndex, document_text, stored_vectors
from indexing.docstore import iter_unique_documents
from indexing.errors import MissingIndexError
from indexing.retriever import read_manifest
from indexing.searcher import Searcher
from models.dense.encoder import new_dense_encoder, save_dense_encoder
from models.dense.trainer import DenseTrainingConfig, train_dense_encoder
from models.feedback_queries import CLICKS, SIGNALS, searcher_teachers, signal_queries, with_teachers

log = logging.getLogger(__name__)


@dataclass
class DenseFeedbackConfig:
    """params.yaml section `dense_feedback`."""

    signal: str = "auto"  # auto: clicks when the logs gave labels, else cold_start; judgments: qrels of train_split
    teachers: list[str] = field(default_factory=lambda: ["bm25", "dense"])  # Searcher modes: candidates, negatives
    # whose scores the distillation target averages (used when training.distill_weight > 0)
    distill_from: list[str] = field(default_factory=lambda: ["bm25", "dense", CLICKS])
    teacher_depth: int = 30  # each teacher's top-k are a query's candidates and hard negatives
    pseudo_queries: int = 2000  # cold start: queries drawn from the corpus
    base_model: str = PACKAGED_MODEL  # the encoder training starts from
    training: DenseTrainingConfig = field(default_factory=DenseTrainingConfig)
    # The FAISS index of the trained encoder; its encoder is `model_dir` (`index.model` stays unset).
    index: DenseBuildConfig = field(default_factory=lambda: DenseBuildConfig(index_type=AUTO))
    train_split: str = "train"
    dataset_dir: str = "data/dataset"
    labels_file: str = "data/feedback/labels.parquet"
    index_root: str = "data/indices"
    model_dir: str = "data/dense/model"
    out_dir: str = "data/indices/dense_feedback"
    metrics_file: str = "metrics/dense_feedback.json"

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {self.signal!r}")
        if self.index.model not in (PACKAGED_MODEL, self.model_dir):  # PACKAGED_MODEL: the unset default
            raise ValueError(f"dense_feedback.index.model is the trained encoder, model_dir ({self.model_dir!r}); "
                             f"got {self.index.model!r}: set base_model for the encoder training starts from")

    @property
    def index_build(self) -> DenseBuildConfig:
        """The index settings with the trained encoder as the model."""
        return replace(self.index, model=self.model_dir)


def base_index_vectors(config: DenseFeedbackConfig, doc_ids: list[str]) -> np.ndarray | None:
    """The document vectors of the index stage's dense folder when they are exactly what the base encoder
    gives under this index's settings (same encoder files, normalisation, length and documents), else None.
    Encoding the corpus is most of the stage's time on CPU, and a kept base encoder would redo it."""
    folder = Path(config.index_root) / dense.KIND
    try:
        manifest = read_manifest(folder, dense.KIND)
        stored_ids = json.loads((folder / dense.DOC_IDS_FILE).read_text(encoding="utf-8"))
    except (MissingIndexError, OSError, ValueError):
        return None
    same = (
        manifest.get("model_sha256") == content_sha256(model_path(config.base_model))
        and manifest.get("normalize") == config.index.normalize
        and manifest.get("max_seq_length") == config.index.max_seq_length
        and stored_ids == doc_ids
    )
    vectors = stored_vectors(folder) if same else None
    return vectors if vectors is not None and vectors.shape[0] == len(doc_ids) else None


def run(config: DenseFeedbackConfig) -> dict[str, Any]:
    """Train, save and index; returns the metrics it writes."""
    started = time.perf_counter()
    dataset = BeirDataset(Path(config.dataset_dir))
    docs = list(iter_unique_documents(dataset))  # the rows of the index and of the training candidates
    if not docs:
        raise ValueError(f"{dataset.root}: the corpus is empty, there is nothing to train on")
    signal, labelled = signal_queries(config.signal, config.labels_file, dataset, config.train_split, docs,
                                      config.pseudo_queries, config.training.seed)
    # Every teacher search (Lucene's JVM among them) comes before any training: see clickloop.process.
    searcher = Searcher(config.index_root, modes=config.teachers)
    distill_from = [t for t in config.distill_from if t != CLICKS or signal == "clicks"]
    queries = with_teachers(labelled, {d.doc_id: row for row, d in enumerate(docs)},
                            searcher_teachers(searcher, config.teachers), config.teacher_depth, distill_from)
    del searcher
    if not queries:
        raise ValueError(f"the {signal} signal gave no training query with two candidates")
    taught = time.perf_counter()
    model = new_dense_encoder(config.base_model, config.index.max_seq_length)
    result = train_dense_encoder(model, [document_text(d) for d in docs], queries, config.training)
    save_dense_encoder(model, config.model_dir)
    trained = time.perf_counter()
    del model
    # The base encoder kept: the index stage's vectors are this index's, when it used the same settings.
    reused = base_index_vectors(config, [d.doc_id for d in docs]) if result.kept_base else None
    DenseIndex.build(dataset, Path(config.out_dir), config.index_build, kind=FEEDBACK_KIND, embeddings=reused)
    manifest = read_manifest(Path(config.out_dir), FEEDBACK_KIND)
    metrics = {
        "signal": signal,
        "queries": len(queries),
        "validation": {"base_ndcg@10": result.base_val_ndcg, "best_ndcg@10": result.best_val_ndcg,
                       "queries": result.n_val, "documents": result.n_validation_docs},
        "kept_base": result.kept_base,
        "training": asdict(result),
        "index_type": manifest["index_type"],
        "reused_base_vectors": reused is not None,
        "n_docs": manifest["n_docs"],
        "model_sha256": manifest["model_sha256"],
        "seconds": {"teachers": round(taught - started, 1), "train": round(trained - taught, 1),
                    "index": round(time.perf_counter() - trained, 1)},
    }
    write_json(config.metrics_file, metrics)
    return metrics


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = section("dense_feedback", DenseFeedbackConfig)
    config.training.seed = int(load_params()["seed"])
    metrics = run(config)
    log.info("dense_feedback: %s", {k: v for k, v in metrics.items() if k != "training"})


if __name__ == "__main__":
    main()
