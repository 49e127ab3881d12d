"""Stage `index`: the document store, the BM25 (Lucene) and the dense (FAISS) index of an index root.

Each of `docs.parquet`, `bm25/` and `dense/` is a DVC output of its own and is written
atomically on its own, so other stages can add family folders (e.g. `sparse/`) to the same
root: DVC forbids an output inside another stage's output.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from clickloop.atomic import write_json
from clickloop.beir import BeirDataset
from clickloop.params import section
from indexing import bm25, dense
from indexing.bm25 import BM25BuildConfig, BM25Index
from indexing.dense import DenseBuildConfig, DenseIndex
from indexing.docstore import DOCS_FILE, write_doc_store

T = TypeVar("T")


@dataclass
class IndexConfig:
    """params.yaml section `index`: build-time settings only (query-time ones are `search`)."""

    bm25: BM25BuildConfig = field(default_factory=BM25BuildConfig)
    dense: DenseBuildConfig = field(default_factory=DenseBuildConfig)
    dataset_dir: str = "data/dataset"
    out_dir: str = "data/indices"
    metrics_file: str = "metrics/index.json"


def build_indices(
    dataset: BeirDataset, index_root: Path, bm25_config: BM25BuildConfig, dense_config: DenseBuildConfig
) -> dict[str, Any]:
    """Build the document store and the bm25 and dense folders of `index_root`, each atomically.

    Returns a report: the document count, and per artifact its build seconds and size on disk.
    """
    index_root = Path(index_root)
    report: dict[str, Any] = {}

    def timed(name: str, build: Callable[[Path], T]) -> T:
        start = time.perf_counter()
        result = build(index_root / name)
        report[name] = {"build_seconds": round(time.perf_counter() - start, 3),
                        "size_bytes": _size_on_disk(index_root / name)}
        return result

    n_docs = timed(DOCS_FILE, lambda path: write_doc_store(dataset, path))
    timed(bm25.KIND, lambda path: BM25Index.build(dataset, path, bm25_config))
    timed(dense.KIND, lambda path: DenseIndex.build(dataset, path, dense_config))
    return {"n_docs": n_docs, **report}


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(config: IndexConfig) -> dict[str, Any]:
    """Build the index root's artifacts and write their metrics; returns them."""
    report = build_indices(BeirDataset(Path(config.dataset_dir)), Path(config.out_dir), config.bm25, config.dense)
    write_json(config.metrics_file, report)
    return report


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run(section("index", IndexConfig))
    logging.getLogger("pipeline.index").info("indexed %d documents: %s", report["n_docs"], report)


if __name__ == "__main__":
    main()
