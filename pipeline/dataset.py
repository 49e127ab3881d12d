"""Stage `dataset`: the BEIR folder every later stage reads, at `data/dataset/`.

`source: embedded` generates the shop catalog (`clickloop.catalog`) from the top-level seed;
any other value is the path of a BEIR folder, which is validated and copied, so a broken
folder fails here and not three stages later. The folder may carry any judgments: none (a
production catalog whose only signal is its logs; `queries.jsonl` may then be absent too),
test only (most of BEIR), or train and test.

With test judgments only and simulation on, the simulator needs train queries of its own: a
seeded draw of `derived_train_share` of the judged test queries becomes the train split and
the rest stay the test split, so no query the simulator issues (or anything trains on) is
ever scored. The split is stated in `metrics/dataset.json`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clickloop.atomic import atomic_path, write_json
from clickloop.beir import BeirDataset, BeirFormatError, Document, Qrels, read_corpus, read_qrels, write_beir
from clickloop.catalog import CatalogConfig, generate_catalog
from clickloop.params import load_params, section
from clickloop.simulation import SimulatorConfig

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
    # With test judgments only and simulation on: the share of judged test queries (a seeded draw)
    # that becomes the train split the simulator issues; the rest stay held out as the test split.
    derived_train_share: float = 0.5
    metrics_file: str = "metrics/dataset.json"

    def __post_init__(self) -> None:
        if self.train_split == self.test_split:
            raise ValueError(f"dataset: train_split and test_split must differ, both are {self.train_split!r}")
        if not 0 < self.derived_train_share < 1:
            raise ValueError(f"dataset.derived_train_share must lie strictly between 0 and 1, "
                             f"got {self.derived_train_share}")


@dataclass(frozen=True)
class Source:
    """A validated BEIR source: documents, queries and the judgments of the configured splits it has."""

    corpus: Callable[[], Iterable[Document]]  # read afresh per call: a large corpus is never held whole
    queries: dict[str, str]
    qrels: dict[str, Qrels]


def build_dataset(config: DatasetConfig, seed: int, simulate: bool = False) -> dict[str, Any]:
    """Write the dataset folder atomically; return a summary (documents, queries, judgments per split,
    and how the train split came about). `simulate`: the simulator will issue the train queries, so a
    source with test judgments only gets a derived train split."""
    splits = (config.train_split, config.test_split)
    derived: dict[str, Any] | None = None
    if config.source == EMBEDDED:
        catalog = generate_catalog(config.catalog, seed, *splits)
        source = Source(lambda: catalog.documents, catalog.queries, catalog.qrels)
    else:
        source = read_source(Path(config.source), splits)
    qrels = dict(source.qrels)
    if simulate and not qrels:
        raise ValueError(
            f"dataset.source {config.source!r} has no judgments (qrels/{config.train_split}.tsv or "
            f"qrels/{config.test_split}.tsv), and the simulator draws its clicks from judged relevance: "
            "set simulate.enabled: false to learn from the logs in feedback_logs/ alone"
        )
    if simulate and config.train_split not in qrels:
        qrels[config.train_split], qrels[config.test_split] = derive_train_split(
            qrels[config.test_split], config.derived_train_share, seed, config.test_split
        )
        derived = {"from_split": config.test_split, "share": config.derived_train_share, "seed": seed,
                   "train_queries": len(qrels[config.train_split]),
                   "test_queries": len(qrels[config.test_split])}
        log.info("no %s judgments: %d of the %d judged %s queries (share %s, seed %d) become the train split "
                 "the simulator issues; the other %d stay held out for evaluation", config.train_split,
                 derived["train_queries"], derived["train_queries"] + derived["test_queries"], config.test_split,
                 config.derived_train_share, seed, derived["test_queries"])
    with atomic_path(config.out_dir) as staged:
        write_beir(staged, source.corpus(), source.queries, qrels)
        written = BeirDataset(staged)
        summary = {
            "source": config.source,
            "documents": sum(1 for _ in written.corpus()),
            "queries": len(written.queries()),
            "judged_queries": {s: len(written.qrels(s)) for s in splits if s in qrels},
            "judgments": {s: sum(len(d) for d in written.qrels(s).values()) for s in splits if s in qrels},
            # "source": the folder's own qrels; "derived": drawn from its test judgments (see derived_train);
            # "none": no train judgments, which only the simulator and `sparse.signal: judgments` need.
            "train_split": ("source" if config.train_split in source.qrels
                            else "derived" if derived else "none"),
            "derived_train": derived,
            "simulate": simulate,
        }
    return summary


def derive_train_split(judged: Qrels, share: float, seed: int, split: str = "test") -> tuple[Qrels, Qrels]:
    """(train, test): a seeded draw of round(share x n) judged queries (at least one, and one left) and the rest.

    The draw permutes the sorted query ids, so it depends on the seed and the judged ids only, not on
    the order of the qrels file."""
    ids = sorted(judged)
    if len(ids) < 2:
        raise BeirFormatError(f"qrels/{split}.tsv judges {len(ids)} query: a train split cannot be derived "
                              "with a test query left to evaluate")
    n_train = min(len(ids) - 1, max(1, round(share * len(ids))))
    order = np.random.default_rng(seed).permutation(len(ids))
    train_ids = {ids[i] for i in order[:n_train]}
    train = {qid: judged[qid] for qid in ids if qid in train_ids}
    test = {qid: judged[qid] for qid in ids if qid not in train_ids}
    return train, test


def read_source(root: Path, splits: tuple[str, ...]) -> Source:
    """The BEIR folder at `root`, checked: readable corpus with unique ids; qrels, for the splits that have
    them, that judge known queries. Without any qrels, `queries.jsonl` may be absent (the logs bring
    the queries)."""
    if not root.is_dir():
        raise BeirFormatError(f"dataset.source {str(root)!r} is neither 'embedded' nor an existing folder")
    if not (root / "corpus.jsonl").is_file():
        raise BeirFormatError(f"{root} is not a BEIR folder: corpus.jsonl is missing")
    present = [s for s in splits if (root / "qrels" / f"{s}.tsv").is_file()]
    others = sorted({p.stem for p in (root / "qrels").glob("*.tsv")} - set(splits))
    if others:
        log.info("%s: qrels of splits %s are not used (dataset.train_split/test_split are %s)", root, others,
                 list(splits))
    if (root / "queries.jsonl").is_file():
        queries = BeirDataset(root).queries()
    elif present:
        raise BeirFormatError(f"{root}: qrels/{present[0]}.tsv judges queries but queries.jsonl is missing")
    else:
        log.info("%s has no queries.jsonl and no judgments: the queries come from the logs", root)
        queries = {}
    doc_ids: set[str] = set()
    for doc in read_corpus(root / "corpus.jsonl"):
        if doc.doc_id in doc_ids:
            raise BeirFormatError(f"{root}/corpus.jsonl: document id {doc.doc_id!r} appears twice")
        doc_ids.add(doc.doc_id)
    if not doc_ids:
        raise BeirFormatError(f"{root}/corpus.jsonl holds no documents")
    qrels: dict[str, Qrels] = {}
    for split in present:
        split_qrels = read_qrels(root / "qrels" / f"{split}.tsv")
        if not split_qrels:
            raise BeirFormatError(f"{root}: qrels/{split}.tsv holds no judgments (remove the file if the split "
                                  "has none)")
        unknown_queries = sorted(set(split_qrels) - set(queries))
        if unknown_queries:
            raise BeirFormatError(f"{root}: qrels/{split}.tsv judges {len(unknown_queries)} queries missing from "
                                  f"queries.jsonl, e.g. {unknown_queries[:3]}")
        unknown_docs = sorted({d for docs in split_qrels.values() for d in docs} - doc_ids)
        if unknown_docs:
            # Some published BEIR sets judge documents their corpus lacks; they cost recall but break nothing.
            log.warning("%s: qrels/%s.tsv judges %d documents missing from the corpus, e.g. %s",
                        root, split, len(unknown_docs), unknown_docs[:3])
        qrels[split] = split_qrels
    if not present:
        log.info("%s has no judgments (qrels/%s.tsv): evaluation reports what the logs support", root,
                 "|".join(splits))
    return Source(lambda: read_corpus(root / "corpus.jsonl"), queries, qrels)


def simulation_enabled() -> bool:
    """params.yaml `simulate.enabled` (the dataset stage derives a train split only for the simulator)."""
    return section("simulate", SimulatorConfig).enabled


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = section("dataset", DatasetConfig)
    summary = build_dataset(config, int(load_params()["seed"]), simulate=simulation_enabled())
    write_json(config.metrics_file, summary)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
