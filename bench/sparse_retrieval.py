"""The inference-free sparse retriever on a BEIR collection (issue "Inference-free learned sparse
retriever"): three training signals, ablations, and efficiency against BM25 on the same engine.

For one collection (SciFact or Cranfield beside the repo), in one run:
- the index stage's BM25 and dense (all-MiniLM-L6-v2) retrievers, the references;
- (a) cold start: pseudo-queries drawn from the corpus, the BM25 + dense ensemble the only signal;
- (b) clicks: the train queries issued to a simulator over a BM25 logging ranker (default click
  model, `--sessions`), the logs through the real ingest, the propensity curve and the debiased
  labels of the feedback stage, then the stage's training on those labels;
- (c) judgments: the true train qrels, the upper reference;
Cranfield has test judgments only: its judged queries are split in two at random (seeded), one
half learns (clicks are simulated on it, its qrels are (c)'s), the other is the test set.
- `--ablations` on (b): plain FLOPS, no distillation, each teacher alone, no click labels.
Validation (early stopping, the checkpoint) is a split of the training queries; no test judgment
is read before the final evaluation. Every setting comes from params.yaml's `sparse` section.

(a), (b), (c) and plain FLOPS are evaluated through their Lucene impact index and the Searcher.
The other ablations change only the training target, so they are scored exactly on the test
queries' own tokens (a query's score needs no other document weight), with Lucene's integer
quantisation; the report checks that this scorer agrees with the index on (b).

Efficiency (`--efficiency`): mean terms per document and the FLOPS figure; query latency p50/p99
of `sparse` against `bm25` through one Searcher (same Lucene); documents encoded per second by the
saved `SparseEncoder` against the dense `SentenceTransformer`, same texts and length, on this machine.

Seeds: `--seeds` (13 14 15) for the `--spread-signals` (clicks), the first seed for the others;
every finished run is kept under reports/tmp/sparse_<dataset>/, so a rerun resumes.

Run: `nice -n 10 .venv/bin/python -m bench.sparse_retrieval --dataset scifact --ablations --efficiency`.
Writes reports/sparse_retrieval_<dataset>.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from bench.scifact_logs import REPO, ingest_logs
from bench.search_latency import latencies_ms, summary
from clickloop.atomic import write_json, write_text
from clickloop.beir import BeirDataset, write_beir
from clickloop.metrics import evaluate
from clickloop.params import section
from clickloop.process import in_fresh_process
from clickloop.simulation.config import SimulatorConfig
from clickloop.simulation.simulator import Simulator
from clickloop.simulation.ubi_logs import write_simulation
from indexing.bm25 import BM25BuildConfig
from indexing.dense import DenseBuildConfig, document_text, load_encoder
from indexing.searcher import Searcher
from indexing.settings import SearchConfig
from models.feedback_queries import (
    CLICKS,
    click_label_queries,
    judged_queries,
    pseudo_queries,
    searcher_teachers,
    with_teachers,
)
from models.propensity import PropensityConfig, estimate_propensities
from models.relevance_labels import LabelConfig, relevance_labels
from models.sparse.cache import load_states, save_states
from models.sparse.encoder import load_encoder as load_sparse_encoder
from models.sparse.exact import exact_search
from models.sparse.trainer import train_sparse_encoder
from pipeline.index import build_indices
from pipeline.sparse import Corpus, SparseConfig, fresh_encoder, read_corpus, train_and_index

DATASETS = REPO.parent / "shared" / "datasets"
METRICS = ["nDCG@10", "R@100"]
# (name, changes to the clicks run): what each ablation removes
ABLATIONS: dict[str, dict[str, Any]] = {
    "plain_flops": {"flops": "plain"},
    "no_distillation": {"distill_weight": 0.0},
    "bm25_teacher_only": {"distill_from": ["bm25"]},
    "dense_teacher_only": {"distill_from": ["dense"]},
    "clicks_teacher_only": {"distill_from": [CLICKS]},
    "teachers_only_no_click_labels": {"distill_from": ["bm25", "dense"], "ranking_weight": 0.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--signals", nargs="+", default=["cold_start", "clicks", "judgments"])
    parser.add_argument("--ablations", nargs="*", choices=list(ABLATIONS), default=None,
                        help="ablations of (b) to run: all when given no names")
    parser.add_argument("--efficiency", action="store_true")
    parser.add_argument("--seeds", nargs="+", type=int, default=[13, 14, 15])
    parser.add_argument("--spread-signals", nargs="+", default=["clicks"],
                        help="signals trained once per seed; the others with the first seed only")
    args = parser.parse_args()
    seeds = {s: args.seeds if s in args.spread_signals else args.seeds[:1] for s in args.signals}
    ablations = [] if args.ablations is None else args.ablations or list(ABLATIONS)
    report = run(args.dataset, args.sessions, args.signals, ablations, args.efficiency, seeds)
    out = REPO / "reports" / f"sparse_retrieval_{args.dataset}.json"
    write_json(out, report)
    write_text(out.with_suffix(".md"), markdown(report))
    print(markdown(report))


def run(name: str, sessions: int, signals: list[str], ablations: list[str], efficiency: bool,
        seeds: dict[str, list[int]]) -> dict[str, Any]:
    started = time.monotonic()
    work = REPO / "reports" / "tmp" / f"sparse_{name}"
    dataset = with_train_split(BeirDataset(DATASETS / name), work / "dataset")
    config = section("sparse", SparseConfig, REPO / "params.yaml")
    config.training.progress = False
    index_root = work / "indices"
    if not (index_root / "dense").is_dir():
        build_indices(dataset, index_root, BM25BuildConfig(), DenseBuildConfig())
    searcher = Searcher(index_root, modes=("bm25", "dense"))
    test_queries, test_qrels = dataset.queries("test"), dataset.qrels("test")
    test_queries = {q: t for q, t in test_queries.items() if q in test_qrels}
    report: dict[str, Any] = {"dataset": name, "sparse_params": dataclasses.asdict(config), "retrievers": {}}
    for mode in ("bm25", "dense"):
        report["retrievers"][mode] = _judged(searcher, mode, test_queries, test_qrels)
    corpus = _corpus(dataset, config, work)
    # Every teacher search comes before any training (see clickloop.process: Lucene after torch).
    teachers = searcher_teachers(searcher, config.teachers)
    training_sets: dict[str, list] = {}
    for signal in signals:
        labelled = _labelled(signal, dataset, corpus, config, work, searcher, sessions)
        sources = [t for t in config.distill_from if t != CLICKS or signal == "clicks"]
        training_sets[signal] = with_teachers(labelled, corpus.rows, teachers, config.teacher_depth, sources)
        if signal == "clicks" and ablations:
            for ablation in ablations:
                training_sets[ablation] = with_teachers(labelled, corpus.rows, teachers, config.teacher_depth,
                                                        ABLATIONS[ablation].get("distill_from", sources))
    for signal in signals:
        queries = training_sets[signal]
        row = _signal(signal, config, corpus, queries, work, index_root, test_queries, test_qrels, seeds[signal])
        report["retrievers"][f"sparse_{signal}"] = {**row, "queries": len(queries)}
        print(signal, row, flush=True)
        if signal == "clicks" and ablations:
            report["ablations"] = _ablations(config, corpus, training_sets, ablations, test_queries, test_qrels,
                                             work, row)
        if signal == "clicks" and efficiency:
            report["efficiency"] = _efficiency(index_root, work / signal / "sparse", work / signal / "model", corpus,
                                               test_queries)
    report["wall_seconds"] = round(time.monotonic() - started)
    return report


def _signal(signal: str, config: SparseConfig, corpus: Corpus, queries: list, work: Path, index_root: Path,
            test_queries: dict, test_qrels: dict, seeds: list[int]) -> dict[str, Any]:
    """One signal trained once per seed (each seed's row kept in the work folder, so a rerun resumes).
    The first seed of (b), the deployed signal, is encoded in full and served from its impact index
    through the Searcher; every other run is scored exactly."""
    per_seed: dict[str, Any] = {}
    for seed in seeds:
        saved = work / signal / f"seed_{seed}.json"
        if saved.is_file():  # a finished run of the same settings (delete the folder to retrain)
            per_seed[str(seed)] = json.loads(saved.read_text())
            continue
        variant = dataclasses.replace(config, training=dataclasses.replace(config.training, seed=seed))
        model = fresh_encoder(corpus, variant)
        if signal == "clicks" and seed == seeds[0]:
            out_dir = work / signal / "sparse"
            figures = train_and_index(model, corpus, queries, variant, out_dir, work / signal / "model")
            row = {**_judged_sparse(index_root, out_dir, test_queries, test_qrels),
                   **_summary(figures), "scored_by": "impact index"}
        else:
            result = train_sparse_encoder(model, corpus.states, corpus.idf, queries, variant.training)
            row = {**_exact_scores(model, corpus, config, test_queries, test_qrels),
                   **_summary({"training": dataclasses.asdict(result)}), "scored_by": "exact"}
        write_json(saved, row)
        per_seed[str(seed)] = row
        print(signal, seed, row, flush=True)
    first = per_seed[str(seeds[0])]
    spread = {f"{m}_{stat}": round(float(f(rows)), 4) for m in METRICS
              for stat, f in (("mean", np.mean), ("sd", np.std))
              for rows in [[r[m] for r in per_seed.values()]]}
    return {**first, **spread, "seeds": per_seed}


def with_train_split(dataset: BeirDataset, out_dir: Path, seed: int = 13) -> BeirDataset:
    """`dataset` itself when it has train judgments; else (Cranfield) a copy whose judged test queries
    are split in two at random (seeded): half to learn from, half to test on."""
    if "train" in dataset.splits():
        return dataset
    if not (out_dir / "qrels" / "train.tsv").is_file():
        judged = dataset.qrels("test")
        order = np.random.default_rng(seed).permutation(sorted(judged))
        half = len(order) // 2
        qrels = {"train": {q: judged[q] for q in order[:half]}, "test": {q: judged[q] for q in order[half:]}}
        write_beir(out_dir, list(dataset.corpus()), dataset.queries(), qrels)
    return BeirDataset(out_dir)


def _corpus(dataset: BeirDataset, config: SparseConfig, work: Path) -> Corpus:
    """The corpus with its backbone states, computed once per collection and kept in the work folder."""
    states_file = work / "states.pt"
    if states_file.is_file():
        return read_corpus(dataset, config, states=load_states(states_file))
    corpus = read_corpus(dataset, config)
    save_states(corpus.states, states_file)
    return corpus


def _labelled(signal: str, dataset: BeirDataset, corpus: Corpus, config: SparseConfig, work: Path,
              searcher: Searcher, sessions: int) -> list:
    if signal == "cold_start":
        return pseudo_queries(corpus.docs, config.pseudo_queries, config.training.seed)
    if signal == "judgments":
        return judged_queries(dataset.queries("train"), dataset.qrels("train"))
    return click_label_queries(_click_labels(dataset, searcher, work / f"logs_{sessions}", sessions, config))


def _click_labels(dataset: BeirDataset, searcher: Searcher, work: Path, sessions: int,
                  config: SparseConfig) -> pl.DataFrame:
    """Simulated logs of the train queries over BM25, through ingest and the feedback stage's labels."""
    labels_file = work / "labels.parquet"
    if not labels_file.is_file():
        qrels = dataset.qrels("train")
        queries = {q: t for q, t in dataset.queries("train").items() if q in qrels}
        simulator_config = SimulatorConfig(days=7, sessions_per_day=-(-sessions // 7))
        rankings = {qid: [h.doc_id for h in hits] for qid, hits in
                    searcher.batch_search(queries, k=simulator_config.top_k, mode="bm25").items()}
        simulator = Simulator(simulator_config, queries, rankings, qrels, config.training.seed)
        write_simulation(simulator, work / "logs", work / "truth")
        ingest_logs(work / "logs", work)
        results = pl.read_parquet(work / "ingested" / "results.parquet")
        curve = estimate_propensities(results, PropensityConfig())
        relevance_labels(results, curve, LabelConfig()).write_parquet(labels_file)
    return pl.read_parquet(labels_file)


def _ablations(config: SparseConfig, corpus: Corpus, training_sets: dict[str, list], names: list[str],
               test_queries: dict, test_qrels: dict, work: Path, clicks_row: dict) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name in names:
        change = ABLATIONS[name]
        saved = work / f"ablation_{name}" / "row.json"
        if saved.is_file():  # finished in an earlier run of the same settings
            rows[name] = json.loads(saved.read_text())
            continue
        training = dataclasses.replace(config.training, **{k: v for k, v in change.items() if k != "distill_from"})
        variant = dataclasses.replace(config, training=training)
        model = fresh_encoder(corpus, variant)
        if name == "plain_flops":  # sparsity is what it changes: the full index, as the main runs
            out_dir = work / f"ablation_{name}" / "sparse"
            figures = train_and_index(model, corpus, training_sets[name], variant, out_dir)
            rows[name] = {**_judged_sparse(work / "indices", out_dir, test_queries, test_qrels), **_summary(figures)}
        else:
            result = train_sparse_encoder(model, corpus.states, corpus.idf, training_sets[name], training)
            rows[name] = {**_exact_scores(model, corpus, config, test_queries, test_qrels),
                          **_summary({"training": dataclasses.asdict(result)})}
        write_json(saved, rows[name])
        print(name, rows[name], flush=True)
    # The exact scorer against the index, on the (b) model the index was built from.
    model = load_sparse_encoder(work / "clicks" / "model", device="cpu")
    rows["check_exact_scorer_on_clicks"] = {
        "exact": _exact_scores(model, corpus, config, test_queries, test_qrels)["nDCG@10"],
        "index": clicks_row["nDCG@10"],
    }
    return rows


def _exact_scores(model: Any, corpus: Corpus, config: SparseConfig, queries: dict, qrels: dict) -> dict[str, float]:
    """Test nDCG@10 / R@100 of `model` by exact search with the index's quantisation (no index built)."""
    scale = section("search", SearchConfig, REPO / "params.yaml").sparse.query_scale
    run_ = exact_search(model, corpus.states, corpus.doc_ids, queries, 100, config.impact_scale, scale)
    return evaluate(qrels, run_, METRICS)


def _efficiency(index_root: Path, sparse_dir: Path, model_dir: Path, corpus: Corpus, queries: dict) -> dict:
    latency = in_fresh_process(_latencies, index_root, sparse_dir, list(queries.values()))
    docs = [document_text(d) for d in corpus.docs[:256]]
    sparse_encoder = load_sparse_encoder(model_dir)
    dense_encoder = load_encoder("all-MiniLM-L6-v2", sparse_encoder[0].sub_modules["document"][0].max_seq_length)
    rates = {}
    for name, encode in (("dense", lambda: dense_encoder.encode(docs, batch_size=32)),
                         ("sparse", lambda: sparse_encoder.encode_document(docs, batch_size=32))):
        encode()  # warm-up
        start = time.perf_counter()
        encode()
        rates[name] = round(len(docs) / (time.perf_counter() - start), 1)
    return {
        "latency_ms": latency,
        "p50_ratio_sparse_to_bm25": round(latency["sparse"]["p50_ms"] / latency["bm25"]["p50_ms"], 2),
        "p99_ratio_sparse_to_bm25": round(latency["sparse"]["p99_ms"] / latency["bm25"]["p99_ms"], 2),
        "docs_per_second": rates,
        "encode_ratio_sparse_to_dense": round(rates["sparse"] / rates["dense"], 2),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _latencies(index_root: Path, sparse_dir: Path, texts: list[str]) -> dict[str, dict[str, float]]:
    """Query latency of `bm25` and `sparse` through one Searcher (one Lucene), interleaved rounds."""
    searcher = _sparse_searcher(index_root, sparse_dir, ("bm25", "sparse"))
    samples: dict[str, list[float]] = {"bm25": [], "sparse": []}
    for round_ in range(4):
        for mode in samples:
            times = latencies_ms(lambda q, m=mode: searcher.search(q, k=10, mode=m), texts)
            if round_:  # the first round warms up
                samples[mode] += times
    return {mode: summary(times) for mode, times in samples.items()}


def _judged_sparse(index_root: Path, sparse_dir: Path, queries: dict, qrels: dict) -> dict[str, float]:
    """Test metrics of a sparse index through the Searcher, in a fresh process (Lucene after torch)."""
    return in_fresh_process(_judged_sparse_here, index_root, sparse_dir, queries, qrels)


def _judged_sparse_here(index_root: Path, sparse_dir: Path, queries: dict, qrels: dict) -> dict[str, float]:
    return _judged(_sparse_searcher(index_root, sparse_dir), "sparse", queries, qrels)


def _sparse_searcher(index_root: Path, sparse_dir: Path, modes: tuple[str, ...] = ("sparse",)) -> Searcher:
    """A Searcher over the collection's index root with this run's sparse folder in it."""
    root = sparse_dir.parent / "root"
    root.mkdir(exist_ok=True)
    for name in ("docs.parquet", "bm25"):
        link = root / name
        if not link.exists():
            link.symlink_to(index_root / name)
    sparse_link = root / "sparse"
    if not sparse_link.exists():
        sparse_link.symlink_to(sparse_dir)
    return Searcher(root, modes=modes)


def _judged(searcher: Searcher, mode: str, queries: dict, qrels: dict) -> dict[str, float]:
    hits = searcher.batch_search(queries, k=100, mode=mode)
    return evaluate(qrels, {q: {h.doc_id: h.score for h in ranked} for q, ranked in hits.items()}, METRICS)


def _summary(figures: dict) -> dict[str, Any]:
    """Training figures, and sparsity and timings where the run built an index."""
    training = figures["training"]
    row: dict[str, Any] = {
        "untrained_val_ndcg": round(training["untrained_val_ndcg"], 4),
        "best_val_ndcg": round(training["best_val_ndcg"], 4), "epochs": training["epochs"],
        "kept_untrained": training["kept_untrained"],
    }
    if "flops" in figures:
        row.update(mean_terms_per_doc=round(figures["mean_terms_per_doc"], 1), flops=round(figures["flops"], 3),
                   seconds=figures["seconds"])
    return row


def markdown(report: dict) -> str:
    lines = [f"# Inference-free sparse retriever on {report['dataset']} (test split)", "",
             "| retriever | nDCG@10 | R@100 | nDCG@10 over seeds | R@100 over seeds | terms/doc | FLOPS "
             "| val nDCG@10 untrained -> best | epochs | scored by |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in report["retrievers"].items():
        val = f"{row['untrained_val_ndcg']} -> {row['best_val_ndcg']}" if "best_val_ndcg" in row else ""
        spread = [f"{row[m + '_mean']:.4f} ± {row[m + '_sd']:.4f} ({len(row['seeds'])})" if "seeds" in row else ""
                  for m in METRICS]
        lines.append(f"| {name} | {row['nDCG@10']:.4f} | {row['R@100']:.4f} | {spread[0]} | {spread[1]} "
                     f"| {row.get('mean_terms_per_doc', '')} | {row.get('flops', '')} | {val} "
                     f"| {row.get('epochs', '')} | {row.get('scored_by', 'its Searcher mode')} |")
    if "ablations" in report:
        lines += ["", "## Ablations on (b), clicks (first seed)", "",
                  "| variant | nDCG@10 | R@100 | terms/doc | val nDCG@10 untrained -> best |", "|---|---|---|---|---|"]
        for name, row in report["ablations"].items():
            if "nDCG@10" in row:
                lines.append(f"| {name} | {row['nDCG@10']:.4f} | {row['R@100']:.4f} "
                             f"| {row.get('mean_terms_per_doc', '')} "
                             f"| {row['untrained_val_ndcg']} -> {row['best_val_ndcg']} |")
        check = report["ablations"]["check_exact_scorer_on_clicks"]
        lines.append(f"\nExact scorer vs the index on (b): {check['exact']:.4f} vs {check['index']:.4f}.")
    if "efficiency" in report:
        eff = report["efficiency"]
        lines += ["", "## Efficiency", "", "```", json.dumps(eff, indent=2), "```"]
    lines.append(f"\nWall time {report['wall_seconds']} s.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
