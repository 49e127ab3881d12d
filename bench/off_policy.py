"""Off-policy estimates of clicks@10 against the simulator's online truth (issue 10, "off-policy
evaluation you can trust").

On the embedded default's simulated week, as a pipeline run left it (`data/` of `--pipeline-dir`):
each retriever ranks the logged training queries; its clicks@10 on the logged traffic is estimated
by IPS (`clickloop.metrics.ips_clicks_at_k`), by the direct model alone (DM: the feedback stage's
debiased labels where the pair was shown, its reward model's click level elsewhere) and doubly
robust (DR, `clickloop.off_policy`); each with its coverage. The truth: the simulator, with the
configuration and seed of the logged week and exploration off, replays the same searches on the
retriever's ranking; `true_expected` is the expected clicks@10 of those searches (examination x
click probability, summed), `true_realised` the clicks its users drew. Only searches of queries the
logs hold count (a query whose logged page was empty, e.g. BM25 found nothing, has no logged row,
so no estimator sees it either). Rankings and the direct model's values are cached in `--work-dir`.

Run: `nice -n 15 .venv/bin/python -m bench.off_policy --pipeline-dir DIR` (DIR holds `data/dataset`,
`data/ingested`, `data/feedback`, `data/simulated_truth`, `data/indices` and `data/dense`: copy them
out of a checkout while no `dvc repro` runs there). Writes reports/off_policy.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.scifact_logs import REPO, portable
from clickloop.atomic import write_json, write_text
from clickloop.beir import BeirDataset
from clickloop.metrics import ips_clicks_at_k, observed_clicks_at_k
from clickloop.off_policy import direct_and_doubly_robust
from clickloop.params import from_dict
from clickloop.process import in_fresh_process
from clickloop.simulation.config import ExplorationConfig, SimulatorConfig
from clickloop.simulation.simulator import Simulator
from models.click_direct_model import click_relevance


@dataclass
class OffPolicyBenchConfig:
    pipeline_dir: Path = REPO
    retrievers: tuple[str, ...] = ("bm25", "bm25_rm3", "dense", "dense_feedback", "sparse")
    k: int = 10
    clip: float = 0.01  # evaluate.ips_clip
    report_file: Path = REPO / "reports" / "off_policy.json"
    work_dir: Path = Path("/tmp/clickloop_off_policy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline-dir", type=Path, default=REPO)
    parser.add_argument("--retrievers", nargs="+", default=list(OffPolicyBenchConfig.retrievers))
    parser.add_argument("--work-dir", type=Path, default=OffPolicyBenchConfig.work_dir)
    args = parser.parse_args()
    config = OffPolicyBenchConfig(pipeline_dir=args.pipeline_dir, retrievers=tuple(args.retrievers),
                                  work_dir=args.work_dir)
    report = run(config)
    write_json(config.report_file, report)
    write_text(config.report_file.with_suffix(".md"), markdown(report))
    print(markdown(report))


def run(config: OffPolicyBenchConfig) -> dict[str, Any]:
    started = time.monotonic()
    data = config.pipeline_dir / "data"
    logged = pl.read_parquet(
        data / "ingested" / "results.parquet", columns=["query_id", "user_query", "doc_id", "position", "clicked"]
    )
    propensities = json.loads((data / "feedback" / "propensities.json").read_text())["propensities"]
    truth_config = json.loads((data / "simulated_truth" / "config.json").read_text())
    simulator_config = from_dict(SimulatorConfig, truth_config["config"])
    dataset = BeirDataset(data / "dataset")
    queries = dataset.queries(simulator_config.split)
    qrels = dataset.qrels(simulator_config.split)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    rankings_file = config.work_dir / "rankings.json"
    if rankings_file.is_file():
        rankings = json.loads(rankings_file.read_text())
    else:  # Lucene and the encoders in a child of their own: torch runs here afterwards (the direct model)
        rankings = in_fresh_process(search_all, str(data / "indices"), queries, list(config.retrievers), config.k)
        write_json(rankings_file, rankings)
    timings = {"search_s": time.monotonic() - started}

    by_text = {mode: {queries[qid]: docs for qid, docs in ranked.items()} for mode, ranked in rankings.items()}
    pairs = sorted({(q, d) for target in by_text.values() for q, docs in target.items() for d in docs})
    relevance_file = config.work_dir / "relevance.parquet"
    if relevance_file.is_file():
        cached = pl.read_parquet(relevance_file)
        relevance = dict(zip(zip(cached["q"], cached["d"], strict=True), cached["r"], strict=True))
    else:
        relevance = click_relevance(pairs, data / "feedback", data / "dataset")
        if relevance is None:
            raise SystemExit(f"no feedback labels in {data / 'feedback'}: run the pipeline's feedback stage first")
        pl.DataFrame({"q": [q for q, _ in relevance], "d": [d for _, d in relevance],
                      "r": list(relevance.values())}).write_parquet(relevance_file)
    logged_queries = {qid for qid, text in queries.items() if text in set(logged["user_query"].unique().to_list())}
    observed = observed_clicks_at_k(logged, config.k)
    report: dict[str, Any] = {
        "config": portable(dataclasses.asdict(config)),
        "logged_searches": logged["query_id"].n_unique(),
        "logging_observed_clicks": observed.value,
        "logging_observed_clicks_stderr": observed.stderr,
        "retrievers": {},
    }
    for mode in config.retrievers:
        target = by_text[mode]
        ips = ips_clicks_at_k(logged, target, propensities, k=config.k, clip=config.clip)
        model_based = direct_and_doubly_robust(logged, target, propensities, relevance, k=config.k, clip=config.clip)
        truth = replay(simulator_config, int(truth_config["seed"]), queries, rankings[mode], qrels, logged_queries)
        row = {"true_expected": truth["expected"], "true_expected_stderr": truth["expected_stderr"],
               "true_realised": truth["realised"], "true_searches": truth["searches"]}
        for name, estimate in (("ips", ips), ("dm", model_based["dm"]), ("dr", model_based["dr"])):
            row |= {name: estimate.value, f"{name}_stderr": estimate.stderr, f"{name}_coverage": estimate.coverage,
                    f"{name}_error": estimate.value - truth["expected"]}
        report["retrievers"][mode] = row
        print(mode, json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    report["summary"] = summary(report["retrievers"])
    report["timings"] = timings | {"total_s": time.monotonic() - started}
    return report


def search_all(
    index_root: str, queries: dict[str, str], modes: list[str], k: int
) -> dict[str, dict[str, list[str]]]:
    """Each retriever's top k doc ids per query id (run in a fresh process: Lucene's JVM)."""
    from indexing import SearchConfig, Searcher

    searcher = Searcher(index_root, modes=modes, settings=SearchConfig())
    rankings = {}
    for mode in modes:
        hits = searcher.batch_search(queries, k=k, mode=mode)
        rankings[mode] = {qid: [h.doc_id for h in ranked] for qid, ranked in hits.items()}
    return rankings


def replay(
    config: SimulatorConfig,
    seed: int,
    queries: dict[str, str],
    rankings: dict[str, list[str]],
    qrels: Any,
    logged_queries: set[str],
) -> dict[str, float]:
    """The logged week's searches (same config and seed) served by `rankings`, exploration off; only
    the searches of `logged_queries` (query ids) count."""
    served = dataclasses.replace(config, exploration=ExplorationConfig(scheme="none", share=0.0))
    simulator = Simulator(served, queries, {qid: rankings.get(qid, []) for qid in queries}, qrels, seed)
    expected, realised = [], []
    for day in simulator.days():
        kept = np.isin(day.source_query_ids, list(logged_queries))
        expected.append((day.examination_prob * day.click_prob * day.shown).sum(axis=1)[kept])
        realised.append(day.clicked.sum(axis=1)[kept])
    per_search = np.concatenate(expected)
    return {
        "expected": float(per_search.mean()),
        "expected_stderr": float(per_search.std(ddof=1) / np.sqrt(len(per_search))),
        "realised": float(np.concatenate(realised).mean()),
        "searches": len(per_search),
    }


def summary(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean absolute error of each estimator over the retrievers, and whether it orders them as the truth does."""
    modes = list(rows)
    truth = np.array([rows[m]["true_expected"] for m in modes])
    out: dict[str, Any] = {}
    for name in ("ips", "dm", "dr"):
        values = np.array([rows[m][name] for m in modes])
        concordant = [
            np.sign(values[i] - values[j]) == np.sign(truth[i] - truth[j])
            for i in range(len(modes)) for j in range(i + 1, len(modes))
        ]
        out[name] = {"mean_abs_error": float(np.abs(values - truth).mean()),
                     "pairs_ordered_as_truth": float(np.mean(concordant)) if concordant else float("nan"),
                     "best_retriever": modes[int(values.argmax())]}
    out["truth_best_retriever"] = modes[int(truth.argmax())]
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Off-policy clicks@10 against the simulator's online truth (embedded default)",
        "",
        f"{report['logged_searches']} logged searches; the logging ranker (BM25, 10% shuffled) observed "
        f"{report['logging_observed_clicks']:.4f} clicks@10. Truth: the same searches replayed by the simulator on "
        "each ranking (expected clicks; exploration off). Coverage: IPS, the share of logged clicks the ranking "
        "credits; DM and DR, the share of the ranking's top-10 slots the logs showed for that search.",
        "",
        "| retriever | true | IPS | IPS coverage | DM | DR | DM/DR coverage | IPS error | DM error | DR error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in report["retrievers"].items():
        lines.append(
            f"| {mode} | {r['true_expected']:.4f} ± {r['true_expected_stderr']:.4f} | {r['ips']:.4f} ± "
            f"{r['ips_stderr']:.4f} | {r['ips_coverage']:.3f} | {r['dm']:.4f} | {r['dr']:.4f} ± {r['dr_stderr']:.4f} | "
            f"{r['dr_coverage']:.3f} | {r['ips_error']:+.4f} | {r['dm_error']:+.4f} | {r['dr_error']:+.4f} |"
        )
    lines += ["", "| estimator | mean abs error | retriever pairs ordered as the truth | its best retriever |",
              "|---|---|---|---|"]
    summary_ = report["summary"]
    for name in ("ips", "dm", "dr"):
        s = summary_[name]
        lines.append(f"| {name.upper()} | {s['mean_abs_error']:.4f} | {s['pairs_ordered_as_truth']:.2f} | "
                     f"{s['best_retriever']} |")
    lines += ["", f"The truth's best retriever: {summary_['truth_best_retriever']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
