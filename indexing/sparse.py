"""Inference-free learned sparse retrieval over a Lucene impact index (pyserini).

A folder (`sparse/` of an index root, written by the `sparse` stage) holds
- `lucene/`: the impact index: each document's learned term weights, quantised to integers;
- `tokenizer/` and `query_weights.npy`: what a query costs, tokenization and one weight lookup
  per distinct token, sent to Lucene as a weighted term query; no transformer runs at query time;
- `doc_impacts.npz` and `doc_ids.json`: the same integer impacts as a sparse matrix (a row per
  document id), which term-vector PRF reads its expansion terms from;
- `retriever.json`: kind `sparse`, the document count, the mean number of terms per document,
  and the build params (the quantisation scale, the indexing threads).
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from clickloop.atomic import atomic_path
from clickloop.process import in_fresh_process
from indexing.bm25 import allow_clauses, check_counts, counter_values, lucene_errors, run_index_collection
from indexing.errors import (
    MAX_QUERY_CHARS,
    CorruptIndexError,
    MissingIndexError,
    check_k,
    check_queries,
    check_query,
    reading,
    require,
)
from indexing.retriever import Ranking, Retriever, read_manifest, stage_of, write_manifest
from indexing.settings import SearchConfig, SparseSettings

KIND = "sparse"
STAGE = stage_of(KIND)  # the sparse stage builds this folder, not the index stage

LUCENE_DIR = "lucene"
TOKENIZER_DIR = "tokenizer"
QUERY_WEIGHTS_FILE = "query_weights.npy"
DOC_IMPACTS_FILE = "doc_impacts.npz"
DOC_IDS_FILE = "doc_ids.json"


def build_sparse_index(
    doc_ids: Sequence[str],
    vectors: sp.csr_matrix,
    vocabulary: Sequence[str],
    query_weights: np.ndarray,
    tokenizer: Any,
    out_dir: Path,
    impact_scale: float = 100.0,
    threads: int = 2,
) -> dict[str, Any]:
    """Index documents' sparse `vectors` (rows in `doc_ids` order, columns = `vocabulary`) into
    `out_dir`, which appears only once complete; returns the manifest."""
    if vectors.shape != (len(doc_ids), len(vocabulary)) or len(query_weights) != len(vocabulary):
        raise ValueError(f"{vectors.shape} vectors for {len(doc_ids)} documents and {len(vocabulary)} tokens,"
                         f" {len(query_weights)} query weights")
    impacts = vectors.multiply(impact_scale).tocsr()
    impacts.data = np.rint(impacts.data)
    impacts.eliminate_zeros()
    with tempfile.TemporaryDirectory(prefix="clickloop-sparse-") as collection_dir:
        with open(Path(collection_dir) / "docs.jsonl", "w", encoding="utf-8") as f:
            for row, doc_id in enumerate(doc_ids):
                start, end = impacts.indptr[row], impacts.indptr[row + 1]
                terms = {vocabulary[t]: int(w) for t, w in zip(impacts.indices[start:end], impacts.data[start:end],
                                                               strict=True)}
                f.write(json.dumps({"id": doc_id, "contents": "", "vector": terms}) + "\n")
        with atomic_path(out_dir) as staged:
            staged.mkdir()
            # After torch training in the same process, Lucene's indexer has segfaulted: see clickloop.process.
            counts = in_fresh_process(_index_impacts, collection_dir, str(staged / LUCENE_DIR), threads)
            indexed = check_counts(counts, len(doc_ids), "sparse")
            tokenizer.save_pretrained(str(staged / TOKENIZER_DIR))
            np.save(staged / QUERY_WEIGHTS_FILE, np.asarray(query_weights, dtype=np.float32))
            write_doc_impacts(staged, doc_ids, impacts)
            facts = {
                "n_docs": len(doc_ids),
                "indexed_docs": indexed,
                "mean_terms_per_doc": float(impacts.getnnz(axis=1).mean()),
            }
            write_manifest(staged, KIND, facts, {"impact_scale": impact_scale, "threads": threads})
    return facts


def write_doc_impacts(folder: Path, doc_ids: Sequence[str], impacts: sp.csr_matrix) -> None:
    """The documents' integer impacts (rows in `doc_ids` order), for PRF."""
    sp.save_npz(folder / DOC_IMPACTS_FILE, impacts.astype(np.int32).tocsr())
    (folder / DOC_IDS_FILE).write_text(json.dumps(list(doc_ids)), encoding="utf-8")


def _index_impacts(collection_dir: str, index_dir: str, threads: int) -> dict[str, int]:
    counters = run_index_collection(
        Path(collection_dir), Path(index_dir), threads, "JsonVectorCollection", impact=True, pretokenized=True
    )
    return counter_values(counters)


