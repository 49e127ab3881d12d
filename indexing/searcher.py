"""The Searcher API: one object over an index root that answers every registered search mode.

An index root (`data/indices/` by default) holds `docs.parquet` (titles and texts for the hits)
and one folder per retriever family, each with its `retriever.json` manifest (`bm25/`, `dense/`;
see indexing/retriever.py). Query-time settings come from a `SearchConfig` (params.yaml `search`),
not from the artifacts, so they can change without a rebuild.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from indexing.docstore import DOCS_FILE, DocStore
from indexing.errors import CorruptIndexError, MissingIndexError, SearchInputError, require
from indexing.retriever import FAMILIES, MANIFEST_FILE, Ranking, Retriever, discover, family_of, known_modes
from indexing.settings import SearchConfig


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float
    rank: int  # 1-based
    title: str
    text: str


class Searcher:
    """Search an index root by mode. Loads each index once; safe to call from many threads."""

    def __init__(
        self, index_root: str | Path = "data/indices", modes: Sequence[str] | None = None,
        settings: SearchConfig | None = None,
    ) -> None:
        """Load the index root.

        `modes` limits what is loaded (the dense encoder takes seconds to load); a family loads
        all its modes together. By default every family whose folder the root holds is loaded.
        A requested mode whose folder is missing raises MissingIndexError naming the stage that
        builds it; an unknown mode raises SearchInputError.
        """
        requested = None if modes is None else list(dict.fromkeys(family_of(mode) for mode in modes))
        root = require(Path(index_root), "index root")
        found = discover(root)
        if requested is None:
            requested = [FAMILIES[kind] for kind in found]
            if not requested:
                raise MissingIndexError(root / "*" / MANIFEST_FILE, "retriever index")
        missing = next((family for family in requested if family.kind not in found), None)
        if missing:
            raise MissingIndexError(
                root / missing.kind / MANIFEST_FILE, f"{missing.kind} index (modes {', '.join(missing.modes)})",
                missing.stage,
            )
        settings = settings or SearchConfig()
        self._docs = DocStore(root / DOCS_FILE)
        self._retrievers: dict[str, Retriever] = {}
        self._folders = {family.kind: found[family.kind] for family in requested}
        for family in requested:
            self._retrievers.update(family.load(found[family.kind], settings))
        self.modes = tuple(mode for mode in known_modes() if mode in self._retrievers)

    def search(self, query: str, k: int = 10, mode: str = "bm25") -> list[Hit]:
        """The top `k` hits for `query`, best first."""
        return self._hits(self._retriever(mode).search(query, k), mode)

    def batch_search(self, queries: Mapping[str, str], k: int = 100, mode: str = "bm25") -> dict[str, list[Hit]]:
        """`search` for every (query id, text); the same hits as one `search` per query."""
        rankings = self._retriever(mode).batch_search(queries, k)
        return {qid: self._hits(ranking, mode) for qid, ranking in rankings.items()}

    def _retriever(self, mode: str) -> Retriever:
        family_of(mode)  # an unknown mode gets the list of known ones
        if mode not in self._retrievers:
            raise SearchInputError(f"mode {mode!r} was not loaded; this Searcher has {', '.join(self.modes)}")
        return self._retrievers[mode]

    def _hits(self, ranking: Ranking, mode: str) -> list[Hit]:
        hits = []
        for rank, (doc_id, score) in enumerate(ranking, start=1):
            doc = self._docs.get(doc_id)
            if doc is None:
                # The index and the document store were built from different corpora; the index is the
                # stale one when another stage built it (e.g. sparse after a new `index`).
                family = family_of(mode)
                raise CorruptIndexError(
                    self._folders[family.kind], f"{family.kind} index", family.stage,
                    f"it returns document {doc_id!r}, which {DOCS_FILE} does not hold",
                )
            hits.append(Hit(doc_id, score, rank, doc.title, doc.text))
        return hits
