"""Stage `dataset`: the BEIR folder every later stage reads, at `data/dataset/`.

`source: embedded` generates the shop catalog (`clickloop.catalog`) from the top-level seed;
any other value is the path of a BEIR folder, which is validated and copied (corpus, queries
and the train/test qrels), so a broken folder fails here and not three stages later.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clickloop.atomic import atomic_path
from clickloop.beir import BeirDataset, BeirFormatError, write_beir
from clickloop.catalog import CatalogConfig, generate_catalog
from clickloop.params import load_params, section

log = logging.getLogger(__name__)

EMBEDDED = "embedded"


@dataclass
class DatasetConfig:
    """params.yaml section `dataset`."""

    source: str = EMBEDDED  # "embedded" or the path of a BEIR folder
    out_dir: str = "data/dataset"
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    train_split: str = "train"
    test_split: str = "test"

    def __post_init__(self) -> None:
        if self.train_split == self.test_split:
            raise ValueError(f"dataset: train_split and test_split must differ, both are {self.train_split!r}")


def build_dataset(config: DatasetConfig, seed: int) -> dict[str, Any]:
    """Write the dataset folder atomically; return a summary (documents, queries, judgments per split)."""
    splits = (config.train_split, config.test_split)
    with atomic_path(config.out_dir) as staged:
        if config.source == EMBEDDED:
            catalog = generate_catalog(config.catalog, seed, *splits)
            write_beir(staged, catalog.documents, catalog.queries, catalog.qrels)
        else:
            source = _validated_source(Path(config.source), splits)
            write_beir(staged, source.corpus(), source.queries(), {s: source.qrels(s) for s in splits})
        written = BeirDataset(staged)
        summary = {
            "source": config.source,
            "documents": sum(1 for _ in written.corpus()),
            "queries": len(written.queries()),
            "judged_queries": {s: len(written.qrels(s)) for s in splits},
            "judgments": {s: sum(len(d) for d in written.qrels(s).values()) for s in splits},
        }
    return summary


def _validated_source(root: Path, splits: tuple[str, ...]) -> BeirDataset:
    """The BEIR folder at `root`, checked: readable corpus, unique ids, qrels for every split that
    point at known queries and documents."""
    if not root.is_dir():
        raise BeirFormatError(f"dataset.source {str(root)!r} is neither 'embedded' nor an existing folder")
    dataset = BeirDataset(root)
    doc_ids: set[str] = set()
    for doc in dataset.corpus():
        if doc.doc_id in doc_ids:
            raise BeirFormatError(f"{root}/corpus.jsonl: document id {doc.doc_id!r} appears twice")
        doc_ids.add(doc.doc_id)
    if not doc_ids:
        raise BeirFormatError(f"{root}/corpus.jsonl holds no documents")
    query_ids = set(dataset.queries())
    for split in splits:
        qrels = dataset.qrels(split)  # raises when the split is missing
        if not qrels:
            raise BeirFormatError(f"{root}: qrels/{split}.tsv holds no judgments")
        unknown_queries = sorted(set(qrels) - query_ids)
        if unknown_queries:
            raise BeirFormatError(f"{root}: qrels/{split}.tsv judges {len(unknown_queries)} queries missing from "
                                  f"queries.jsonl, e.g. {unknown_queries[:3]}")
        unknown_docs = sorted({d for docs in qrels.values() for d in docs} - doc_ids)
        if unknown_docs:
            # Some published BEIR sets judge documents their corpus lacks; they cost recall but break nothing.
            log.warning("%s: qrels/%s.tsv judges %d documents missing from the corpus, e.g. %s",
                        root, split, len(unknown_docs), unknown_docs[:3])
    return dataset


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = section("dataset", DatasetConfig)
    summary = build_dataset(config, int(load_params()["seed"]))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
