"""Dense retrieval: sentence-transformers embeddings in a FAISS inner-product index.

On disk (`dense/`): `index.faiss` (always a CPU index), `doc_ids.json` (row -> doc id) and the
family's `retriever.json` (kind, encoder and the content hash of its files, dimension, index type,
document count, normalisation, max_seq_length, build params). Queries are encoded with the encoder
the manifest names, and loading fails unless its files still hash the same, so documents and
queries always share one embedding space. The family serves one mode, dense.

The same code serves the `dense_feedback` family (`dense_feedback/`, mode dense_feedback): the
encoder the `dense_feedback` stage fine-tuned from the feedback, in the same folder layout; each
index is built and loaded with its kind (`DenseIndex(folder, kind=FEEDBACK_KIND)`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from clickloop.atomic import atomic_path
from clickloop.beir import BeirDataset, Document
from clickloop.env import PACKAGED_MODEL, model_path, torch_device
from clickloop.fingerprint import content_sha256
from indexing.docstore import iter_unique_documents
from indexing.errors import CorruptIndexError, check_k, check_queries, check_query, reading, require
from indexing.retriever import MANIFEST_FILE, Ranking, Retriever, read_manifest, stage_of, write_manifest
from indexing.settings import DenseSettings, SearchConfig

log = logging.getLogger(__name__)

KIND = "dense"
FEEDBACK_KIND = "dense_feedback"  # the encoder fine-tuned from the feedback (pipeline/dense_feedback.py)
AUTO = "auto"  # the index type that follows the corpus size
INDEX_FILE = "index.faiss"
RECENT_QUERIES = 4096  # query vectors kept for reuse
DOC_IDS_FILE = "doc_ids.json"


@dataclass
class DenseBuildConfig:
    """Encoder and FAISS index settings (params.yaml: index.dense); search settings are query-time (`search.dense`)."""

    model: str = PACKAGED_MODEL  # the packaged all-MiniLM-L6-v2, or a sentence-transformers folder
    # A faiss.index_factory string (the metric is always inner product), or "auto": exact search
    # ("Flat") below `exact_below` documents, the `approximate` index at or above it.
    index_type: str = "Flat"
    exact_below: int = 100_000  # auto: where exact search stops paying (a Flat query scans every vector)
    approximate: str = "HNSW32"  # auto's index for large corpora: HNSW needs no training and adds incrementally
    batch_size: int = 64  # documents per encoder batch
    max_seq_length: int = 256
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_seq_length < 1:
            raise ValueError(f"batch_size and max_seq_length must be positive, got {self.batch_size}, "
                             f"{self.max_seq_length}")
        if self.exact_below < 0 or self.approximate == AUTO:
            raise ValueError(f"auto needs exact_below >= 0 and an approximate index type other than {AUTO!r}, "
                             f"got {self.exact_below}, {self.approximate!r}")


def index_type_for(config: DenseBuildConfig, n_docs: int) -> str:
    """The FAISS index_factory string `config` gives a corpus of `n_docs` documents (resolving "auto")."""
    if config.index_type != AUTO:
        return config.index_type
    return "Flat" if n_docs < config.exact_below else config.approximate


def load_encoder(model: str, max_seq_length: int) -> Any:
    """The sentence-transformers encoder `model` names, on CUDA when present."""
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(model_path(model), device=torch_device())
    encoder.max_seq_length = max_seq_length
    return encoder


def document_text(doc: Document) -> str:
    """What the encoder reads for a document: title and text joined by a space (the BEIR convention)."""
    return f"{doc.title} {doc.text}".strip()


def encode(encoder: Any, texts: Sequence[str], batch_size: int, normalize: bool, progress: bool) -> np.ndarray:
    embeddings = encoder.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=progress,
        normalize_embeddings=normalize,
        convert_to_numpy=True,
    )
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def new_faiss_index(index_type: str, dim: int) -> Any:
    try:
        return faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ValueError(f"{index_type!r} is not a FAISS index_factory string FAISS accepts: {e}") from None


class DenseIndex:
    """A FAISS index of document embeddings plus the encoder for queries; safe to search from many threads."""

    @classmethod
    def build(cls, dataset: BeirDataset, out_dir: Path, config: DenseBuildConfig, kind: str = KIND,
              embeddings: np.ndarray | None = None) -> None:
        """Encode the corpus of `dataset` and index it into `out_dir`, which appears only once complete.

        `kind`: the family the folder belongs to (its manifest's kind), `dense` or `dense_feedback`.
        `embeddings`: the documents' vectors (corpus order) when they are known already, computed by an
        encoder with the same weights and settings as `config`'s (see `stored_vectors`): no encode then."""
        docs = list(iter_unique_documents(dataset))
        if not docs:
            raise ValueError(f"{dataset.root}: the corpus is empty, there is nothing to index")
        encoder = load_encoder(config.model, config.max_seq_length)
        dim = encoder.get_embedding_dimension()
        index_type = index_type_for(config, len(docs))
        index = new_faiss_index(index_type, dim)  # fails on a bad index type before the long encode
        if embeddings is None:
            embeddings = encode(encoder, [document_text(d) for d in docs], config.batch_size, config.normalize, True)
        elif embeddings.shape != (len(docs), dim):
            raise ValueError(f"{embeddings.shape} embeddings given for {len(docs)} documents of dimension {dim}")
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if not index.is_trained:
            try:
                index.train(embeddings)
            except RuntimeError as e:
                raise ValueError(
                    f"FAISS index {index_type!r} cannot be trained on {len(docs)} documents"
                    f" (an IVF index needs more documents than lists): {e}"
                ) from None
        index.add(embeddings)
        facts = {
            "model": config.model,
            **_encoder_location(config.model, Path(out_dir)),
            "model_sha256": content_sha256(model_path(config.model)),
            "dim": dim,
            "index_type": index_type,  # what "auto" chose, when it was asked for
            "n_docs": len(docs),
            "normalize": config.normalize,
            "max_seq_length": config.max_seq_length,
        }
        with atomic_path(out_dir) as staged:
            staged.mkdir()
            faiss.write_index(index, str(staged / INDEX_FILE))
            (staged / DOC_IDS_FILE).write_text(json.dumps([d.doc_id for d in docs]))
            write_manifest(staged, kind, facts, asdict(config))

    def __init__(self, path: Path, settings: DenseSettings | None = None, kind: str = KIND) -> None:
        """Load a folder of family `kind` (`dense`, or `dense_feedback`: the same layout, another encoder)."""
        stage = stage_of(kind)
        self.path = require(Path(path), f"{kind} FAISS index", stage)
        self.settings = settings or DenseSettings()
        self.manifest = read_manifest(self.path, kind)
        check_encoder(self.path, self.manifest, stage)
        with reading(self.path / DOC_IDS_FILE, f"{kind} doc ids", stage) as doc_ids_file:
            self.doc_ids: list[str] = json.loads(doc_ids_file.read_text(encoding="utf-8"))
        cpu_index = read_faiss_index(self.path, len(self.doc_ids), self.manifest["dim"], stage)
        if self.settings.search_params:
            faiss.ParameterSpace().set_index_parameters(cpu_index, self.settings.search_params)
        _allow_reconstruct(cpu_index)
        self._cpu_index = cpu_index  # PRF reads document vectors back from it
        self._rows = {doc_id: row for row, doc_id in enumerate(self.doc_ids)}
        self._index = _on_gpu_if_possible(cpu_index)
        self._encoder = load_encoder(encoder_of(self.path, self.manifest), self.manifest["max_seq_length"])
        # The one encoder check left where the manifest records no encoder hash (format version 0).
        if self._encoder.get_embedding_dimension() != cpu_index.d:
            raise CorruptIndexError(
                self.path / MANIFEST_FILE, f"{kind} index", stage, f"its vectors have dimension {cpu_index.d}, its "
                f"encoder {self.manifest['model']!r} now gives {self._encoder.get_embedding_dimension()}"
            )
        # Hugging Face fast tokenizers raise "Already borrowed" when used from two threads at once.
        self._lock = threading.Lock()
        # The last queries' vectors: a PRF pipeline searches a query, then searches it again expanded.
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self.num_docs = len(self.doc_ids)

    def search(self, query: str, k: int) -> Ranking:
        """The top `k` (doc id, inner product) for `query`, best first; `k` beyond the corpus size is clamped."""
        check_query(query)
        return self._search_texts([query], check_k(k))[0]

    def batch_search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
        """`search` for every (query id, text), encoding the queries in batches."""
        check_queries(queries)
        check_k(k)
        if not queries:
            return {}
        return dict(zip(queries, self._search_texts(list(queries.values()), k), strict=True))

    def feedback_search(
        self, queries: Mapping[str, str], feedback: Mapping[str, Sequence[str]], k: int
    ) -> dict[str, Ranking]:
        """Vector PRF (Rocchio): each query vector becomes alpha q + beta times the mean vector of its first
        `settings.prf.depth` feedback documents (ids this index does not hold are skipped), then searched."""
        check_queries(queries)
        check_k(k)
        if not queries:
            return {}
        prf = self.settings.prf
        with self._lock:
            vectors = self._encode(list(queries.values())) * prf.alpha
        for i, qid in enumerate(queries):
            rows = [self._rows[d] for d in feedback.get(qid, ())[: prf.depth] if d in self._rows]
            if rows:
                vectors[i] += prf.beta * self._cpu_index.reconstruct_batch(np.asarray(rows, dtype=np.int64)).mean(0)
        return dict(zip(queries, self._search_vectors(vectors, k), strict=True))

    def _encode(self, texts: list[str]) -> np.ndarray:
        """The query vectors of `texts`, each encoded once while it stays among the recent ones (hold the lock)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._recent]
        fresh = dict(zip(missing, encode(self._encoder, missing, self.settings.batch_size, self.manifest["normalize"],
                                         False), strict=True)) if missing else {}
        vectors = np.stack([fresh[t] if t in fresh else self._recent[t] for t in texts])
        self._recent.update(fresh)
        while len(self._recent) > RECENT_QUERIES:
            self._recent.popitem(last=False)
        return vectors

    def _search_texts(self, texts: list[str], k: int) -> list[Ranking]:
        with self._lock:
            vectors = self._encode(texts)
        return self._search_vectors(vectors, k)

    def _search_vectors(self, vectors: np.ndarray, k: int) -> list[Ranking]:
        depth = min(k, self.num_docs)
        with self._lock:
            scores, rows = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), depth)
        # Approximate indices (HNSW, IVF) mark missing neighbours with row -1.
        return [
            [(self.doc_ids[row], float(score)) for score, row in zip(q_scores, q_rows, strict=True) if row >= 0]
            for q_scores, q_rows in zip(scores, rows, strict=True)
        ]


def load(folder: Path, settings: SearchConfig) -> dict[str, Retriever]:
    """The dense family's one mode over `folder` (indexing.retriever registers this loader)."""
    return {KIND: DenseIndex(folder, settings.dense)}


def load_feedback(folder: Path, settings: SearchConfig) -> dict[str, Retriever]:
    """The dense_feedback family's one mode: the fine-tuned encoder's index, searched with the
    dense family's query-time settings (the same FAISS engine and knobs)."""
    return {FEEDBACK_KIND: DenseIndex(folder, settings.dense, kind=FEEDBACK_KIND)}


def read_faiss_index(folder: Path, n_docs: int, dim: int, stage: str = "index") -> Any:
    """The FAISS index of a dense folder, which must hold one vector of dimension `dim` per document."""
    with reading(folder / INDEX_FILE, "FAISS index file", stage) as index_file:
        index = faiss.read_index(str(index_file))
    if (index.ntotal, index.d) != (n_docs, dim):
        raise CorruptIndexError(
            folder / INDEX_FILE, "FAISS index file", stage, f"it holds {index.ntotal} vectors of dimension {index.d}; "
            f"the folder has {n_docs} doc ids and its manifest says dimension {dim}"
        )
    return index


def stored_vectors(folder: Path) -> np.ndarray | None:
    """The document vectors of a dense folder (row order of its doc ids) when its FAISS index keeps them
    exactly (Flat, or HNSW over flat storage); None for a compressed or unreadable one."""
    try:
        index = faiss.read_index(str(folder / INDEX_FILE))  # already of its own class (IndexFlatIP, ...)
    except RuntimeError:
        return None
    if not isinstance(index, faiss.IndexFlat | faiss.IndexHNSWFlat):
        return None
    return index.reconstruct_n(0, index.ntotal)


def _encoder_location(model: str, out_dir: Path) -> dict[str, str]:
    """Where a local encoder folder lies seen from the index folder (`model_path` in the manifest), so that
    the index loads from any working directory (a stage's `data/dense/model` is relative to the project)."""
    if model == PACKAGED_MODEL:
        return {}
    return {"model_path": os.path.relpath(Path(model).resolve(), out_dir.resolve())}


def encoder_of(folder: Path, manifest: dict[str, Any]) -> str:
    """The encoder to load for the index in `folder`: the packaged model, or the folder its manifest locates."""
    if "model_path" in manifest:
        return str((folder / manifest["model_path"]).resolve())
    return manifest["model"]  # manifests before model_path: the packaged model or a path as it was given


def check_encoder(folder: Path, manifest: dict[str, Any], stage: str = "index") -> None:
    """The encoder `manifest` names must be the one that built the index: same files, byte for byte.

    Another encoder loads fine and answers in another embedding space: silently wrong hits when its
    dimension matches, a FAISS assertion at the first search when it does not.
    """
    model = manifest["model"]
    try:
        encoder_path = model_path(encoder_of(folder, manifest))
    except FileNotFoundError as e:
        raise CorruptIndexError(folder / MANIFEST_FILE, "dense index", stage, f"its encoder is gone: {e}") from None
    if "model_sha256" not in manifest:
        log.warning("%s: built before encoder hashes were recorded, so its encoder %r cannot be checked; rebuild it "
                    "with `dvc repro %s`", folder, model, stage)
        return
    found = content_sha256(encoder_path)
    if found != manifest["model_sha256"]:
        raise CorruptIndexError(
            folder / MANIFEST_FILE, "dense index", stage, f"built with encoder {model!r} whose files had sha256 "
            f"{manifest['model_sha256'][:12]}..., now {found[:12]}...: another encoder answers in another space"
        )


def _allow_reconstruct(index: Any) -> None:
    """Let an IVF index give stored vectors back by row (flat and HNSW indices always can), for PRF."""
    with contextlib.suppress(RuntimeError):  # not an IVF index
        faiss.extract_index_ivf(index).make_direct_map()


def _on_gpu_if_possible(index: Any) -> Any:
    """The index on all GPUs when FAISS was built with GPU support and one is present, else `index` itself."""
    if not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError as e:  # e.g. HNSW has no GPU implementation
        log.warning("searching the FAISS index on CPU: it cannot move to GPU (%s)", e)
        return index
