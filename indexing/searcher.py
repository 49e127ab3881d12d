"""The Searcher API: one object over an index root that answers BM25, BM25+RM3 and dense queries.

An index root (`data/indices/` by default) holds `bm25/` (Lucene), `dense/` (FAISS),
`docs.parquet` (titles and texts for the hits) and `searcher.json` (the BM25 and dense
settings it was built with, which searching reuses). `build_indices` writes all of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from clickloop.atomic import atomic_path
from clickloop.beir import BeirDataset
from clickloop.params import from_dict
from indexing.bm25 import BM25Config, BM25Index, Ranking
from indexing.dense import DenseConfig, DenseIndex
from indexing.docstore import DOCS_FILE, DocStore, write_doc_store
from indexing.errors import SearchInputError, require

BM25_DIR = "bm25"
DENSE_DIR = "dense"
SETTINGS_FILE = "searcher.json"


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float
    rank: int  # 1-based
    title: str
    text: str


def build_indices(dataset: BeirDataset, index_root: Path, bm25: BM25Config, dense: DenseConfig) -> dict[str, Any]:
    """Build every artifact of an index root; the root appears only once all of them are complete.

    Returns a report: the document count, and per artifact its build seconds and size on disk.
    """
    index_root = Path(index_root)
    seconds: dict[str, float] = {}
    with atomic_path(index_root) as staged:
        staged.mkdir()
        start = time.perf_counter()
        n_docs = write_doc_store(dataset, staged / DOCS_FILE)
        seconds[DOCS_FILE] = time.perf_counter() - start
        for name, index_cls, config in ((BM25_DIR, BM25Index, bm25), (DENSE_DIR, DenseIndex, dense)):
            start = time.perf_counter()
            index_cls.build(dataset, staged / name, config)
            seconds[name] = time.perf_counter() - start
        settings = {BM25_DIR: asdict(bm25), DENSE_DIR: asdict(dense)}
        (staged / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return {
        "n_docs": n_docs,
        **{
            name: {"build_seconds": round(secs, 3), "size_bytes": _size_on_disk(index_root / name)}
            for name, secs in seconds.items()
        },
    }


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Searcher:
    """Search an index root by mode. Loads each index once; safe to call from many threads."""

    MODES = ("bm25", "bm25_rm3", "dense")

    def __init__(self, index_root: str | Path = "data/indices", modes: Sequence[str] = MODES) -> None:
        """Load the index root; `modes` limits what is loaded (the dense encoder takes seconds to load)."""
        root = Path(index_root)
        for mode in modes:
            self._check_mode(mode)
        require(root, "index root")
        settings = json.loads(require(root / SETTINGS_FILE, "searcher settings").read_text())
        self._docs = DocStore(root / DOCS_FILE)
        self._search: dict[str, Callable[[str, int], Ranking]] = {}
        self._batch_search: dict[str, Callable[[Mapping[str, str], int], dict[str, Ranking]]] = {}
        if {"bm25", "bm25_rm3"} & set(modes):
            bm25_config = from_dict(BM25Config, settings[BM25_DIR], where=f"{SETTINGS_FILE} {BM25_DIR}")
            bm25 = BM25Index(root / BM25_DIR, bm25_config)
            for mode, rm3 in (("bm25", False), ("bm25_rm3", True)):
                self._search[mode] = partial(bm25.search, rm3=rm3)
                self._batch_search[mode] = partial(bm25.batch_search, rm3=rm3)
        if "dense" in modes:
            dense_config = from_dict(DenseConfig, settings[DENSE_DIR], where=f"{SETTINGS_FILE} {DENSE_DIR}")
            dense = DenseIndex(root / DENSE_DIR, dense_config)
            self._search["dense"] = dense.search
            self._batch_search["dense"] = dense.batch_search
        self.modes = tuple(mode for mode in self.MODES if mode in self._search)

    def search(self, query: str, k: int = 10, mode: str = "bm25") -> list[Hit]:
        """The top `k` hits for `query`, best first."""
        return self._hits(self._loaded(self._search, mode)(query, k))

    def batch_search(self, queries: Mapping[str, str], k: int = 100, mode: str = "bm25") -> dict[str, list[Hit]]:
        """`search` for every (query id, text); the same hits as one `search` per query."""
        rankings = self._loaded(self._batch_search, mode)(queries, k)
        return {qid: self._hits(ranking) for qid, ranking in rankings.items()}

    def _check_mode(self, mode: str) -> None:
        if mode not in self.MODES:
            raise SearchInputError(f"unknown search mode {mode!r}; choose one of {', '.join(self.MODES)}")

    def _loaded(self, by_mode: dict[str, Any], mode: str) -> Any:
        self._check_mode(mode)
        if mode not in by_mode:
            raise SearchInputError(f"mode {mode!r} was not loaded; this Searcher has {', '.join(self.modes)}")
        return by_mode[mode]

    def _hits(self, ranking: Ranking) -> list[Hit]:
        hits = []
        for rank, (doc_id, score) in enumerate(ranking, start=1):
            doc = self._docs[doc_id]
            hits.append(Hit(doc_id, score, rank, doc.title, doc.text))
        return hits
