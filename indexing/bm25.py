"""BM25 (and BM25+RM3) over a Lucene index built and searched through pyserini.

The index holds one `contents` field (title, newline, text) analysed with Anserini's default
English analyzer, like pyserini's BEIR "flat" indexes, with positions, document vectors (RM3
reads its feedback terms from them) and the raw JSON stored. The folder (`bm25/`) also holds the
family's `retriever.json` (kind, indexed document count); it serves the modes bm25 and bm25_rm3.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clickloop.atomic import atomic_path
from clickloop.beir import BeirDataset
from clickloop.env import prepare_pyserini
from indexing.docstore import iter_unique_documents
from indexing.errors import (
    MAX_QUERY_CHARS,
    CorruptIndexError,
    check_k,
    check_queries,
    check_query,
    first_line,
    reading,
    require,
)
from indexing.retriever import Ranking, Retriever, write_manifest
from indexing.settings import BM25Settings, RM3Settings, SearchConfig

log = logging.getLogger(__name__)

KIND = "bm25"


@dataclass
class BM25BuildConfig:
    """Build-time Lucene settings (params.yaml: index.bm25); scoring settings are query-time (`search.bm25`)."""

    threads: int = 2  # Lucene indexing threads

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


class BM25Index:
    """One Lucene searcher over a BM25 index folder: plain BM25, or BM25+RM3 when `rm3` settings are given.

    RM3 is a setting on a pyserini searcher, so the two modes use separate instances and never
    see each other's state. A pyserini searcher must not run two searches at once: each instance
    searches under its own lock, which makes `search` and `batch_search` safe from many threads.
    """

    @classmethod
    def build(cls, dataset: BeirDataset, out_dir: Path, config: BM25BuildConfig) -> None:
        """Index the corpus of `dataset` into `out_dir`, which appears only once index and manifest are complete."""
        with tempfile.TemporaryDirectory(prefix="clickloop-bm25-") as collection_dir:
            n_docs = _write_json_collection(dataset, Path(collection_dir) / "docs.jsonl")
            if n_docs == 0:
                raise ValueError(f"{dataset.root}: the corpus is empty, there is nothing to index")
            with atomic_path(out_dir) as staged:
                counters = run_index_collection(
                    Path(collection_dir), staged, config.threads, storePositions=True, storeDocvectors=True,
                    storeRaw=True,
                )
                write_manifest(staged, KIND, {"n_docs": check_counts(counters, n_docs)}, asdict(config))

    def __init__(self, path: Path, settings: BM25Settings | None = None, rm3: RM3Settings | None = None) -> None:
        self.path = require(Path(path), "BM25 Lucene index")
        self.settings = settings or BM25Settings()
        allow_clauses(MAX_QUERY_CHARS + (rm3.fb_terms if rm3 else 0))
        from pyserini.search.lucene import LuceneSearcher

        with reading(self.path, "BM25 Lucene index"):
            # Absolute: the JVM resolves a relative path against the directory the process started in.
            self._searcher = LuceneSearcher(str(self.path.resolve()))
        self._searcher.set_bm25(self.settings.k1, self.settings.b)
        if rm3:
            self._searcher.set_rm3(rm3.fb_terms, rm3.fb_docs, rm3.original_query_weight)
        self._lock = threading.Lock()
        self.num_docs: int = self._searcher.num_docs

    def search(self, query: str, k: int) -> Ranking:
        """The top `k` (doc id, score) for `query`, best first; `k` beyond the corpus size is clamped."""
        check_query(query)
        depth = min(check_k(k), self.num_docs)
        with self._lock, lucene_errors(self.path, "BM25 Lucene index"):
            hits = self._searcher.search(str(query), depth)
        return [(hit.docid, hit.score) for hit in hits]

    def batch_search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
        """`search` for every (query id, text), run on `settings.threads` Lucene threads."""
        check_queries(queries)
        depth = min(check_k(k), self.num_docs)
        if not queries:
            return {}
        query_ids = list(queries)
        # Plain str for the JVM bridge, which refuses str subclasses such as numpy.str_.
        java_ids = [str(qid) for qid in query_ids]
        with self._lock, lucene_errors(self.path, "BM25 Lucene index"):
            results = self._searcher.batch_search(
                [str(queries[qid]) for qid in query_ids], java_ids, depth, self.settings.threads
            )
        return {qid: [(hit.docid, hit.score) for hit in results.get(java_id, [])]
                for qid, java_id in zip(query_ids, java_ids, strict=True)}


def load(folder: Path, settings: SearchConfig) -> dict[str, Retriever]:
    """The bm25 family's modes over `folder` (indexing.retriever registers this loader)."""
    return {"bm25": BM25Index(folder, settings.bm25), "bm25_rm3": BM25Index(folder, settings.bm25, settings.rm3)}


@contextmanager
def lucene_errors(path: Path, what: str, stage: str = "index") -> Iterator[None]:
    """Searches inside raise a CorruptIndexError for a Java exception. Lucene opens an index by its headers
    and footers and reads the rest lazily, so a damaged file can first fail in a search; with the input
    checked before it reaches Java, a failure there is the index's."""
    from jnius import JavaException

    try:
        yield
    except JavaException as e:
        raise CorruptIndexError(path, what, stage, first_line(e)) from e


def allow_clauses(n_clauses: int) -> None:
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


def run_index_collection(
    collection_dir: Path, index_dir: Path, threads: int, collection_class: str = "JsonCollection", **flags: bool
) -> Any:
    """Run Anserini's IndexCollection in this process; returns its counters. `flags` are its boolean
    arguments (e.g. storePositions=True, or impact=True, pretokenized=True for learned weights)."""
    prepare_pyserini()
    from pyserini.pyclass import autoclass

    index_collection = autoclass("io.anserini.index.IndexCollection")
    args = autoclass("io.anserini.index.IndexCollection$Args")()
    args.input = str(collection_dir)
    args.index = str(index_dir)
    args.collectionClass = collection_class
    args.threads = threads
    for name, value in flags.items():
        setattr(args, name, value)
    indexer = index_collection(args)
    indexer.run()
    return indexer.getCounters()


COUNTERS = ("indexed", "empty", "unindexable", "skipped", "errors")


def counter_values(counters: Any) -> dict[str, int]:
    """IndexCollection's counters as plain integers."""
    return {name: int(getattr(counters, name).get()) for name in COUNTERS}


def check_counts(counters: Any, n_docs: int, what: str = "BM25") -> int:
    """Every document is either indexed or reported empty, else the build failed; returns the indexed count.

    `counters`: IndexCollection's counters, or their `counter_values`."""
    values = counters if isinstance(counters, dict) else counter_values(counters)
    indexed, empty = values["indexed"], values["empty"]
    unindexable, skipped, errors = values["unindexable"], values["skipped"], values["errors"]
    if indexed == 0:
        raise ValueError(f"none of the {n_docs} documents has any text to index")
    if indexed + empty != n_docs or unindexable or skipped or errors:
        raise RuntimeError(
            f"Lucene indexed {indexed} of {n_docs} documents ({empty} empty, {unindexable} unindexable,"
            f" {skipped} skipped, {errors} errors)"
        )
    if empty:
        # Empty documents cannot match any query; Lucene leaves them out, the dense index keeps them.
        log.warning("%d of %d documents have no terms and are not in the %s index", empty, n_docs, what)
    return int(indexed)
