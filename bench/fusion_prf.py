"""Dense from feedback, PRF for every first stage, and sparse-dense fusion before and after PRF
(issue "Dense retriever trained from the feedback labels, PRF for every retriever, fusion").

For one collection (SciFact or Cranfield beside the repo), in one run:
- the train queries are split (seeded) into a learning part and a selection part (`--selection-share`);
  the retrievers learn from the simulated clicks of the learning part only (the logs, ingest and
  labels of bench/sparse_retrieval.py, filtered by query), so that the selection part, scored with the
  train judgments, can choose every PRF and fusion setting without favouring the retrievers that
  learned from it. No test judgment is read before the final table.
- retrievers: BM25 and RM3, dense all-MiniLM-L6-v2 (base), dense fine-tuned from the clicks
  (`dense_feedback`), the learned sparse retriever trained from the clicks (`sparse`);
- PRF grids per retriever and fusion grids (pairs, weights, method, before/after/both) are scored on
  the selection queries; the chosen setting of each row is then scored once on the test queries.
- `--settings FILE` skips the selection and applies the settings another run chose (Cranfield takes
  SciFact's), so a second collection is scored with every setting fixed.

Run: `nice -n 10 .venv/bin/python -m bench.fusion_prf --dataset scifact` (after bench.sparse_retrieval
has built reports/tmp/sparse_<dataset>/: indices, document states, click labels).
Writes reports/fusion_prf_<dataset>.json and .md; work files under reports/tmp/fusion_<dataset>/.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.scifact_logs import REPO
from bench.search_latency import latencies_ms, summary
from clickloop.atomic import write_json, write_text
from clickloop.beir import BeirDataset
from clickloop.metrics import evaluate
from clickloop.params import from_dict, section
from clickloop.process import in_fresh_process
from indexing.retriever import FeedbackRetriever
from indexing.search_pipeline import SearchPipeline
from indexing.searcher import Searcher
from indexing.settings import (
    PipelineSpec,
    RM3Settings,
    RocchioSettings,
    SearchConfig,
    SparseRocchioSettings,
)
from models.propensity import normalized_query

DATASETS = REPO.parent / "shared" / "datasets"
METRICS = ["nDCG@10", "R@100"]
SPARSE_TEACHERS = ("bm25", "dense")


def split_train_queries(dataset: BeirDataset, share: float, seed: int) -> tuple[dict[str, str], dict[str, str]]:
    """(learning, selection): the judged train queries (id -> text) split at random, seeded."""
    qrels = dataset.qrels("train")
    queries = {q: t for q, t in dataset.queries("train").items() if q in qrels}
    order = [str(q) for q in np.random.default_rng(seed).permutation(sorted(queries))]
    cut = round(len(order) * share)
    selection = {q: queries[q] for q in order[:cut]}
    return {q: queries[q] for q in order[cut:]}, selection


def learning_labels(labels: pl.DataFrame, selection: dict[str, str]) -> pl.DataFrame:
    """The click labels without any pair of a selection query (labels are keyed by the normalised text)."""
    keys = pl.DataFrame({"user_query": list(selection.values())}).select(normalized_query())["user_query"]
    kept = labels.filter(~pl.col("query").is_in(keys.implode()))
    if kept["query"].n_unique() > labels["query"].n_unique() - len(selection):
        raise ValueError("the selection queries' labels were not all left out")
    return kept


def train_sparse(dataset_root: str, sparse_work: str, labels_file: str, out_dir: str) -> dict[str, Any]:
    """The sparse stage's training on the learning part's click labels, then its index; run in a fresh
    process (torch, then Lucene). A model already trained and saved by an interrupted run is indexed."""
    from bench.sparse_retrieval import _corpus
    from models.feedback_queries import click_label_queries, with_teachers
    from models.sparse.encoder import load_encoder as load_sparse_encoder
    from pipeline.sparse import SparseConfig, fresh_encoder, index_encoder, searcher_teachers, train_and_index

    dataset, work = BeirDataset(Path(dataset_root)), Path(sparse_work)
    config = section("sparse", SparseConfig, REPO / "params.yaml")
    config.training.progress = False
    corpus = _corpus(dataset, config, work)
    model_dir = Path(out_dir).parent.parent / "sparse_model"
    if (model_dir / "modules.json").is_file():
        return {"resumed_from_saved_model": True,
                **index_encoder(load_sparse_encoder(model_dir), corpus, config, Path(out_dir))}
    teachers = searcher_teachers(Searcher(work / "indices", modes=SPARSE_TEACHERS), config.teachers)
    labelled = click_label_queries(pl.read_parquet(labels_file))
    queries = with_teachers(labelled, corpus.rows, teachers, config.teacher_depth, config.distill_from)
    del teachers  # every Lucene search comes before torch trains (clickloop.process)
    return {"queries": len(queries),
            **train_and_index(fresh_encoder(corpus, config), corpus, queries, config, Path(out_dir), model_dir)}


def train_dense_feedback(dataset_root: str, index_root: str, labels_file: str, work: str) -> dict[str, Any]:
    """The dense_feedback stage itself on the learning part's click labels; run in a fresh process."""
    from pipeline.dense_feedback import DenseFeedbackConfig, run

    config = section("dense_feedback", DenseFeedbackConfig, REPO / "params.yaml")
    config = dataclasses.replace(
        config, signal="clicks", dataset_dir=dataset_root, labels_file=labels_file, index_root=index_root,
        model_dir=str(Path(work) / "dense_model"), out_dir=str(Path(work) / "root" / "dense_feedback"),
        metrics_file=str(Path(work) / "dense_feedback_training.json"),
        training=dataclasses.replace(config.training, progress=False),
    )
    return run(config)


