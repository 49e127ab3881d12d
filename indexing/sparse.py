"""Inference-free learned sparse retrieval over a Lucene impact index (pyserini).

A folder (`sparse/` of an index root, written by the `sparse` stage) holds
- `lucene/`: the impact index: each document's learned term weights, quantised to integers;
- `tokenizer/` and `query_weights.npy`: what a query costs, tokenization and one weight lookup
  per distinct token, sent to Lucene as a weighted term query; no transformer runs at query time;
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
from indexing.errors import MAX_QUERY_CHARS, check_k, check_queries, check_query, reading, require
from indexing.retriever import Ranking, Retriever, read_manifest, stage_of, write_manifest
from indexing.settings import SearchConfig, SparseSettings

KIND = "sparse"
STAGE = stage_of(KIND)  # the sparse stage builds this folder, not the index stage

LUCENE_DIR = "lucene"
TOKENIZER_DIR = "tokenizer"
QUERY_WEIGHTS_FILE = "query_weights.npy"


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
            facts = {
                "n_docs": len(doc_ids),
                "indexed_docs": indexed,
                "mean_terms_per_doc": float(impacts.getnnz(axis=1).mean()),
            }
            write_manifest(staged, KIND, facts, {"impact_scale": impact_scale, "threads": threads})
    return facts


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
        allow_clauses(MAX_QUERY_CHARS)
        from pyserini.search.lucene import LuceneImpactSearcher

        with reading(self.path / LUCENE_DIR, "sparse Lucene index", STAGE) as lucene_dir:
            self._searcher = LuceneImpactSearcher(str(lucene_dir), None)
        # One lock: HF fast tokenizers and the Java searcher object are not shared across threads.
        self._lock = threading.Lock()

    def query_terms(self, query: str) -> dict[str, int]:
        """The weighted term query Lucene receives: each distinct token's integer weight."""
        ids = set(self._tokenizer(query, add_special_tokens=False, truncation=False)["input_ids"])
        scale = self.settings.query_scale
        weights = {self._vocabulary[i]: round(float(self.query_weights[i]) * scale) for i in ids}
        return {term: w for term, w in weights.items() if w > 0}

    def search(self, query: str, k: int) -> Ranking:
        """The top `k` (doc id, impact score) for `query`, best first; `k` beyond the corpus size is clamped."""
        check_query(query)
        depth = min(check_k(k), self.num_docs)
        from pyserini.pyclass import JHashMap, JInt

        with self._lock, lucene_errors(self.path / LUCENE_DIR, "sparse Lucene index", STAGE):
            terms = self.query_terms(query)
            if not terms:
                return []
            java_terms = JHashMap()
            for term, weight in terms.items():
                java_terms.put(term, JInt(weight))
            hits = self._searcher.object.search(java_terms, depth)
        return [(hit.docid, float(hit.score)) for hit in hits]

    def batch_search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
        """`search` for every (query id, text)."""
        check_queries(queries)
        check_k(k)
        return {qid: self.search(text, k) for qid, text in queries.items()}


def load(folder: Path, settings: SearchConfig) -> dict[str, Retriever]:
    """The sparse family's mode over `folder` (indexing.retriever registers this loader)."""
    return {KIND: SparseIndex(folder, settings.sparse)}
