"""Errors the indices raise, and the checks on search input that every retriever shares."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from pathlib import Path

# Deeper result lists are never useful for ranking evaluation and cost memory per query.
MAX_K = 10_000
# Longer texts are documents, not queries; the cap also bounds the distinct terms a Lucene query can hold.
MAX_QUERY_CHARS = 10_000


class SearchInputError(ValueError):
    """A query, k or mode that no retriever can answer."""


class MissingIndexError(FileNotFoundError):
    """An index artifact that should have been built is not on disk."""

    def __init__(self, path: Path, what: str, stage: str = "index") -> None:
        """`stage`: the DVC stage that builds the artifact, named in the message."""
        super().__init__(f"{what} not found at {path}; build it with `dvc repro {stage}`")
        self.path = path


def require(path: Path, what: str, stage: str = "index") -> Path:
    """`path` if it exists, else a `MissingIndexError` naming the artifact and the stage that builds it."""
    if not path.exists():
        raise MissingIndexError(path, what, stage)
    return path


def check_k(k: int) -> int:
    """`k` as an int, if it is a whole number from 1 to `MAX_K`."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise SearchInputError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= MAX_K:
        raise SearchInputError(f"k must be between 1 and {MAX_K}, got {k}")
    return int(k)


def check_query(query: str, query_id: str | None = None) -> str:
    if not isinstance(query, str) or not query.strip():
        where = f" (query id {query_id!r})" if query_id is not None else ""
        raise SearchInputError(f"query must be a non-empty string{where}, got {query!r}")
    if len(query) > MAX_QUERY_CHARS:
        where = f"query {query_id!r}" if query_id is not None else "query"
        raise SearchInputError(f"{where} has {len(query)} characters; at most {MAX_QUERY_CHARS} are allowed")
    return query


def check_queries(queries: Mapping[str, str]) -> Mapping[str, str]:
    for query_id, query in queries.items():
        check_query(query, query_id)
    return queries
