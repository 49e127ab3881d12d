"""BM25 (and BM25+RM3) over a Lucene index built and searched through pyserini.

The index holds one `contents` field (title, newline, text) analysed with Anserini's default
English analyzer, like pyserini's BEIR "flat" indexes, with positions, document vectors (RM3
reads its feedback terms from them) and the raw JSON stored.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickloop.atomic import atomic_path
from clickloop.beir import BeirDataset
from clickloop.env import prepare_pyserini
from indexing.docstore import iter_unique_documents
from indexing.errors import MAX_QUERY_CHARS, check_k, check_queries, check_query, require

log = logging.getLogger(__name__)

Ranking = list[tuple[str, float]]


@dataclass
class BM25Config:
    """Search-time BM25 and RM3 settings (params.yaml: index.bm25); defaults are pyserini's."""

    k1: float = 0.9
    b: float = 0.4
    rm3_fb_terms: int = 10
    rm3_fb_docs: int = 10
    rm3_original_query_weight: float = 0.5
    threads: int = 2  # Lucene threads for indexing and for batch_search

    def __post_init__(self) -> None:
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")
        if self.rm3_fb_terms < 1 or self.rm3_fb_docs < 1:
            raise ValueError("RM3 needs at least one feedback term and one feedback document")
        if not 0 <= self.rm3_original_query_weight <= 1:
            raise ValueError(f"rm3_original_query_weight must be in [0, 1], got {self.rm3_original_query_weight}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


class BM25Index:
    """A Lucene index on disk with one searcher for BM25 and one for BM25+RM3.

    RM3 is a setting on a pyserini searcher, so the two modes get separate searchers and
    never see each other's state; each is used under its own lock, which makes `search`
    and `batch_search` safe to call from many threads.
    """

    @classmethod
    def build(cls, dataset: BeirDataset, out_dir: Path, config: BM25Config) -> BM25Index:
        """Index the corpus of `dataset` into `out_dir`, which appears only once the index is complete."""
        out_dir = Path(out_dir)
        with tempfile.TemporaryDirectory(prefix="clickloop-bm25-") as collection_dir:
            n_docs = _write_json_collection(dataset, Path(collection_dir) / "docs.jsonl")
            if n_docs == 0:
                raise ValueError(f"{dataset.root}: the corpus is empty, there is nothing to index")
            with atomic_path(out_dir) as staged:
                counters = _run_index_collection(Path(collection_dir), staged, config.threads)
                _check_counts(counters, n_docs)
        return cls(out_dir, config)

    def __init__(self, path: Path, config: BM25Config | None = None) -> None:
        self.path = require(Path(path), "BM25 Lucene index")
        self.config = config or BM25Config()
        _allow_clauses(MAX_QUERY_CHARS + self.config.rm3_fb_terms)
        from pyserini.search.lucene import LuceneSearcher

        self._plain = LuceneSearcher(str(self.path))
        self._plain.set_bm25(self.config.k1, self.config.b)
        self._rm3 = LuceneSearcher(str(self.path))
        self._rm3.set_bm25(self.config.k1, self.config.b)
        self._rm3.set_rm3(
            self.config.rm3_fb_terms, self.config.rm3_fb_docs, self.config.rm3_original_query_weight
        )
        self._locks = {False: threading.Lock(), True: threading.Lock()}
        self.num_docs: int = self._plain.num_docs

    def search(self, query: str, k: int, rm3: bool = False) -> Ranking:
        """The top `k` (doc id, score) for `query`, best first; `k` beyond the corpus size is clamped."""
        check_query(query)
        depth = min(check_k(k), self.num_docs)
        with self._locks[rm3]:
            hits = self._searcher(rm3).search(query, depth)
        return [(hit.docid, hit.score) for hit in hits]

    def batch_search(self, queries: Mapping[str, str], k: int, rm3: bool = False) -> dict[str, Ranking]:
        """`search` for every (query id, text), run on `config.threads` Lucene threads."""
        check_queries(queries)
        depth = min(check_k(k), self.num_docs)
        if not queries:
            return {}
        query_ids = list(queries)
        with self._locks[rm3]:
            results = self._searcher(rm3).batch_search(
                [queries[qid] for qid in query_ids], query_ids, depth, self.config.threads
            )
        return {qid: [(hit.docid, hit.score) for hit in results.get(qid, [])] for qid in query_ids}

    def _searcher(self, rm3: bool) -> Any:
        return self._rm3 if rm3 else self._plain


def _allow_clauses(n_clauses: int) -> None:
    """Let Lucene queries hold `n_clauses` terms (a JVM-wide limit, only ever raised).

    A bag-of-words query has one clause per distinct term and Lucene's default cap is 1,024,
    so a long but legal query would otherwise fail deep inside Lucene with TooManyClauses.
    """
    prepare_pyserini()
    from pyserini.pyclass import autoclass

    index_searcher = autoclass("org.apache.lucene.search.IndexSearcher")
    if index_searcher.getMaxClauseCount() < n_clauses:
        index_searcher.setMaxClauseCount(n_clauses)


def _write_json_collection(dataset: BeirDataset, path: Path) -> int:
    """Write the corpus in Anserini's JsonCollection format; returns the document count."""
    n_docs = 0
    with open(path, "w", encoding="utf-8") as f:
        for doc in iter_unique_documents(dataset):
            f.write(json.dumps({"id": doc.doc_id, "contents": doc.contents}) + "\n")
            n_docs += 1
    return n_docs


def _run_index_collection(collection_dir: Path, index_dir: Path, threads: int) -> Any:
    """Run Anserini's IndexCollection in this process; returns its counters."""
    prepare_pyserini()
    from pyserini.pyclass import autoclass

    index_collection = autoclass("io.anserini.index.IndexCollection")
    args = autoclass("io.anserini.index.IndexCollection$Args")()
    args.input = str(collection_dir)
    args.index = str(index_dir)
    args.collectionClass = "JsonCollection"
    args.threads = threads
    args.storePositions = True
    args.storeDocvectors = True
    args.storeRaw = True
    indexer = index_collection(args)
    indexer.run()
    return indexer.getCounters()


def _check_counts(counters: Any, n_docs: int) -> None:
    """Every document is either indexed or reported empty; anything else is a failed build."""
    indexed, empty = counters.indexed.get(), counters.empty.get()
    unindexable, skipped, errors = counters.unindexable.get(), counters.skipped.get(), counters.errors.get()
    if indexed == 0:
        raise ValueError(f"none of the {n_docs} documents has any text to index")
    if indexed + empty != n_docs or unindexable or skipped or errors:
        raise RuntimeError(
            f"Lucene indexed {indexed} of {n_docs} documents ({empty} empty, {unindexable} unindexable,"
            f" {skipped} skipped, {errors} errors)"
        )
    if empty:
        # Empty documents cannot match any query; BM25 leaves them out, the dense index keeps them.
        log.warning("%d of %d documents have no text and are not in the BM25 index", empty, n_docs)
