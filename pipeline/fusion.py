"""Stage `fusion`: choose the `auto` settings of every pipeline of params `search.pipelines` for this
collection, on training queries no learned retriever trained on.

Reads the index root (after `sparse` and `dense_feedback`), the feedback stage's labels and the
trainers' params; writes
- `data/indices/pipelines.json`: per pipeline the settings asked for, the chosen spec, and every
  candidate's validation nDCG@10 with its standard error (indexing/pipeline_choice.py reads it:
  the Searcher runs the choice whenever params say `auto`);
- `metrics/fusion.json`: per pipeline the choice, its validation score, the best candidate's score and
  the number of held-out queries.

The held-out queries are exactly the validation split each trainer kept out (models.feedback_queries
split_queries over the same signal, teachers and seed, recomputed here), intersected over the sparse and
dense_feedback trainers: the retrievers never trained on them. Test judgments are never read. How the
candidates are scored and one chosen: models/fusion_selection.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clickloop.atomic import write_json
from clickloop.beir import BeirDataset, Document
from clickloop.params import load_params, section
from indexing.docstore import iter_unique_documents
from indexing.pipeline_choice import CHOICES_FILE, FORMAT, requested
from indexing.searcher import Searcher
from indexing.settings import PipelineSpec, SearchConfig
from models.feedback_queries import (
    CLICKS,
    LabelledQuery,
    searcher_teachers,
    signal_queries,
    split_queries,
    with_teachers,
)
from models.fusion_selection import SelectionConfig, report, select
from pipeline.dense_feedback import DenseFeedbackConfig
from pipeline.sparse import SparseConfig

log = logging.getLogger(__name__)


LABELS = ("clicks", "judgments")


@dataclass
class FusionConfig:
    """params.yaml section `fusion`."""

    # clicks: the trainers' signal (the feedback labels), what production has; judgments: the train split's
    # qrels of the same held-out queries, a lab reference that shows what the clicks' exposure bias costs.
    labels: str = "clicks"
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    index_root: str = "data/indices"
    out_file: str = f"data/indices/{CHOICES_FILE}"
    metrics_file: str = "metrics/fusion.json"

    def __post_init__(self) -> None:
        if self.labels not in LABELS:
            raise ValueError(f"labels must be one of {LABELS}, got {self.labels!r}")


def held_out(trainer: SparseConfig | DenseFeedbackConfig, docs: Sequence[Document],
             index_root: str) -> list[LabelledQuery]:
    """The labelled queries `trainer`'s validation split held out, recomputed as its stage did: the same
    signal, the same teachers' candidates (a query with fewer than two is dropped before the split), the
    same share and seed."""
    dataset = BeirDataset(Path(trainer.dataset_dir))
    signal, labelled = signal_queries(trainer.signal, trainer.labels_file, dataset, trainer.train_split, docs,
                                      trainer.pseudo_queries, trainer.training.seed)
    searcher = Searcher(index_root, modes=trainer.teachers)
    distill_from = [t for t in trainer.distill_from if t != CLICKS or signal == "clicks"]
    queries = with_teachers(labelled, {d.doc_id: row for row, d in enumerate(docs)},
                            searcher_teachers(searcher, trainer.teachers), trainer.teacher_depth, distill_from)
    _, validation = split_queries(queries, trainer.training.validation_share, trainer.training.seed)
    by_text: dict[str, LabelledQuery] = {}
    for query in labelled:
        by_text.setdefault(query.text, query)
    return [by_text[q.text] for q in validation]


def selection_queries(trainers: Sequence[SparseConfig | DenseFeedbackConfig],
                      index_root: str) -> dict[str, tuple[str, dict[str, float]]]:
    """Query id -> (text, labels) of the queries every trainer held out."""
    kept: dict[str, LabelledQuery] | None = None
    for trainer in trainers:
        dataset = BeirDataset(Path(trainer.dataset_dir))
        # Each trainer's own document list: cold-start pseudo-queries are drawn from it by row.
        docs = list(iter_unique_documents(dataset)) if isinstance(trainer, DenseFeedbackConfig) else list(
            dataset.corpus())
        queries = {q.text: q for q in held_out(trainer, docs, index_root)}
        kept = queries if kept is None else {text: q for text, q in kept.items() if text in queries}
    return {f"v{i}": (q.text, q.labels) for i, q in enumerate((kept or {}).values())}


def judged_labels(queries: Mapping[str, tuple[str, dict[str, float]]], trainer: SparseConfig | DenseFeedbackConfig
                  ) -> dict[str, tuple[str, dict[str, float]]]:
    """The same held-out queries labelled by the train split's judgments (a query without any left out)."""
    dataset = BeirDataset(Path(trainer.dataset_dir))
    qrels = dataset.qrels(trainer.train_split)
    by_text: dict[str, str] = {}
    for qid, text in dataset.queries(trainer.train_split).items():
        by_text.setdefault(text, qid)
    out = {}
    for key, (text, _) in queries.items():
        judged = qrels.get(by_text.get(text, ""), {})
        if any(grade > 0 for grade in judged.values()):
            out[key] = (text, {doc: float(grade) for doc, grade in judged.items()})
    return out


