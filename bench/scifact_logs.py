"""What the SciFact feedback benchmarks share: the dataset beside the repo, a BM25 logging
ranker over it (the project's Lucene index, built once per work folder), and simulated logs
run through the real ingest stage."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clickloop.beir import BeirDataset
from clickloop.ingest import IngestConfig, IngestReport, ingest
from indexing.bm25 import BM25BuildConfig, BM25Index

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "datasets" / "scifact"


def portable(value: Any) -> Any:
    """`value` with every path (Path, or a string naming an absolute path) relative to the repo, so a
    committed report names datasets and folders the same on every machine; a path outside the repo
    and the folder beside it (../shared) is named by its last part only."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v) for v in value]
    if isinstance(value, Path) or (isinstance(value, str) and os.path.isabs(value)):
        absolute = Path(value).resolve()
        if absolute.is_relative_to(REPO.parent):
            return os.path.relpath(absolute, REPO)
        return absolute.name
    return value


def scifact(path: Path = SCIFACT) -> BeirDataset:
    """The SciFact BEIR folder, or exit with where it was looked for."""
    if not path.is_dir():
        raise SystemExit(f"SciFact is not at {path}: the benchmarks need ../shared/datasets beside the repo")
    return BeirDataset(path)


def bm25_rankings(
    dataset: BeirDataset, index_dir: Path, queries: Mapping[str, str], depth: int
) -> dict[str, list[tuple[str, float]]]:
    """BM25 (default k1/b) top-`depth` (doc id, score) per query; the index is built on first use."""
    if not index_dir.is_dir():
        BM25Index.build(dataset, index_dir, BM25BuildConfig())
    return BM25Index(index_dir).batch_search(dict(queries), k=depth)


def ingest_logs(log_dir: Path, work_dir: Path) -> IngestReport:
    """Ingest `log_dir` into `work_dir/ingested` (metrics and spill folder beside it)."""
    return ingest(
        IngestConfig(
            log_roots=[str(log_dir)],
            out_dir=str(work_dir / "ingested"),
            metrics_file=str(work_dir / "ingest.json"),
            temp_directory=str(work_dir / "spill"),
        )
    )