# Grids scored on the selection queries. Each is wide enough that its best value sits inside it;
# the report flags any choice on an edge.
RM3_GRID = {"fb_docs": [3, 5, 10, 20], "fb_terms": [5, 10, 20, 40], "original_query_weight": [0.3, 0.5, 0.7, 0.9]}
DENSE_PRF_GRID = {"depth": [1, 2, 3, 5, 10, 20], "beta": [0.2, 0.4, 0.6, 0.8]}
SPARSE_PRF_GRID = {"depth": [1, 3, 5, 10], "beta": [0.2, 0.4, 0.6, 0.8], "expansion_terms": [5, 10, 20, 40]}
FUSION_WEIGHTS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]  # of the second mode of a pair
PAIRS = [("sparse", "dense_feedback"), ("bm25", "dense_feedback"), ("sparse", "dense"), ("bm25", "dense"),
         ("bm25", "sparse")]
PRF_PAIRS = PAIRS[:2]  # the pairs whose PRF placements are searched (the trained dense side)
PLACEMENTS = [("none", []), ("after", ["second"]), ("after", ["first", "second"]), ("before", ["second"]),
              ("before", ["first", "second"]), ("both", ["second"]), ("both", ["first", "second"])]
MODES = ("bm25", "bm25_rm3", "dense", "dense_feedback", "sparse")


def judged(searcher: Searcher, mode: str, queries: dict, qrels: dict, prf: bool | None = None) -> dict[str, float]:
    """nDCG@10 and R@100 of `mode` over `queries`, scored on their own judgments only."""
    hits = searcher.batch_search(queries, k=100, mode=mode, prf=prf)
    return scored({qid: [(h.doc_id, h.score) for h in ranked] for qid, ranked in hits.items()}, qrels)


def scored(rankings: dict[str, list[tuple[str, float]]], qrels: dict) -> dict[str, float]:
    run = {qid: dict(ranking) for qid, ranking in rankings.items()}
    own = {qid: qrels[qid] for qid in run}  # the queries searched, not every query the qrels judge
    return {m: round(v, 4) for m, v in evaluate(own, run, METRICS).items()}


def grid(values: dict[str, list]) -> list[dict[str, Any]]:
    keys = list(values)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values.values())]


def on_edge(choice: dict[str, Any], values: dict[str, list]) -> list[str]:
    """The grid dimensions whose chosen value is the first or last of a grid of three or more."""
    return [k for k, vs in values.items() if len(vs) >= 3 and choice[k] in (vs[0], vs[-1])]