def choose(config: FusionConfig, settings: SearchConfig, queries: Mapping[str, tuple[str, dict[str, float]]]
           ) -> dict[str, Any]:
    """The choice for every pipeline with an `auto` field, as pipelines.json holds it."""
    auto = {name: spec for name, spec in settings.pipelines.items() if spec.auto_fields}
    choices: dict[str, Any] = {}
    if not auto:
        return choices
    # The retrievers alone: the pipelines are what this stage is choosing.
    searcher = Searcher(config.index_root, modes=sorted({m for s in auto.values() for m in s.modes}),
                        settings=replace(settings, pipelines={}))
    texts = {qid: text for qid, (text, _) in queries.items()}
    labels = {qid: query_labels for qid, (_, query_labels) in queries.items()}
    for name, spec in auto.items():
        def rank(candidate: PipelineSpec, spec: PipelineSpec = spec) -> dict[str, list[str]]:
            hits = searcher.batch_search(texts, k=spec.depth, mode=candidate)
            return {qid: [h.doc_id for h in ranked] for qid, ranked in hits.items()}

        selection = select(spec, rank, labels, searcher.has_prf, searcher.prf_reads_own_ranking_only,
                           config.selection)
        choices[name] = {"requested": requested(spec), **report(selection, spec)}
        log.info("fusion: %s -> %s (validation nDCG@10 %.4f ± %.4f; best %.4f)", name, choices[name]["chosen"],
                 selection.chosen.mean, selection.chosen.se, selection.best.mean)
    return choices


def run(config: FusionConfig, settings: SearchConfig, trainers: Sequence[SparseConfig | DenseFeedbackConfig]
        ) -> dict[str, Any]:
    """Choose, write pipelines.json and the metrics; returns the metrics."""
    auto = any(spec.auto_fields for spec in settings.pipelines.values())
    queries = selection_queries(trainers, config.index_root) if auto else {}
    if auto and config.labels == "judgments":
        queries = judged_labels(queries, trainers[0])
        # Judgments are complete enough that an unjudged document counts as not relevant (trec_eval's view).
        config = replace(config, selection=replace(config.selection, unlabelled="zero"))
    if auto and not queries:
        raise ValueError("the trainers held out no labelled query in common: nothing to choose the pipelines on")
    choices = choose(config, settings, queries)
    write_json(config.out_file, {
        "format": FORMAT,
        "selection": {"queries": len(queries), "labels": config.labels, "metric": "nDCG@10",
                      "unlabelled": config.selection.unlabelled,
                      "simpler_within_se": config.selection.simpler_within,
                      "held_out_by": [type(t).__name__ for t in trainers]},
        "pipelines": choices,
    })
    metrics = {
        name: {"chosen": choice["chosen"], "validation_ndcg@10": choice["validation"]["ndcg@10"],
               "validation_se": choice["validation"]["se"], "best_ndcg@10": choice["best"]["ndcg@10"],
               "queries": choice["validation"]["queries"]}
        for name, choice in choices.items()
    }
    write_json(config.metrics_file, metrics)
    return metrics


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    seed = int(load_params()["seed"])
    trainers: list[SparseConfig | DenseFeedbackConfig] = [section("sparse", SparseConfig),
                                                          section("dense_feedback", DenseFeedbackConfig)]
    for trainer in trainers:
        trainer.training.seed = seed  # as each trainer's stage sets it
    metrics = run(section("fusion", FusionConfig), section("search", SearchConfig), trainers)
    log.info("fusion: %s", metrics)


if __name__ == "__main__":
    main()
