"""Search latency and retrieval quality of the Searcher on BEIR SciFact, per mode.

For bm25, bm25_rm3 and dense: per-query latency of single-query `Searcher.search` (k=10,
after a warm-up, several passes over the test queries), and nDCG@10 / R@100 on the test
split from `Searcher.batch_search` (k=100). The baseline, measured in the same run on the
same queries, is the bare engine call the Searcher wraps (pyserini's LuceneSearcher.search,
or MiniLM encode + FAISS search), so the difference is the API's own cost (validation,
locks, doc store). Quality is compared with the pyserini references for SciFact.
Writes reports/search_latency.{json,md}.

    nice -n 10 python -m bench.search_latency [--index-root data/indices] [--passes 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.scifact_logs import portable
from clickloop.atomic import write_json, write_text
from clickloop.beir import BeirDataset, Run
from clickloop.env import prepare_pyserini
from clickloop.metrics import evaluate
from indexing import bm25, dense
from indexing.bm25 import BM25BuildConfig
from indexing.dense import INDEX_FILE, DenseBuildConfig, encode, load_encoder
from indexing.retriever import read_manifest
from indexing.searcher import Searcher
from indexing.settings import SearchConfig
from pipeline.index import build_indices

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = REPO.parent / "shared" / "datasets" / "scifact"
DEFAULT_BUILD_ROOT = REPO / "reports" / "tmp" / "search_latency" / "indices"
METRICS = ("nDCG@10", "R@100")
# pyserini's BEIR SciFact figures as measured on this machine (docs: DESIGN.md).
REFERENCE = {"bm25": {"nDCG@10": 0.679, "R@100": 0.925}, "bm25_rm3": {"nDCG@10": 0.646},
             "dense": {"nDCG@10": 0.645, "R@100": 0.925}}
LATENCY_K = 10
QUALITY_K = 100

SearchFn = Callable[[str], Any]


def bare_engines(index_root: Path, settings: SearchConfig) -> dict[str, SearchFn]:
    """Per mode, the engine call the Searcher wraps, with the same settings and no API around it."""
    prepare_pyserini()
    from pyserini.search.lucene import LuceneSearcher

    plain = LuceneSearcher(str(index_root / bm25.KIND))
    plain.set_bm25(settings.bm25.k1, settings.bm25.b)
    rm3 = LuceneSearcher(str(index_root / bm25.KIND))
    rm3.set_bm25(settings.bm25.k1, settings.bm25.b)
    rm3.set_rm3(settings.rm3.fb_terms, settings.rm3.fb_docs, settings.rm3.original_query_weight)
    facts = read_manifest(index_root / dense.KIND)
    encoder = load_encoder(facts["model"], facts["max_seq_length"])
    index = faiss.read_index(str(index_root / dense.KIND / INDEX_FILE))
    if settings.dense.search_params:
        faiss.ParameterSpace().set_index_parameters(index, settings.dense.search_params)

    def dense_search(query: str) -> Any:
        return index.search(
            encode(encoder, [query], settings.dense.batch_size, facts["normalize"], False), LATENCY_K
        )

    return {
        "bm25": lambda q: plain.search(q, LATENCY_K),
        "bm25_rm3": lambda q: rm3.search(q, LATENCY_K),
        "dense": dense_search,
    }


def latencies_ms(search: SearchFn, queries: Sequence[str]) -> list[float]:
    times = []
    for query in queries:
        start = time.perf_counter()
        search(query)
        times.append((time.perf_counter() - start) * 1000)
    return times


def summary(times: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
        "mean_ms": round(statistics.fmean(times), 3),
        "n": len(times),
    }


def measure_mode(
    searcher: Searcher, bare: SearchFn, mode: str, queries: Mapping[str, str], qrels: dict, passes: int, warmup: int
) -> dict[str, Any]:
    texts = list(queries.values())

    def api(query: str) -> Any:
        return searcher.search(query, k=LATENCY_K, mode=mode)

    for query in texts[:warmup]:
        api(query)
        bare(query)
    api_times: list[float] = []
    bare_times: list[float] = []
    # Alternate API and baseline pass by pass so load from other users of the machine hits both alike.
    for _ in range(passes):
        api_times += latencies_ms(api, texts)
        bare_times += latencies_ms(bare, texts)
    start = time.perf_counter()
    hits = searcher.batch_search(queries, k=QUALITY_K, mode=mode)
    batch_seconds = time.perf_counter() - start
    run: Run = {qid: {h.doc_id: h.score for h in ranked} for qid, ranked in hits.items()}
    quality = {name: round(value, 4) for name, value in evaluate(qrels, run, METRICS).items()}
    api_summary, bare_summary = summary(api_times), summary(bare_times)
    return {
        "searcher": api_summary,
        "baseline_bare_engine": bare_summary,
        "api_overhead_p50_ms": round(api_summary["p50_ms"] - bare_summary["p50_ms"], 3),
        "batch_search_ms_per_query": round(batch_seconds * 1000 / len(queries), 3),
        "quality": quality,
        "reference": REFERENCE[mode],
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Search latency on {report['dataset']} ({report['n_queries']} {report['split']} queries,"
        f" {report['passes']} passes, k={LATENCY_K})",
        "",
        "| mode | p50 ms | p99 ms | bare p50 ms | bare p99 ms | batch ms/q | nDCG@10 (ref) | R@100 (ref) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, row in report["modes"].items():
        api, bare, quality, ref = row["searcher"], row["baseline_bare_engine"], row["quality"], row["reference"]
        lines.append(
            f"| {mode} | {api['p50_ms']} | {api['p99_ms']} | {bare['p50_ms']} | {bare['p99_ms']}"
            f" | {row['batch_search_ms_per_query']} | {quality['nDCG@10']} ({ref.get('nDCG@10', '-')})"
            f" | {quality['R@100']} ({ref.get('R@100', '-')}) |"
        )
    if report.get("build"):
        lines += ["", f"Build: {report['build']}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--index-root", type=Path, help="reuse this index root (default: build one under reports/tmp)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=30, help="queries searched per mode before timing")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "search_latency.json")
    args = parser.parse_args(argv)
    if not args.dataset.is_dir():
        print(f"dataset not found: {args.dataset}", file=sys.stderr)
        return 2
    dataset = BeirDataset(args.dataset)
    settings = SearchConfig()
    build_report = None
    index_root = args.index_root
    if index_root is None:
        index_root = DEFAULT_BUILD_ROOT
        build_report = build_indices(dataset, index_root, BM25BuildConfig(), DenseBuildConfig())
    queries, qrels = dataset.queries(args.split), dataset.qrels(args.split)
    searcher = Searcher(index_root, modes=tuple(REFERENCE), settings=settings)
    engines = bare_engines(index_root, settings)
    modes = {
        mode: measure_mode(searcher, engines[mode], mode, queries, qrels, args.passes, args.warmup)
        for mode in searcher.modes
    }
    report = {
        "dataset": portable(args.dataset),
        "split": args.split,
        "n_queries": len(queries),
        "passes": args.passes,
        "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
        "build": build_report,
        "modes": modes,
    }
    write_json(args.out, report)
    table = markdown(report)
    write_text(args.out.with_suffix(".md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
