"""Building and querying the retrieval indices: BM25/RM3 (Lucene via pyserini), dense (FAISS),
the `Searcher` over the registered retriever families (indexing/retriever.py), and the
`Recommender` over the feedback stage's user and item vectors."""

from typing import Any

from indexing.errors import CorruptIndexError, MissingIndexError, SearchInputError
from indexing.searcher import Hit, Searcher
from indexing.settings import SearchConfig

_RECOMMENDER_NAMES = ("Recommendation", "Recommender", "UnknownUserError")

__all__ = [
    "CorruptIndexError", "Hit", "MissingIndexError", "SearchConfig", "SearchInputError", "Searcher", *_RECOMMENDER_NAMES
]


def __getattr__(name: str) -> Any:
    # The recommender pulls in the training stack (Lightning); searching alone should not pay for it.
    if name in _RECOMMENDER_NAMES:
        from indexing import recommender

        return getattr(recommender, name)
    raise AttributeError(f"module 'indexing' has no attribute {name!r}")
