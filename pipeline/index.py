"""Stage `index`: BM25 (Lucene) and dense (FAISS) indices plus the document store, from the BEIR folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clickloop.atomic import write_json
from clickloop.beir import BeirDataset
from clickloop.params import section
from indexing.bm25 import BM25Config
from indexing.dense import DenseConfig
from indexing.searcher import build_indices


@dataclass
class IndexConfig:
    bm25: BM25Config = field(default_factory=BM25Config)
    dense: DenseConfig = field(default_factory=DenseConfig)
    dataset_dir: str = "data/dataset"
    out_dir: str = "data/indices"
    metrics_file: str = "metrics/index.json"


def run(config: IndexConfig) -> dict[str, Any]:
    """Build the index root and write its metrics; returns them."""
    report = build_indices(BeirDataset(Path(config.dataset_dir)), Path(config.out_dir), config.bm25, config.dense)
    write_json(config.metrics_file, report)
    return report


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run(section("index", IndexConfig))
    logging.getLogger("pipeline.index").info("indexed %d documents: %s", report["n_docs"], report)


if __name__ == "__main__":
    main()
