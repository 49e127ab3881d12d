"""Stage `evaluate`: judged metrics per retriever where judgments exist, counterfactual click
metrics from the logs, as DVC metrics (one entry per retriever) and a DVC plot table. The
retrievers search with the query-time settings of params.yaml `search`.

The counterfactual clicks@k are estimated three ways, each with its standard error and coverage:
IPS (`ips_`), the direct model alone (`dm_`: the feedback stage's debiased labels, its reward
model's click level where a pair was never shown) and doubly robust (`dr_`: the direct model
corrected by IPS where the logs showed the target's documents; `clickloop.off_policy`)."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from clickloop.atomic import atomic_path, write_json
from clickloop.beir import BeirDataset, Run, write_trec_run
from clickloop.metrics import (
    DEFAULT_METRICS,
    CounterfactualEstimate,
    evaluate,
    ips_clicks_at_k,
    observed_clicks_at_k,
)
from clickloop.off_policy import direct_and_doubly_robust
from clickloop.params import section
from indexing import SearchConfig, Searcher
from models.click_direct_model import click_relevance

log = logging.getLogger(__name__)


@dataclass
class EvaluateConfig:
    dataset_dir: str = "data/dataset"
    index_root: str = "data/indices"
    results_file: str = "data/ingested/results.parquet"
    propensities_file: str = "data/feedback/propensities.json"
    feedback_dir: str = "data/feedback"  # labels.parquet and reward/: the direct model of the DM and DR estimates
    doubly_robust: bool = True  # also the DM and DR estimates of clicks@k (needs the feedback stage's models)
    retrievers: list[str] = field(default_factory=lambda: ["bm25", "bm25_rm3", "dense", "sparse"])
    split: str = "test"
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    depth: int = 100
    counterfactual_k: int = 10
    ips_clip: float = 0.01
    # Distinct logged queries re-ranked for the counterfactual estimate (most frequent first).
    counterfactual_max_queries: int = 5000
    runs_dir: str = "data/runs"
    metrics_file: str = "metrics/evaluate.json"
    plots_file: str = "plots/evaluate.csv"


def judged_report(config: EvaluateConfig, searcher: Searcher) -> dict[str, dict[str, float]]:
    """nDCG@10 / R@100 / MRR@10 (by default) on the judged split, one entry per retriever; none (and an
    empty runs folder, a DVC output all the same) when the dataset has no judgments for the split."""
    dataset = BeirDataset(Path(config.dataset_dir))
    report: dict[str, dict[str, float]] = {}
    with atomic_path(config.runs_dir) as runs_dir:
        runs_dir.mkdir()
        if config.split not in dataset.splits():
            log.info("no judgments for split %r: no judged metrics, only what the logs support", config.split)
            return report
        qrels = dataset.qrels(config.split)
        queries = dataset.queries(config.split)
        for mode in config.retrievers:
            hits = searcher.batch_search(queries, k=config.depth, mode=mode)
            run: Run = {qid: {h.doc_id: h.score for h in ranked} for qid, ranked in hits.items()}
            write_trec_run(runs_dir / f"{mode}.trec", run, tag=mode)
            report[mode] = evaluate(qrels, run, config.metrics)
    return report


def counterfactual_report(
    config: EvaluateConfig, searcher: Searcher, doubly_robust: bool = False
) -> dict[str, dict[str, float]]:
    """Clicks@k each retriever would get on the logged traffic (IPS; with `doubly_robust`, DM and DR
    too), beside the logging ranker's."""
    results_file, propensities_file = Path(config.results_file), Path(config.propensities_file)
    if not results_file.is_file() or not propensities_file.is_file():
        log.info("no logs with an examination curve (%s): no off-policy estimates", propensities_file)
        return {}
    logged = pl.read_parquet(results_file, columns=["query_id", "user_query", "doc_id", "position", "clicked"])
    if logged.is_empty():
        log.info("no logged results: no off-policy estimates")
        return {}
    propensities = json.loads(propensities_file.read_text())["propensities"]
    frequent = (
        logged.group_by("user_query").agg(pl.col("query_id").n_unique().alias("n"))
        .sort(["n", "user_query"], descending=[True, False])
        .head(config.counterfactual_max_queries)["user_query"]
    )
    logged = logged.filter(pl.col("user_query").is_in(frequent.implode()))
    k = config.counterfactual_k
    key = f"clicks@{k}"
    report = {"logging": _estimate_row(key, observed_clicks_at_k(logged, k))}
    queries = {text: text for text in frequent.to_list()}
    targets = {}
    for mode in config.retrievers:
        hits = searcher.batch_search(queries, k=k, mode=mode)
        targets[mode] = {text: [h.doc_id for h in ranked] for text, ranked in hits.items()}
        estimate = ips_clicks_at_k(logged, targets[mode], propensities, k=k, clip=config.ips_clip)
        report[mode] = _estimate_row(f"ips_{key}", estimate)
    if doubly_robust:
        pairs = {(query, doc_id) for target in targets.values() for query, docs in target.items() for doc_id in docs}
        relevance = click_relevance(sorted(pairs), Path(config.feedback_dir), Path(config.dataset_dir))
        if relevance is None:
            log.info("no feedback labels or reward model in %s: IPS estimates only", config.feedback_dir)
            return report
        for mode, target in targets.items():
            for name, estimate in direct_and_doubly_robust(
                logged, target, propensities, relevance, k=k, clip=config.ips_clip
            ).items():
                report[mode] |= _estimate_row(f"{name}_{key}", estimate)
    return report


def _estimate_row(key: str, estimate: CounterfactualEstimate) -> dict[str, float]:
    return {key: estimate.value, f"{key}_stderr": estimate.stderr, f"{key}_coverage": estimate.coverage}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = section("evaluate", EvaluateConfig)
    settings = section("search", SearchConfig)
    # Every configured pipeline is scored beside the listed retrievers.
    config.retrievers = list(dict.fromkeys([*config.retrievers, *settings.pipelines]))
    searcher = Searcher(config.index_root, modes=config.retrievers, settings=settings)
    judged = judged_report(config, searcher)
    counterfactual = counterfactual_report(config, searcher, config.doubly_robust)
    rows: dict[str, dict[str, float]] = {}
    for name in [*judged, *counterfactual]:
        rows[name] = {**judged.get(name, {}), **counterfactual.get(name, {})}
    write_json(config.metrics_file, rows)
    _write_plot_table(config.plots_file, rows)
    for name, values in rows.items():
        print(f"{name:>10} " + "  ".join(f"{m}={v:.4f}" for m, v in values.items()))
    if not rows:
        print(f"nothing to evaluate: no judgments for split {config.split!r} and no logs")


def _write_plot_table(path: str, rows: dict[str, dict[str, float]]) -> None:
    columns = sorted({m for values in rows.values() for m in values})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["retriever", *columns])
        for name, values in rows.items():
            writer.writerow([name, *(values.get(c, "") for c in columns)])


if __name__ == "__main__":
    main()
