"""Errors the indices raise, and the checks on search input that every retriever shares."""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

# Deeper result lists are never useful for ranking evaluation and cost memory per query.
MAX_K = 10_000
# Longer texts are documents, not queries; the cap also bounds the distinct terms a Lucene query can hold.
MAX_QUERY_CHARS = 10_000


class SearchInputError(ValueError):
    """A query, k or mode that no retriever can answer."""


class MissingIndexError(FileNotFoundError):
    """An index artifact that should have been built is not on disk."""

    problem, remedy = "not found", "build"

    def __init__(self, path: Path, what: str, stage: str = "index", detail: str = "") -> None:
        """`stage`: the DVC stage that builds the artifact, named in the message; `detail`: what is wrong with it."""
        detail = f" ({detail})" if detail else ""
        super().__init__(f"{what} {self.problem} at {path}{detail}; {self.remedy} it with `dvc repro {stage}`")
        self.path = path
        self.stage = stage


class CorruptIndexError(MissingIndexError):
    """An index artifact that is on disk but unusable: unreadable, truncated, of an older format, or built
    with another encoder than the one it would be served with.

    A subclass of MissingIndexError because the remedy is the same, rebuilding it: one
    `except MissingIndexError` catches every artifact a stage has to (re)build.
    """

    problem, remedy = "is unusable", "rebuild"


def require(path: Path, what: str, stage: str = "index") -> Path:
    """`path` if it exists, else a `MissingIndexError` naming the artifact and the stage that builds it."""
    if not path.exists():
        raise MissingIndexError(path, what, stage)
    return path


@contextmanager
def reading(path: Path, what: str, stage: str = "index") -> Iterator[Path]:
    """Read the artifact at `path` inside this block: if it is missing, a MissingIndexError; if reading it
    fails in any way, a CorruptIndexError naming it and the stage that rebuilds it."""
    require(path, what, stage)
    try:
        yield path
    except MissingIndexError:
        raise
    except Exception as e:  # each reader (FAISS, Lucene through Java, Parquet, JSON) fails in its own types
        raise CorruptIndexError(path, what, stage, first_line(e)) from e


def first_line(error: BaseException) -> str:
    """An exception as one line: Java exceptions carry their whole stack trace in the message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def check_k(k: int) -> int:
    """`k` as an int, if it is a whole number from 1 to `MAX_K`."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise SearchInputError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= MAX_K:
        raise SearchInputError(f"k must be between 1 and {MAX_K}, got {k}")
    return int(k)


def check_query(query: str, query_id: str | None = None) -> str:
    """`query` if it is a non-empty string of valid Unicode of at most `MAX_QUERY_CHARS` characters."""
    if not isinstance(query, str) or not query.strip():
        where = f" (query id {query_id!r})" if query_id is not None else ""
        raise SearchInputError(f"query must be a non-empty string{where}, got {query!r}")
    where = f"query {query_id!r}" if query_id is not None else "query"
    if len(query) > MAX_QUERY_CHARS:
        raise SearchInputError(f"{where} has {len(query)} characters; at most {MAX_QUERY_CHARS} are allowed")
    return check_unicode(query, where)


def check_queries(queries: Mapping[str, str]) -> Mapping[str, str]:
    """`queries` if it maps string ids (valid Unicode) to queries `check_query` accepts."""
    if not isinstance(queries, Mapping):
        raise SearchInputError(f"queries must be a mapping of query id to query text, got {type(queries).__name__}")
    for query_id, query in queries.items():
        if not isinstance(query_id, str):
            raise SearchInputError(f"query ids must be strings, got {query_id!r} ({type(query_id).__name__})")
        check_unicode(query_id, "query id")
        check_query(query, query_id)
    return queries


def check_unicode(text: str, what: str) -> str:
    """`text` if it can be encoded as UTF-8; lone surrogates (e.g. from a badly decoded request) cannot,
    and would fail deep in the tokenizers or on the way into Lucene's JVM."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SearchInputError(
            f"{what} is not valid Unicode: {text[e.start:e.end]!r} at character {e.start} ({e.reason})"
        ) from None
    return text
