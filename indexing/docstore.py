"""The document store beside the indices: id -> title and text, so every retriever returns readable hits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from clickloop.atomic import atomic_path
from clickloop.beir import BeirDataset, BeirFormatError, Document
from indexing.errors import reading

DOCS_FILE = "docs.parquet"


def iter_unique_documents(dataset: BeirDataset) -> Iterator[Document]:
    """The corpus in file order; a repeated `_id` is an error, since an index would keep one of them silently."""
    seen: set[str] = set()
    for doc in dataset.corpus():
        if doc.doc_id in seen:
            raise BeirFormatError(f"{dataset.root / 'corpus.jsonl'}: document id {doc.doc_id!r} appears twice")
        seen.add(doc.doc_id)
        yield doc


def write_doc_store(dataset: BeirDataset, path: Path) -> int:
    """Write the corpus as Parquet (`doc_id`, `title`, `text`) atomically; returns the document count."""
    docs = list(iter_unique_documents(dataset))
    frame = pl.DataFrame(
        {"doc_id": [d.doc_id for d in docs], "title": [d.title for d in docs], "text": [d.text for d in docs]},
        schema={"doc_id": pl.String, "title": pl.String, "text": pl.String},
    )
    with atomic_path(path) as staged:
        frame.write_parquet(staged)
    return len(docs)


class DocStore:
    """The documents of an index root, held in memory (a corpus of a few million short docs fits)."""

    def __init__(self, path: Path) -> None:
        with reading(path, "document store"):
            rows = pl.read_parquet(path, columns=["doc_id", "title", "text"]).iter_rows()
            self._docs = {doc_id: Document(doc_id, title, text) for doc_id, title, text in rows}

    def __len__(self) -> int:
        return len(self._docs)

    def get(self, doc_id: str) -> Document | None:
        """The document `doc_id`, or None when the store does not hold it."""
        return self._docs.get(doc_id)
