"""Building and querying the retrieval indices: BM25/RM3 (Lucene via pyserini), dense (FAISS), and `Searcher`."""

from indexing.errors import MissingIndexError, SearchInputError
from indexing.searcher import Hit, Searcher, build_indices

__all__ = ["Hit", "MissingIndexError", "SearchInputError", "Searcher", "build_indices"]