def best_of(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The trial of highest selection nDCG@10; ties go to the earlier (simpler) one."""
    return max(trials, key=lambda t: t["nDCG@10"])


def with_prf(settings: SearchConfig, rm3: dict | None = None, dense: dict | None = None,
             sparse: dict | None = None) -> SearchConfig:
    """`settings` with other PRF settings (alpha = 1 - beta for Rocchio)."""
    def rocchio(cls: type, values: dict) -> Any:
        return cls(**{k: v for k, v in values.items() if k != "beta"}, alpha=round(1 - values["beta"], 3),
                   beta=values["beta"])

    out = dataclasses.replace(settings)
    if rm3 is not None:
        out.rm3 = RM3Settings(**rm3)
    if dense is not None:
        out.dense = dataclasses.replace(settings.dense, prf=rocchio(RocchioSettings, dense))
    if sparse is not None:
        out.sparse = dataclasses.replace(settings.sparse, prf=rocchio(SparseRocchioSettings, sparse))
    return out


def select(root: Path, queries: dict, qrels: dict) -> dict[str, Any]:
    """Every PRF and fusion setting, chosen on the selection queries."""
    base = section("search", SearchConfig, REPO / "params.yaml")
    base.pipelines = {}
    chosen: dict[str, Any] = {"first_stage": {}}
    searcher = Searcher(root, modes=MODES, settings=base)
    for mode in MODES:
        chosen["first_stage"][mode] = judged(searcher, mode, queries, qrels)
    del searcher
    for name, values, mode, key in (("rm3", RM3_GRID, "bm25", "rm3"), ("dense_prf", DENSE_PRF_GRID,
                                    "dense_feedback", "dense"), ("sparse_prf", SPARSE_PRF_GRID, "sparse", "sparse")):
        trials = []
        for point in grid(values):
            searcher = Searcher(root, modes=[mode], settings=with_prf(base, **{key: point}))
            trials.append({**point, **judged(searcher, mode, queries, qrels, prf=True)})
        best = best_of(trials)
        chosen[name] = {"best": best, "edges": on_edge(best, values), "trials": trials}
        print(name, best, chosen[name]["edges"], flush=True)
    settings = with_prf(base, rm3=_point(chosen["rm3"], RM3_GRID), dense=_point(chosen["dense_prf"], DENSE_PRF_GRID),
                        sparse=_point(chosen["sparse_prf"], SPARSE_PRF_GRID))
    chosen["search"] = dataclasses.asdict(settings)
    searcher = Searcher(root, modes=MODES, settings=settings)
    chosen["dense_base_prf"] = judged(searcher, "dense", queries, qrels, prf=True)
    retrievers = memoised(searcher)
    chosen["fusion"] = {}
    for first, second in PAIRS:
        placements = PLACEMENTS if (first, second) in PRF_PAIRS else PLACEMENTS[:1]
        for fusion, sides in placements:
            prf = [m for side, m in (("first", first), ("second", second)) if side in sides]
            if fusion in ("before", "both") and "bm25" in prf:
                continue  # RM3 reads only its own top documents
            trials = []
            for method, weight in [("rrf", 0.5), *(("interpolate", w) for w in FUSION_WEIGHTS)]:
                spec = PipelineSpec([first, second], weights=[1 - weight, weight], prf=prf,
                                    fusion=fusion if prf else "after", method=method)
                pipeline = SearchPipeline("trial", spec, retrievers, OWN_FEEDBACK_PRF)
                ranked = pipeline.batch_search(queries, 100)
                trials.append({"method": method, "weight": weight, **scored(
                    {qid: [(d.doc_id, d.score) for d in docs] for qid, docs in ranked.items()}, qrels)})
            best = best_of(trials)
            label = f"{first}+{second} prf={'+'.join(prf) or 'none'} fusion={fusion}"
            edges = ["weight"] if best["method"] == "interpolate" and best["weight"] in (0.1, 0.9) else []
            chosen["fusion"][label] = {"modes": [first, second], "prf": prf, "fusion": fusion, "best": best,
                                       "edges": edges, "trials": trials}
            print(label, best, edges, flush=True)
    return chosen


OWN_FEEDBACK_PRF = {"bm25": "bm25_rm3"}


class MemoisedRetriever:
    """A retriever whose rankings are computed once per (query set, depth): the fusion grid reuses the
    same first-stage and PRF rankings for every weight, through the real SearchPipeline."""

    def __init__(self, retriever: Any) -> None:
        self._retriever, self.num_docs = retriever, retriever.num_docs
        self._cache: dict[Any, dict] = {}

    def _once(self, key: Any, compute: Any) -> dict:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def search(self, query: str, k: int) -> list:
        return self._retriever.search(query, k)

    def batch_search(self, queries: dict, k: int) -> dict:
        return self._once(("first", tuple(queries), k), lambda: self._retriever.batch_search(queries, k))


class MemoisedFeedbackRetriever(MemoisedRetriever):
    def feedback_search(self, queries: dict, feedback: dict, k: int) -> dict:
        key = ("prf", tuple(queries), k, tuple((q, tuple(ids[:20])) for q, ids in sorted(feedback.items())))
        return self._once(key, lambda: self._retriever.feedback_search(queries, feedback, k))


def memoised(searcher: Searcher) -> dict[str, MemoisedRetriever]:
    return {mode: (MemoisedFeedbackRetriever if isinstance(r, FeedbackRetriever) else MemoisedRetriever)(r)
            for mode, r in searcher._retrievers.items()}


def _point(choice: dict[str, Any], values: dict[str, list]) -> dict[str, Any]:
    return {k: choice["best"][k] for k in values}


def pipelines(chosen: dict[str, Any]) -> dict[str, PipelineSpec]:
    """The chosen fusion of every searched (pair, PRF placement), named for the report."""
    return {
        label: PipelineSpec(row["modes"], weights=[1 - row["best"]["weight"], row["best"]["weight"]], prf=row["prf"],
                            fusion=row["fusion"] if row["prf"] else "after", method=row["best"]["method"])
        for label, row in chosen["fusion"].items()
    }


def test_table(root: Path, chosen: dict[str, Any], queries: dict, qrels: dict) -> dict[str, Any]:
    """Every retriever with and without PRF, and every chosen pipeline, on the test queries."""
    settings = from_dict(SearchConfig, chosen["search"], "search")
    settings.pipelines = pipelines(chosen)
    searcher = Searcher(root, modes=[*MODES, *settings.pipelines], settings=settings)
    rows: dict[str, Any] = {}
    for mode in MODES:
        rows[mode] = judged(searcher, mode, queries, qrels)
        if mode != "bm25_rm3":
            rows[f"{mode} +prf"] = judged(searcher, mode, queries, qrels, prf=True)
    pyserini_rm3 = Searcher(root, modes=["bm25"], settings=dataclasses.replace(settings, rm3=RM3Settings()))
    rows["bm25_rm3 (pyserini defaults)"] = judged(pyserini_rm3, "bm25_rm3", queries, qrels)
    for name in settings.pipelines:
        rows[name] = judged(searcher, name, queries, qrels)
    return rows


def latency(root: Path, chosen: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """p50/p99 of one search of each pipeline through one Searcher, in one run."""
    settings = from_dict(SearchConfig, chosen["search"], "search")
    settings.pipelines = pipelines(chosen)
    searcher = Searcher(root, modes=[*MODES, *settings.pipelines], settings=settings)
    calls = [(mode, None) for mode in MODES] + [(m, True) for m in MODES if m != "bm25_rm3"]
    calls += [(name, None) for name in settings.pipelines]
    out = {}
    for mode, prf in calls:
        times = latencies_ms(lambda q, m=mode, p=prf: searcher.search(q, k=10, mode=m, prf=p), texts)
        out[f"{mode}{' +prf' if prf else ''}"] = summary(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--selection-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--settings", type=Path, help="a report whose chosen settings to apply (no selection)")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the report's .json")
    parser.add_argument("--train-only", action="store_true", help="stop once the retrievers are trained")
    args = parser.parse_args()
    out = REPO / "reports" / f"fusion_prf_{args.dataset}.json"
    if args.markdown_only:
        write_text(out.with_suffix(".md"), markdown(json.loads(out.read_text())))
        return
    started = time.monotonic()
    work = REPO / "reports" / "tmp" / f"fusion_{args.dataset}"
    sparse_work = REPO / "reports" / "tmp" / f"sparse_{args.dataset}"
    from bench.sparse_retrieval import with_train_split

    dataset = with_train_split(BeirDataset(DATASETS / args.dataset), sparse_work / "dataset")
    learning, selection = split_train_queries(dataset, args.selection_share, args.seed)
    labels_file = work / "learning_labels.parquet"
    if not labels_file.is_file():
        labels_file.parent.mkdir(parents=True, exist_ok=True)
        labels = pl.read_parquet(sparse_work / "logs_100000" / "labels.parquet")
        learning_labels(labels, selection).write_parquet(labels_file)
    root = work / "root"
    root.mkdir(parents=True, exist_ok=True)
    for name in ("docs.parquet", "bm25", "dense"):
        if not (root / name).exists():
            os.symlink(sparse_work / "indices" / name, root / name)
    if not (root / "sparse" / "retriever.json").is_file():
        figures = in_fresh_process(train_sparse, str(dataset.root), str(sparse_work), str(labels_file),
                                   str(root / "sparse"))
        write_json(work / "sparse_training.json", figures)
    if not (root / "dense_feedback" / "retriever.json").is_file():
        in_fresh_process(train_dense_feedback, str(dataset.root), str(sparse_work / "indices"), str(labels_file),
                         str(work))
    if args.train_only:
        return
    qrels = dataset.qrels("train")
    chosen = json.loads(args.settings.read_text())["chosen"] if args.settings else select(root, selection, qrels)
    test_qrels = dataset.qrels("test")
    test_queries = {q: t for q, t in dataset.queries("test").items() if q in test_qrels}
    report = {
        "dataset": args.dataset,
        "learning_queries": len(learning),
        "selection_queries": len(selection),
        "test_queries": len(test_queries),
        "settings_from": args.settings.name if args.settings else "selection split of this collection",
        "training": {name: json.loads((work / f"{name}_training.json").read_text())
                     for name in ("sparse", "dense_feedback") if (work / f"{name}_training.json").is_file()},
        "test": test_table(root, chosen, test_queries, test_qrels),
        "latency_ms": latency(root, chosen, list(test_queries.values())[:100]),
        "chosen": chosen,
        "wall_seconds": round(time.monotonic() - started),
    }
    write_json(out, report)
    write_text(out.with_suffix(".md"), markdown(report))
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Dense from feedback, PRF and fusion: {report['dataset']}",
        "",
        f"Retrievers trained from the simulated clicks of {report['learning_queries']} train queries; every "
        f"PRF and fusion setting chosen on {report['selection_queries']} other train queries "
        f"({report['settings_from']}); test: {report['test_queries']} queries. "
        "Command: `nice -n 10 .venv/bin/python -m bench.fusion_prf --dataset "
        f"{report['dataset']}`.",
        "",
        *([f"**Caveat:** {report['caveat']}", ""] if report.get("caveat") else []),
        "| retriever or pipeline (test) | nDCG@10 | R@100 | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, row in report["test"].items():
        lat = report["latency_ms"].get(name, {})
        lines.append(f"| {name} | {row['nDCG@10']:.4f} | {row['R@100']:.4f} | {lat.get('p50_ms', float('nan')):.2f} | "
                     f"{lat.get('p99_ms', float('nan')):.2f} |")
    chosen = report["chosen"]
    lines += ["", "## Chosen on the selection queries (nDCG@10 there)", ""]
    for name in ("rm3", "dense_prf", "sparse_prf"):
        row = chosen[name]
        lines.append(f"- {name}: {row['best']} (edges: {row['edges'] or 'none'})")
    for label, row in chosen["fusion"].items():
        lines.append(f"- {label}: {row['best']} (edges: {row['edges'] or 'none'})")
    lines += ["", "## Which PRF settings help and which hurt (selection nDCG@10, best over the other knobs)", ""]
    for name, mode, knob in (("rm3", "bm25", "fb_docs"), ("dense_prf", "dense_feedback", "depth"),
                             ("sparse_prf", "sparse", "depth"), ("sparse_prf", "sparse", "expansion_terms")):
        base = chosen["first_stage"][mode]["nDCG@10"]
        by_value: dict[Any, float] = {}
        for trial in chosen[name]["trials"]:
            by_value[trial[knob]] = max(by_value.get(trial[knob], 0.0), trial["nDCG@10"])
        cells = ", ".join(f"{value}: {score:.4f} ({score - base:+.4f})" for value, score in by_value.items())
        lines.append(f"- {name} by {knob} (without PRF {base:.4f}): {cells}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