class SparseIndex:
    """Impact search with Python-side query weights; safe to call from many threads."""

    def __init__(self, folder: Path, settings: SparseSettings | None = None) -> None:
        from transformers import AutoTokenizer

        self.path = require(Path(folder), "sparse index", STAGE)
        self.settings = settings or SparseSettings()
        self.manifest = read_manifest(self.path, KIND)
        self.num_docs: int = int(self.manifest["n_docs"])
        with reading(self.path / QUERY_WEIGHTS_FILE, "sparse query weights", STAGE) as weights_file:
            self.query_weights = np.load(weights_file)
        with reading(self.path / TOKENIZER_DIR, "sparse tokenizer", STAGE) as tokenizer_dir:
            self._tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
            self._vocabulary = self._tokenizer.convert_ids_to_tokens(list(range(len(self.query_weights))))
        self._impacts, self._rows = self._read_doc_impacts()
        allow_clauses(MAX_QUERY_CHARS + self.settings.prf.expansion_terms)
        from pyserini.search.lucene import LuceneImpactSearcher

        with reading(self.path / LUCENE_DIR, "sparse Lucene index", STAGE) as lucene_dir:
            # Absolute: the JVM resolves a relative path against the directory the process started in.
            self._searcher = LuceneImpactSearcher(str(lucene_dir.resolve()), None)
        # One lock: HF fast tokenizers and the Java searcher object are not shared across threads.
        self._lock = threading.Lock()

    def _read_doc_impacts(self) -> tuple[sp.csr_matrix | None, dict[str, int]]:
        """The documents' impacts for PRF; None for a folder built before they were kept."""
        if not (self.path / DOC_IMPACTS_FILE).exists():
            return None, {}
        with reading(self.path / DOC_IMPACTS_FILE, "sparse document impacts", STAGE) as impacts_file:
            impacts = sp.load_npz(impacts_file).tocsr()
        with reading(self.path / DOC_IDS_FILE, "sparse doc ids", STAGE) as ids_file:
            doc_ids = json.loads(ids_file.read_text(encoding="utf-8"))
        if impacts.shape != (len(doc_ids), len(self.query_weights)):
            raise CorruptIndexError(self.path / DOC_IMPACTS_FILE, "sparse document impacts", STAGE,
                                    f"shape {impacts.shape} for {len(doc_ids)} doc ids and {len(self.query_weights)} "
                                    f"query weights")
        return impacts, {doc_id: row for row, doc_id in enumerate(doc_ids)}

    def query_vector(self, query: str) -> dict[int, float]:
        """The query's weights by token id: each distinct token's weight from the table."""
        ids = set(self._tokenizer(query, add_special_tokens=False, truncation=False)["input_ids"])
        return {i: float(self.query_weights[i]) for i in ids}

    def query_terms(self, query: str) -> dict[str, int]:
        """The weighted term query Lucene receives: each distinct token's integer weight."""
        return self._integer_terms(self.query_vector(query))

    def expanded_vector(self, query: str, feedback: Sequence[str]) -> dict[int, float]:
        """Rocchio over term weights: alpha times the query's weights plus beta times the mean weights of its
        first `prf.depth` feedback documents, cut to their `prf.expansion_terms` heaviest new terms.

        Query weights (IDF-like) and document weights live on different scales, so each side is
        L2-normalised before the mix, and the mix is brought back to the query's own norm."""
        prf = self.settings.prf
        query_vector = self.query_vector(query)
        if self._impacts is None:
            raise MissingIndexError(self.path / DOC_IMPACTS_FILE, "sparse document impacts (for PRF)", STAGE)
        rows = [self._rows[d] for d in feedback[: prf.depth] if d in self._rows]
        if not rows or not query_vector:
            return query_vector
        mean = np.asarray(self._impacts[rows].mean(axis=0)).ravel()
        expansion = {int(t): float(mean[t]) for t in np.argsort(-mean)[: prf.expansion_terms] if mean[t] > 0}
        expansion |= {t: float(mean[t]) for t in query_vector if mean[t] > 0}
        query_norm = float(np.linalg.norm(list(query_vector.values())))
        expansion_norm = float(np.linalg.norm(list(expansion.values()))) or 1.0
        mixed = {t: prf.alpha * w / query_norm for t, w in query_vector.items()}
        for t, w in expansion.items():
            mixed[t] = mixed.get(t, 0.0) + prf.beta * w / expansion_norm
        return {t: w * query_norm for t, w in mixed.items()}

    def search(self, query: str, k: int) -> Ranking:
        """The top `k` (doc id, impact score) for `query`, best first; `k` beyond the corpus size is clamped."""
        check_query(query)
        check_k(k)
        with self._lock:
            vector = self.query_vector(query)
        return self._search_terms(self._integer_terms(vector), k)

    def batch_search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
        """`search` for every (query id, text)."""
        check_queries(queries)
        check_k(k)
        return {qid: self.search(text, k) for qid, text in queries.items()}

    def feedback_search(
        self, queries: Mapping[str, str], feedback: Mapping[str, Sequence[str]], k: int
    ) -> dict[str, Ranking]:
        """Term-vector PRF: each query expanded from its feedback documents' impacts (`expanded_vector`) and
        searched on the same impact index; still no transformer at query time."""
        check_queries(queries)
        check_k(k)
        rankings = {}
        for qid, text in queries.items():
            with self._lock:
                vector = self.expanded_vector(text, list(feedback.get(qid, ())))
            rankings[qid] = self._search_terms(self._integer_terms(vector), k)
        return rankings

    def _integer_terms(self, vector: Mapping[int, float]) -> dict[str, int]:
        scale = self.settings.query_scale
        weights = {self._vocabulary[i]: round(w * scale) for i, w in vector.items()}
        return {term: w for term, w in weights.items() if w > 0}

    def _search_terms(self, terms: Mapping[str, int], k: int) -> Ranking:
        if not terms:
            return []
        from pyserini.pyclass import JHashMap, JInt

        java_terms = JHashMap()
        for term, weight in terms.items():
            java_terms.put(term, JInt(weight))
        with self._lock, lucene_errors(self.path / LUCENE_DIR, "sparse Lucene index", STAGE):
            hits = self._searcher.object.search(java_terms, min(k, self.num_docs))
        return [(hit.docid, float(hit.score)) for hit in hits]


def load(folder: Path, settings: SearchConfig) -> dict[str, Retriever]:
    """The sparse family's mode over `folder` (indexing.retriever registers this loader)."""
    return {KIND: SparseIndex(folder, settings.sparse)}
